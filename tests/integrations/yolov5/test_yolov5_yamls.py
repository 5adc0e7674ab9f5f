"""Tests of yolo_nonlocal.integrations.yolov5.yamls: the shipped YAMLs, and the variants that build on each tree."""

from __future__ import annotations

import re

import pytest
import yaml

from yolo_nonlocal.integrations.yolov5 import YAMLS, source_yaml_dir
from yolo_nonlocal.integrations.yolov5.yamls import (
    plan_yamls,
    spp_variant,
    yaml_modules,
)


@pytest.mark.parametrize("rel", [s for fl in YAMLS for s, _ in YAMLS[fl]])
def test_shipped_yamls_are_consistent(rel):
    d = yaml.safe_load((source_yaml_dir() / rel).read_text())
    rows = d["backbone"] + d["head"]
    nl = [i for i, r in enumerate(rows) if r[2] == "NonLocal"]
    assert len(nl) == 2
    for i in nl:
        f, n, _, args = rows[i]
        assert f == -1 and n == 1 and len(args) <= 3  # no channel count: [reduction, mode, sub_sample]
        assert isinstance(args[0], int) and args[1] == "embedded_gaussian" and isinstance(args[2], bool)
    for i, (f, *_rest) in enumerate(rows):  # every input index points backwards
        for x in f if isinstance(f, list) else [f]:
            assert (x < 0 and (i + x >= 0 or i == 0)) or 0 <= x < i, (rel, i, f)
    detect = rows[-1]
    assert detect[2] in ("Detect", "IDetect")
    # the P3 block feeds the small-object head: directly (YOLOv5) or through one conv (YOLOv7)
    p3 = nl[1]
    first = detect[0][0]
    assert first == p3 or rows[first][0] == p3
    assert rows[nl[0] - 1][2] in ("SPPF", "SPPCSPC", "Conv")  # after SPPF / SPPCSPC / tiny's SPP-CSP


@pytest.mark.parametrize("size", "nsmlx")
def test_spp_variant_changes_only_the_sppf_row(size):
    """SPPF(k=5) as SPP(k=(5, 9, 13)): the same graph, the same rows, the same arguments otherwise."""
    text = (source_yaml_dir() / f"yolov5/yolov5{size}-nl.yaml").read_text()
    variant = spp_variant(text)
    a, b = yaml.safe_load(text), yaml.safe_load(variant)
    assert {k: v for k, v in a.items() if k != "backbone"} == {k: v for k, v in b.items() if k != "backbone"}
    rows_a, rows_b = a["backbone"], b["backbone"]
    assert len(rows_a) == len(rows_b)
    diff = [(x, y) for x, y in zip(rows_a, rows_b) if x != y]
    assert diff == [([-1, 1, "SPPF", [1024, 5]], [-1, 1, "SPP", [1024, [5, 9, 13]]])]
    assert "SPPF" not in yaml_modules(variant)
    assert re.search(r"^# yolo-nonlocal: .*SPPF", variant, re.MULTILINE)  # says why it differs from the packaged file


def test_plan_by_the_names_a_tree_defines(tmp_path):
    names = frozenset({"Conv", "C3", "SPP", "SPPF", "Concat", "Detect"})
    assert all(c.data is not None and not c.note for c in plan_yamls(tmp_path, "yolov5", names))
    spp = plan_yamls(tmp_path, "yolov5", names - {"SPPF"})
    assert all(c.note.startswith("SPP variant") and b"SPP, [1024, [5, 9, 13]]" in c.data for c in spp)
    neither = plan_yamls(tmp_path, "yolov5", names - {"SPPF", "SPP"})
    assert all(c.data is None and "uses SPPF" in c.note for c in neither)
    u6 = plan_yamls(tmp_path, "yolov5", names | {"IV6Detect"})
    assert all(c.data is None and "anchor-free" in c.note for c in u6)
    v7 = plan_yamls(tmp_path, "yolov7", frozenset({"Conv", "Concat", "MP", "SP", "SPPCSPC", "RepConv"}))
    assert [c.note for c in v7] == ["not copied: it uses IDetect, which this tree does not define"] * 2
