"""`yolo-nonlocal demo` (what `make demo` runs): in-process, the preset overridden with typed values and refused
arguments; end to end through the console script with the preset shrunk to seconds; and the earlier form
`python -m yolo_nonlocal.tools.demo`, kept for one release."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from yolo_nonlocal.cli.demo import main
from yolo_nonlocal.tools.demo import PRESET


def test_overrides_reach_the_api_typed(monkeypatch, tmp_path, capsys):
    import yolo_nonlocal.tools.demo as api

    seen = {}

    def fake_demo(out, *, force=False, **values):
        seen.update(out=out, force=force, values=values)
        return {"machine": {"cpu": "cpu", "device": "cpu"}, "settings": {"seeds": [0]}, "models": []}

    monkeypatch.setattr(api, "demo", fake_demo)
    monkeypatch.setenv("YOLO_NONLOCAL_DEMO_DIR", str(tmp_path / "d"))
    assert main(["epochs=3", "n_train=8", "seeds=0,1", "lr0=0.02", "device=cpu", "--force"]) == 0
    v = seen["values"]
    assert seen["out"] == str(tmp_path / "d") and seen["force"] is True
    assert v["epochs"] == 3 and v["n_train"] == 8 and v["seeds"] == [0, 1] and v["lr0"] == 0.02
    assert {k: v[k] for k in PRESET if k not in {"epochs", "n_train", "seeds"}} == {
        k: PRESET[k] for k in PRESET if k not in {"epochs", "n_train", "seeds"}
    }
    assert "NOT evidence" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["epochs=ten"], "epochs='ten' must be an integer"),
        (["n_train=8", "n_train=9"], "'n_train' is given twice"),
        (["epoch=3"], "did you mean epochs="),
        (["name=x"], "compare names every run itself"),
        (["n_trian=8"], "did you mean n_train="),
        (["--fast"], "unknown flag '--fast'"),
        (["project=elsewhere"], "the demo writes to ./demo_runs, or to $YOLO_NONLOCAL_DEMO_DIR"),
        (["data=coco.yaml"], "the demo writes its own dataset"),
    ],
)
def test_bad_arguments(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("yolo-nonlocal demo: error: ") and message in err


def test_help_shows_the_preset(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "[epochs=10]" in out and "[n_train=160]" in out and "not evidence" in out


def test_the_earlier_module_form_still_runs():
    r = subprocess.run([sys.executable, "-m", "yolo_nonlocal.tools.demo", "--help"], capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert r.returncode == 0 and r.stdout.startswith("usage: yolo-nonlocal demo"), r.stderr


@pytest.mark.slow
def test_demo_runs_end_to_end_with_a_tiny_preset(console_script, tmp_path):
    env = {**os.environ, "YOLO_NONLOCAL_DEMO_DIR": str(tmp_path / "demo_runs")}
    args = ["n_train=8", "n_val=4", "dataset_imgsz=128", "epochs=1", "imgsz=64", "batch=4", "latency_runs=2"]
    r = subprocess.run([console_script, "demo", *args], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "NOT evidence" in r.stdout and "yolov8n-nl" in r.stdout and "APs" in r.stdout
    out = tmp_path / "demo_runs" / "compare"
    assert (out / "compare.png").is_file() and (out / "compare.md").is_file()
    result = json.loads((out / "compare.json").read_text())
    assert [e["model"] for e in result["models"]] == ["yolov8n", "yolov8n-nl"]
    assert result["settings"]["train_args"]["epochs"] == 1 and result["settings"]["train_args"]["imgsz"] == 64
