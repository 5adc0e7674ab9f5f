"""`yolo-nonlocal compare` end to end: the real command in a subprocess trains a Non-local YOLOv8n and its
baseline through Ultralytics on a tiny synthetic set, writes every report, and reuses finished runs."""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from yolo_nonlocal.tools.compare import METRICS, _fingerprint, cli
from yolo_nonlocal.data.synthetic import SyntheticConfig, make_dataset

YOLO_NONLOCAL = str(Path(sys.executable).parent / "yolo-nonlocal")


@pytest.fixture(scope="module")
def context_data(tmp_path_factory) -> Path:
    cfg = SyntheticConfig(kind="context", n_train=8, n_val=4, imgsz=128, seed=0, min_size=8, max_size=16)
    return make_dataset(tmp_path_factory.mktemp("ctx") / "ds", cfg, progress=False)


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([YOLO_NONLOCAL, "compare", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_compare_end_to_end_and_reuse(context_data, tmp_path):
    from ultralytics import YOLO

    from yolo_nonlocal import NonLocal
    from yolo_nonlocal.metrics.coco import evaluate

    project = tmp_path / "cmp"
    args = [
        "model=yolov8n-nl.yaml",
        "baseline=yolov8n.yaml",
        f"data={context_data}",
        "epochs=1",
        "imgsz=64",
        "batch=4",
        "workers=0",
        "seeds=2",
        "latency_runs=3",
        f"project={project}",
    ]
    r = _run(args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("[compare] (") >= 8, "progress lines for every run"
    assert "asks for train args" in r.stderr and "mosaic" in r.stderr

    for name in ("compare.md", "compare.csv", "compare.json", "compare.png"):
        assert (project / name).is_file() and (project / name).stat().st_size > 0, name
    import cv2

    png = cv2.imread(str(project / "compare.png"))
    assert png is not None and png.shape[0] > 100 and png.shape[1] > 100

    result = json.loads((project / "compare.json").read_text())
    base, model = result["models"]
    assert (base["model"], base["role"], model["model"], model["role"]) == ("yolov8n", "baseline", "yolov8n-nl", "model")
    assert result["settings"]["seeds"] == [0, 1]
    assert result["settings"]["train_args"]["mosaic"] == 0.0, "the data.yaml's train_args reach both models"
    assert result["machine"]["torch"] and result["machine"]["device"] == "cpu"
    for entry in (base, model):
        for k in (*METRICS, "params", "gflops", "latency_ms"):
            assert k in entry
        assert len(entry["runs"]) == 2
        for k in METRICS:  # each run's metric is coco_eval on that run's predictions; entry = mean/std of them
            per_run = []
            for run in entry["runs"]:
                preds = Path(run["run_dir"]) / "coco_val" / "predictions.json"
                truth = evaluate(str(context_data), str(preds), split="val")[k]
                if truth is None or truth != truth or truth < 0:  # COCO's -1: no objects in that area range
                    assert run[k] is None
                else:
                    assert run[k] == pytest.approx(truth, abs=1e-9)
                    per_run.append(truth)
            if per_run:
                assert entry[k] == pytest.approx(statistics.fmean(per_run))
                assert entry[f"{k}_std"] == pytest.approx(statistics.stdev(per_run))
        trained = YOLO(entry["runs"][0]["weights"]).model
        assert entry["params"] == sum(p.numel() for p in trained.parameters())
        # the attention products at imgsz=64: P5 (stride 32) is 2x2, P3 (stride 8) is 8x8
        blocks = [m for m in trained.modules() if isinstance(m, NonLocal)]
        strides = [32, 8] if blocks else []
        expected = sum(2 * b.attention_macs((64 // s, 64 // s)) for b, s in zip(blocks, strides)) / 1e9
        assert entry["attention_gflops"] == pytest.approx(expected, rel=1e-9)
        assert entry["gflops"] == pytest.approx(entry["gflops_conv"] + entry["attention_gflops"])
        # the total is the Ultralytics summary's (attention counted once, not on top of thop's own count)
        from ultralytics.utils.torch_utils import get_flops

        assert entry["gflops"] == pytest.approx(get_flops(trained.float(), 64), rel=1e-6)
        assert entry["latency_ms"] > 0
    assert base["attention_gflops"] == 0 and base["nonlocal_blocks"] == 0
    assert model["attention_gflops"] > 0 and model["nonlocal_blocks"] == 2
    assert model["params"] > base["params"]
    assert model["gflops"] > base["gflops"]

    rows = list(csv.DictReader(open(project / "compare.csv")))
    assert [row["model"] for row in rows] == ["yolov8n", "yolov8n-nl"]
    assert float(rows[1]["params"]) == model["params"] and rows[0]["n_seeds"] == "2"
    md = (project / "compare.md").read_text()
    assert "| yolov8n-nl |" in md and "| yolov8n |" in md and "APs" in md and "Machine:" in md

    # Rerun: every finished run is reused, nothing retrained, same numbers.
    weights = sorted(project.glob("runs/*/weights/best.pt"))
    assert len(weights) == 4
    mtimes = [w.stat().st_mtime_ns for w in weights]
    # a record written by an older version with a wrong cost: the rerun counts the cost again
    stale = Path(model["runs"][0]["run_dir"]) / "run.json"
    stale.write_text(json.dumps({**json.loads(stale.read_text()), "gflops": 999.0, "attention_gflops": 99.0}))
    r2 = _run(args)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert r2.stderr.count("reusing the finished run") == 4 and "training yolov8n" not in r2.stderr
    assert [w.stat().st_mtime_ns for w in weights] == mtimes
    again = json.loads((project / "compare.json").read_text())
    assert [e["AP"] for e in again["models"]] == [e["AP"] for e in result["models"]]
    assert [e["gflops"] for e in again["models"]] == [e["gflops"] for e in result["models"]]

    # A run without its completion record is trained again; the others are still reused.
    victim = Path(base["runs"][0]["run_dir"])
    (victim / "run.json").unlink()
    r3 = _run(args)
    assert r3.returncode == 0, r3.stderr[-3000:]
    assert r3.stderr.count("reusing the finished run") == 3
    assert f"training yolov8n (baseline: yolov8n.yaml) seed 0 -> {victim}" in r3.stderr


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
    "argv, message",
    [
        (["model=yolov8n-nl.yaml", "baseline=yolov8n.yaml"], "missing data="),
        (["model=yolov8n-nl.yaml", "baseline=yolov8n.yaml", "data=/nonexistent/data.yaml"], "data=/nonexistent/data.yaml does not exist"),
        (["model=yolov8n-nl.yaml", "baseline=yolov8n.yaml", "data=DATA", "epoch=3"], "did you mean epochs"),
        (["model=yolov8n-nl.yaml", "baseline=yolov8n.yaml", "data=DATA", "name=x"], "compare names every run itself"),
        (["model=yolov8n-nl.yaml", "baseline=yolov8n.yaml", "data=DATA", "seeds=0"], "seeds=0 must be >= 1"),
        (["model=yolov8n-nl.yaml", "baseline=yolov8n.yaml", "data=DATA", "seeds=[1,1]"], "repeats a seed"),
        (["model=missing.pt", "baseline=yolov8n.yaml", "data=DATA"], "model=missing.pt does not exist"),
        (["model=yolov8n-nl.yaml", "baseline=yolov8n-typo.yaml", "data=DATA"], "baseline=yolov8n-typo.yaml is not a model YAML"),
        (["model=yolov8n-nl.yaml", "baseline=yolov8n.yaml", "data=DATA", "epochs=ten"], "epochs"),
        (["model=yolov8n-nl.yaml", "baseline=yolov8n.yaml", "data=DATA", "--fast"], "unknown flag"),
    ],
)
def test_bad_arguments_are_refused_before_training(argv, message, context_data, capsys, tmp_path):
    argv = [a.replace("DATA", str(context_data)) for a in argv] + [f"project={tmp_path / 'p'}"]
    assert cli(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "p").exists(), "nothing is written for a refused command"


def test_help(capsys):
    assert cli(["--help"]) == 0
    out = capsys.readouterr().out
    assert "model=yolov8n-nl.yaml baseline=yolov8n.yaml" in out and "--force" in out


@pytest.mark.slow
def test_demo_runs_end_to_end_with_a_tiny_preset(tmp_path):
    """`make demo` runs `python -m yolo_nonlocal.tools.demo`; here with the preset shrunk to seconds."""
    import os

    env = {**os.environ, "YOLO_NONLOCAL_DEMO_DIR": str(tmp_path / "demo_runs")}
    args = ["n_train=8", "n_val=4", "dataset_imgsz=128", "epochs=1", "imgsz=64", "batch=4", "latency_runs=2"]
    r = subprocess.run(
        [sys.executable, "-m", "yolo_nonlocal.tools.demo", *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "NOT evidence" in r.stdout and "yolov8n-nl" in r.stdout and "APs" in r.stdout
    out = tmp_path / "demo_runs" / "compare"
    assert (out / "compare.png").is_file() and (out / "compare.md").is_file()
    result = json.loads((out / "compare.json").read_text())
    assert [e["model"] for e in result["models"]] == ["yolov8n", "yolov8n-nl"]
    assert result["settings"]["train_args"]["epochs"] == 1 and result["settings"]["train_args"]["imgsz"] == 64
