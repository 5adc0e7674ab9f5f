"""Tests of yolo_nonlocal.integrations.yolov5.source_edit and .tree: the text edit of models/yolo.py and its inverse.

The patched parse_model of every synthetic layout runs in a subprocess, with and without the package
importable, so the inserted branch is exercised for real.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from yolov5_trees import LAYOUTS, run_cli, snapshot, tree_dirs, tree_root, write_tree

from yolo_nonlocal.integrations.yolov5 import (
    YOLO_PY,
    PatchError,
    detect_flavour,
    patch,
    unpatch,
)
from yolo_nonlocal.integrations.yolov5.source_edit import (
    marked_lines,
    patch_source,
    unpatch_source,
)


def test_detect_flavour(tmp_path, layout):
    assert detect_flavour(tree_root(tmp_path, layout)) == LAYOUTS[layout]["flavour"]


def test_detect_flavour_rejects_non_trees(tmp_path):
    with pytest.raises(PatchError, match=r"expected .*models/yolo\.py"):
        detect_flavour(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "yolo.py").write_text("x = 1\n")
    with pytest.raises(PatchError, match="defines no parse_model"):
        detect_flavour(tmp_path)
    assert detect_flavour(tmp_path, require_parse_model=False) == "yolov5"  # for undoing a patch only


def test_patch_source_is_idempotent_and_inverted_by_unpatch_source(tmp_path, layout):
    root = tree_root(tmp_path, layout)
    text = (root / YOLO_PY).read_text()
    patched = patch_source(text)
    assert patch_source(patched) == patched
    assert unpatch_source(patched) == text
    assert [n for n, _ in marked_lines(patched)] and not marked_lines(text)
    assert len(marked_lines(patched)) == 10


def test_crlf_tree_keeps_its_line_endings(tmp_path):
    root = write_tree(tmp_path / "clone", "yolov5-star", crlf=True)
    original = (root / YOLO_PY).read_bytes()
    patch(root)
    patched = (root / YOLO_PY).read_bytes()
    assert patched.count(b"\n") == patched.count(b"\r\n")  # every line, inserted ones included, ends in CRLF
    assert patched.count(b"# yolo-nonlocal") == 10
    unpatch(root)
    assert (root / YOLO_PY).read_bytes() == original


_BUILD = r'''
import importlib, json, sys
block = sys.argv[1] == "block"
if block:  # this Python cannot import yolo_nonlocal, as in an environment without the package
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name == "yolo_nonlocal" or name.startswith("yolo_nonlocal."):
                raise ModuleNotFoundError(f"No module named {name!r}")
    sys.meta_path.insert(0, _Block())
stock = {"width_multiple": 0.5, "backbone": [[-1, 1, "Conv", [32, 3, 2]]], "head": [[-1, 1, "Conv", [64, 1, 1]]]}
nl = {"width_multiple": 0.5, "backbone": [[-1, 1, "Conv", [32, 3, 2]], [-1, 1, "NonLocal", []]],
      "head": [[-1, 1, "Conv", [64, 1, 1]], [-1, 1, "NonLocal", [4, "dot_product", True]], [[-1, 1], 1, "Concat", [1]]]}
results = {}
for layout, path, module in json.loads(sys.argv[2]):
    for name in [n for n in sys.modules if n.split(".")[0] in ("models", "utils", "yolov5")]:
        del sys.modules[name]  # each layout is its own tree with its own `models` package
    sys.path.insert(0, path)
    mod = importlib.import_module(module)
    out = results[layout] = {"stock_ch": mod.Model(stock).ch}
    try:
        m = mod.Model(nl)
        blocks = [l for l in m.layers if type(l).__name__ == "NonLocal"]
        out.update(ch=m.ch, blocks=[[b.c1, b.inter_channels, b.mode, b.sub_sample] for b in blocks],
                   module=type(blocks[0]).__module__)
        keyed = mod.Model(dict(nl, nonlocal_init_gamma=0.3, nonlocal_init_attention="uniform"))
        out["init"] = [[sorted({round(v, 6) for v in b.w_z[1].weight.tolist()}), bool(b.phi.weight.abs().sum() == 0)]
                       for b in (m.layers + keyed.layers) if type(b).__name__ == "NonLocal"]
        try:
            mod.Model(dict(nl, nonlocal_lr_mult=5))
        except ValueError as e:
            out["lr_mult"] = str(e)
    except ImportError as e:
        out["error"] = str(e)
    sys.path.remove(path)
print(json.dumps(results))
'''


@pytest.mark.parametrize("block", ["package", "block"])
def test_patched_parse_model_passes_input_channels(tmp_path, block):
    """The inserted branch builds NonLocal rows without channel counts; without the package only they fail."""
    trees = []
    for layout, spec in LAYOUTS.items():
        root = tree_root(tmp_path / layout, layout)
        patch(root)
        module = f"{spec['package']}.models.yolo" if spec["package"] else "models.yolo"
        trees.append([layout, str(root.parent if spec["package"] else root), module])
    out = subprocess.run([sys.executable, "-c", _BUILD, block, json.dumps(trees)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout.splitlines()[-1])
    assert sorted(results) == sorted(LAYOUTS)
    for layout, res in results.items():
        assert res["stock_ch"] == [16, 32], layout  # stock rows build either way
        if block == "block":
            assert "install the yolo-nonlocal package here" in res.get("error", ""), layout
        else:
            # 16 channels after the stem (32 * 0.5), 32 after the head conv; NonLocal keeps its input channels
            assert res["ch"] == [16, 16, 32, 32, 48], layout
            assert res["blocks"] == [[16, 8, "embedded_gaussian", False], [32, 8, "dot_product", True]], layout
            assert res["module"] == "yolo_nonlocal.nonlocal_block", layout  # what checkpoints pickle
            # the YAML's nonlocal_init_* keys: without them the identity; with them gamma 0.3, and uniform maps
            # for the embedded_gaussian row only (the dot_product row keeps its random phi)
            assert res["init"] == [[[0.0], False], [[0.0], False], [[0.3], True], [[0.3], False]], layout
            assert "works in Ultralytics training only" in res["lr_mult"], layout


def test_missing_or_repeated_anchor_fails_atomically_with_instructions(tmp_path):
    root = write_tree(tmp_path / "a", "yolov5-star")
    yolo = root / YOLO_PY
    yolo.write_text(yolo.read_text().replace("elif m is nn.BatchNorm2d:", "elif m is nn.LayerNorm:"))
    before, dirs = snapshot(root), tree_dirs(root)
    with pytest.raises(PatchError) as e:
        patch(root)
    msg = str(e.value)
    assert "does not contain the text `elif m is nn.BatchNorm2d:`" in msg and "To patch by hand" in msg
    assert "elif m is NonLocal:" in msg  # the exact lines to add
    assert snapshot(root) == before and tree_dirs(root) == dirs
    out = run_cli("patch", str(root))  # the console script: one error prefix, exit status 2
    assert out.returncode == 2 and "To patch by hand" in out.stderr and snapshot(root) == before
    assert out.stderr.startswith("yolo-nonlocal yolov5 patch: error: ")

    root = write_tree(tmp_path / "b", "yolov5-star")
    yolo = root / YOLO_PY
    yolo.write_text(yolo.read_text() + "\n\ndef parse_model(d):  # a second one\n    pass\n")
    before = snapshot(root)
    with pytest.raises(PatchError, match=r"contains 2 times .*def parse_model\("):
        patch(root)
    assert snapshot(root) == before


def test_unexpected_batchnorm_body_and_missing_common_import_fail(tmp_path):
    root = write_tree(tmp_path / "a", "yolov5-star")
    yolo = root / YOLO_PY
    yolo.write_text(yolo.read_text().replace("            args = [ch[f]]\n", "            args = ch[f:f + 1]\n"))
    before = snapshot(root)
    with pytest.raises(PatchError, match=r"expected the BatchNorm2d branch body `args = \[<input channels>\]`"):
        patch(root)
    assert snapshot(root) == before
    root = write_tree(tmp_path / "b", "yolov5-star")
    yolo = root / YOLO_PY
    yolo.write_text(yolo.read_text().replace("from models.common import *", "from models.layers import *"))
    before = snapshot(root)
    with pytest.raises(PatchError, match=r"no top-level `from models.common import \.\.\.`"):
        patch(root)
    assert snapshot(root) == before


def test_parse_model_without_a_model_dict_parameter_fails_atomically(tmp_path):
    """The branch passes parse_model's first parameter (the model-YAML dict) on; a parse_model without one is
    refused, naming what was expected, and nothing is written."""
    root = write_tree(tmp_path / "a", "yolov5-star")
    yolo = root / YOLO_PY
    text = yolo.read_text()
    assert "def parse_model(d, ch):" in text
    yolo.write_text(text.replace("def parse_model(d, ch):", "def parse_model(*specs):"))
    before = snapshot(root)
    with pytest.raises(PatchError, match=r"expected a top-level `def parse_model\(d, ch\)`"):
        patch(root)
    assert snapshot(root) == before
    # another name for the dict is passed on as it is
    yolo.write_text(text.replace("def parse_model(d, ch):", "def parse_model(cfg, ch):\n    d = cfg"))
    assert "_yolo_nonlocal_row_args(c2, args, cfg)" in patch_source(yolo.read_text())
