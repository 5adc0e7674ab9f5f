"""yolo_nonlocal.tools.compare's Python API: run fingerprints, the chart's title, settings checked before anything
runs, the printed table. The real command end to end (training through Ultralytics, every report, reuse and
resume) is tests/cli/test_compare_cmd.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from yolo_nonlocal.data.synthetic import SyntheticConfig, make_dataset
from yolo_nonlocal.tools.compare import _fingerprint, check_train_arg, result_table, settings_from_args


@pytest.fixture(scope="module")
def context_data(tmp_path_factory) -> Path:
    cfg = SyntheticConfig(kind="context", n_train=8, n_val=4, imgsz=128, seed=0, min_size=8, max_size=16)
    return make_dataset(tmp_path_factory.mktemp("ctx") / "ds", cfg, progress=False)


def test_chart_title_names_the_dataset(context_data, tmp_path):
    from yolo_nonlocal.tools.compare import dataset_label

    assert dataset_label(str(context_data)) == "synthetic context task"
    (tmp_path / "VisDrone.yaml").write_text("path: x\ntrain: images/train\nval: images/val\nnames: {0: car}\n")
    assert dataset_label(str(tmp_path / "VisDrone.yaml")) == "VisDrone"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "data.yaml").write_text("path: x\ntrain: a\nval: b\nnames: {0: car}\n")
    assert dataset_label(str(tmp_path / "mine" / "data.yaml")) == "mine"
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "data.yaml").write_text("names: [unclosed\n")
    assert dataset_label(str(tmp_path / "broken" / "data.yaml")) == "broken"


def test_fingerprint_changes_with_every_setting(context_data):
    base = _fingerprint("yolov8n.yaml", str(context_data), {"epochs": 1, "imgsz": 64}, 0)[0]
    assert base == _fingerprint("yolov8n.yaml", str(context_data), {"imgsz": 64, "epochs": 1}, 0)[0]
    for other in (
        _fingerprint("yolov8s.yaml", str(context_data), {"epochs": 1, "imgsz": 64}, 0),
        _fingerprint("yolov8n.yaml", str(context_data), {"epochs": 2, "imgsz": 64}, 0),
        _fingerprint("yolov8n.yaml", str(context_data), {"epochs": 1, "imgsz": 64}, 1),
    ):
        assert other[0] != base


@pytest.mark.parametrize(
    "kv, message",
    [
        ({"model": "yolov8n-nl.yaml", "baseline": "yolov8n.yaml"}, "missing data="),
        ({"data": "/nonexistent/data.yaml"}, "data=/nonexistent/data.yaml does not exist"),
        ({"epoch": 3}, "did you mean epochs=?"),
        ({"name": "x"}, "compare names every run itself"),
        ({"seeds": 0}, "seeds=0 must be >= 1"),
        ({"seeds": [1, 1]}, "repeats a seed"),
        ({"seed": -1}, "seed=-1 must be a non-negative integer"),
        ({"latency_runs": 0}, "latency_runs=0 must be a positive integer"),
        ({"jobs": 0}, "jobs=0 must be a positive integer"),
        ({"model": "missing.pt"}, "model=missing.pt does not exist"),
        ({"baseline": "yolov8n-typo.yaml"}, "baseline=yolov8n-typo.yaml is not a model YAML"),
        ({"epochs": "ten"}, "epochs"),
        ({"pretrained": "/no/base.pt"}, "pretrained=/no/base.pt does not exist"),
    ],
)
def test_settings_are_checked_before_anything_runs(kv, message, context_data, tmp_path):
    base = {"model": "yolov8n-nl.yaml", "baseline": "yolov8n.yaml", "data": str(context_data)}
    if "model" in kv and "baseline" in kv:
        base = {}
    with pytest.raises((ValueError, FileNotFoundError), match=None) as e:
        settings_from_args({**base, **kv, "project": str(tmp_path / "p")})
    assert message in str(e.value)
    assert not (tmp_path / "p").exists(), "nothing is written for refused settings"


def test_settings_merge_the_datasets_train_args_under_the_users(context_data, tmp_path):
    s = settings_from_args({"model": "yolov8n-nl.yaml", "baseline": "yolov8n.yaml", "data": str(context_data),
                            "seeds": 2, "seed": 5, "mosaic": 0.5, "epochs": 3, "project": str(tmp_path)})  # fmt: skip
    assert s.seeds == [5, 6] and s.labels() == ("yolov8n-nl", "yolov8n")
    assert s.train_args["mosaic"] == 0.5, "the user's value wins over the data.yaml's"
    assert s.train_args["translate"] == 0.0 and s.train_args["plots"] is False and s.train_args["epochs"] == 3


def test_check_train_arg_suggests_from_both_sets():
    check_train_arg("lr0")
    check_train_arg("seeds")
    with pytest.raises(ValueError, match=r"did you mean seed= or seeds="):
        check_train_arg("seedz")
    with pytest.raises(ValueError, match="compare resumes an interrupted run by itself"):
        check_train_arg("resume")


def test_result_table_is_one_row_per_model():
    entry = {"AP": 0.1234, "AP_std": 0.01, "APs": None, "APs_std": None, "AP50": 0.5, "AP50_std": 0.02,
             "params": 3_200_000, "gflops": 8.7, "latency_ms": 12.34}  # fmt: skip
    result = {"settings": {"seeds": [0, 1]}, "models": [{**entry, "model": "yolov8n"}, {**entry, "model": "yolov8n-nl"}]}
    lines = result_table(result).splitlines()
    assert lines[0].split() == ["model", "AP", "APs", "AP50", "params", "GFLOPs", "ms"]
    assert lines[2].split() == ["yolov8n-nl", "12.3", "±", "1.0", "n/a", "50.0", "±", "2.0", "3.20M", "8.70", "12.3"]


def test_jobs_wait_for_the_label_caches_of_this_invocation(context_data, tmp_path):
    """jobs=2 starts the second run once the first has written Ultralytics' label caches: the caches of the
    train and val splits beside their label folders, written after the start and complete (2 s quiet); a
    cache from before the start may be stale and does not count."""
    import os
    import time

    from yolo_nonlocal.tools.compare import _caches_written, _label_caches

    caches = _label_caches(str(context_data))
    root = context_data.parent
    assert caches == [root / "labels" / "train.cache", root / "labels" / "val.cache"]
    start = time.time() - 10  # the invocation started 10 s ago
    assert not _caches_written(caches, start)
    for c in caches:
        c.write_bytes(b"x")
        os.utime(c, (start + 1, start + 1))
    assert not _caches_written(caches, start + 2), "written before this start: maybe stale"
    assert _caches_written(caches, start), "both written after the start and not touched since"
    os.utime(caches[1], None)  # just written: maybe still being written
    assert not _caches_written(caches, start)
    for c in caches:
        c.unlink()
    (tmp_path / "odd.yaml").write_text(f"path: {tmp_path}\ntrain: nowhere\nval: nowhere\nnames: {{0: a}}\n")
    assert _label_caches(str(tmp_path / "odd.yaml")) is None, "no images listed: fall back to a finished epoch"
