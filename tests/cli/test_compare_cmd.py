"""`yolo-nonlocal compare`: its arguments in-process (typed, refused before anything runs, the legacy --force),
and the real command end to end in a subprocess: it trains a Non-local YOLOv8n and its baseline through
Ultralytics on a tiny synthetic set, writes every report, and reuses finished runs."""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
from pathlib import Path

import pytest

from yolo_nonlocal.cli.compare import main, parse_train_args, seeds_value
from yolo_nonlocal.data.synthetic import SyntheticConfig, make_dataset
from yolo_nonlocal.tools.compare import METRICS


@pytest.fixture(scope="module")
def context_data(tmp_path_factory) -> Path:
    cfg = SyntheticConfig(kind="context", n_train=8, n_val=4, imgsz=128, seed=0, min_size=8, max_size=16)
    return make_dataset(tmp_path_factory.mktemp("ctx") / "ds", cfg, progress=False)


def _run(console_script: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([console_script, "compare", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["model=yolov8n-nl.yaml", "baseline=yolov8n.yaml"], "missing data=..."),
        (["model=yolov8n-nl.yaml", "baseline=yolov8n.yaml", "data=/nonexistent/data.yaml"], "data=/nonexistent/data.yaml does not exist"),
        (["model=yolov8n-nl.yaml", "baseline=yolov8n.yaml", "data=DATA", "epoch=3"], "did you mean epochs=?"),
        (["model=yolov8n-nl.yaml", "baseline=yolov8n.yaml", "data=DATA", "latency_run=3"], "did you mean latency_runs="),
        (["model=yolov8n-nl.yaml", "baseline=yolov8n.yaml", "data=DATA", "name=x"], "compare names every run itself"),
        (["model=yolov8n-nl.yaml", "baseline=yolov8n.yaml", "data=DATA", "seeds=0"], "seeds=0 must be >= 1"),
        (["model=yolov8n-nl.yaml", "baseline=yolov8n.yaml", "data=DATA", "seeds=[1,1]"], "repeats a seed"),
        (["model=yolov8n-nl.yaml", "baseline=yolov8n.yaml", "data=DATA", "seeds=a,b"], "seeds='a,b': must be a count"),
        (["model=yolov8n-nl.yaml", "baseline=yolov8n.yaml", "data=DATA", "seed=x"], "seed='x' must be an integer"),
        (["model=missing.pt", "baseline=yolov8n.yaml", "data=DATA"], "model=missing.pt does not exist"),
        (["model=yolov8n-nl.yaml", "baseline=yolov8n-typo.yaml", "data=DATA"], "baseline=yolov8n-typo.yaml is not a model YAML"),
        (["model=yolov8n-nl.yaml", "baseline=yolov8n.yaml", "data=DATA", "epochs=ten"], "epochs"),
        (["model=yolov8n-nl.yaml", "baseline=yolov8n.yaml", "data=DATA", "epochs=1", "epochs=2"], "'epochs' is given twice"),
        (["model=yolov8n-nl.yaml", "baseline=yolov8n.yaml", "data=DATA", "--fast"], "unknown flag '--fast'"),
    ],
)
def test_bad_arguments_are_refused_before_training(argv, message, context_data, capsys, tmp_path):
    argv = [a.replace("DATA", str(context_data)) for a in argv] + [f"project={tmp_path / 'p'}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("yolo-nonlocal compare: error: ") and message in err
    assert not (tmp_path / "p").exists(), "nothing is written for a refused command"


def test_help(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "model=MODEL baseline=BASELINE data=DATA" in out and "--force is force=True" in out
    assert "Ultralytics train argument" in out


def test_arguments_reach_the_api_typed(context_data, tmp_path, monkeypatch, capsys):
    """What the command hands compare(): its own keys typed by its spec, Ultralytics' keys as Ultralytics types them."""
    import yolo_nonlocal.tools.compare as api

    seen = {}

    def fake_compare(settings, *, force=False):
        seen.update(settings=settings, force=force)
        entry = {k: 0.1 for k in METRICS} | {f"{k}_std": 0.0 for k in METRICS}
        entry |= {"params": 1e6, "gflops": 1.0, "latency_ms": 2.0}
        return {"settings": {"seeds": settings.seeds}, "models": [{**entry, "model": "a"}, {**entry, "model": "b"}]}

    monkeypatch.setattr(api, "compare", fake_compare)
    argv = ["model=yolov8n-nl.yaml", "baseline=yolov8n.yaml", f"data={context_data}", "seeds=0,3", "epochs=3",
            "lr0=0.02", "amp=False", "device=cpu", "--force", f"project={tmp_path / 'p'}"]  # fmt: skip
    assert main(argv) == 0
    s = seen["settings"]
    assert seen["force"] is True and s.seeds == [0, 3] and s.project == tmp_path / "p"
    assert s.train_args["epochs"] == 3 and s.train_args["lr0"] == 0.02 and s.train_args["amp"] is False
    assert s.train_args["device"] == "cpu" and s.train_args["mosaic"] == 0.0, "the data.yaml's train_args"
    assert "a " in capsys.readouterr().out


def test_seeds_and_train_args_values():
    assert seeds_value("3") == 3 and seeds_value("0,3,7") == [0, 3, 7] and seeds_value("[5]") == [5]
    with pytest.raises(ValueError):
        seeds_value("three")
    from ultralytics.cfg import smart_value

    assert parse_train_args(["epochs=3", "lr0=1e-3", "cos_lr=True", "device=0,1"]) == {
        "epochs": 3, "lr0": 1e-3, "cos_lr": True, "device": smart_value("0,1"),  # as `yolo train device=0,1` has it
    }
    from yolo_nonlocal.cli.args import ArgumentError

    with pytest.raises(ArgumentError, match="did you mean epochs="):
        parse_train_args(["epoch=3"])


def test_console_script_smoke(console_script, context_data, tmp_path):
    """The real command refuses a misspelt Ultralytics argument before anything runs (the fast smoke test; the
    end-to-end run below is marked slow)."""
    r = _run(console_script, ["model=yolov8n-nl.yaml", "baseline=yolov8n.yaml", f"data={context_data}", "epoch=3",
                              f"project={tmp_path / 'p'}"])  # fmt: skip
    assert r.returncode == 2, r.stderr  # (stdout may hold Ultralytics' first-run settings notice)
    assert r.stderr.endswith("did you mean epochs=?\n") and not (tmp_path / "p").exists()


@pytest.mark.slow
def test_compare_end_to_end_and_reuse(console_script, context_data, tmp_path):
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
    r = _run(console_script, args)
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
    r2 = _run(console_script, args)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert r2.stderr.count("reusing the finished run") == 4 and "training yolov8n" not in r2.stderr
    assert [w.stat().st_mtime_ns for w in weights] == mtimes
    again = json.loads((project / "compare.json").read_text())
    assert [e["AP"] for e in again["models"]] == [e["AP"] for e in result["models"]]
    assert [e["gflops"] for e in again["models"]] == [e["gflops"] for e in result["models"]]

    # A run without its completion record is trained again; the others are still reused.
    victim = Path(base["runs"][0]["run_dir"])
    (victim / "run.json").unlink()
    r3 = _run(console_script, args)
    assert r3.returncode == 0, r3.stderr[-3000:]
    assert r3.stderr.count("reusing the finished run") == 3
    assert f"training yolov8n (baseline: yolov8n.yaml) seed 0 -> {victim}" in r3.stderr




@pytest.mark.slow
def test_jobs_train_in_worker_processes_with_the_same_results(console_script, context_data, tmp_path):
    """jobs=2 trains both models at once, each in its own process with its output in the run's train.log, and
    gives the same checkpoints and metrics as one run after the other (every run is seeded), in the same
    run folders: a later jobs=1 invocation reuses them."""
    import torch

    common = ["model=yolov8n-nl.yaml", "baseline=yolov8n.yaml", f"data={context_data}", "epochs=1", "imgsz=64",
              "batch=4", "workers=0", "latency_runs=2"]  # fmt: skip
    r = _run(console_script, [*common, "jobs=2", f"project={tmp_path / 'par'}"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("handed to a worker process") == 2 and r.stderr.count(": AP ") == 2
    s = _run(console_script, [*common, f"project={tmp_path / 'seq'}"])
    assert s.returncode == 0, s.stderr[-3000:]
    assert "worker process" not in s.stderr

    par = json.loads((tmp_path / "par" / "compare.json").read_text())["models"]
    seq = json.loads((tmp_path / "seq" / "compare.json").read_text())["models"]
    for a, b in zip(par, seq):
        run_a, run_b = a["runs"][0], b["runs"][0]
        assert Path(run_a["run_dir"]).name == Path(run_b["run_dir"]).name, "jobs= is not part of the fingerprint"
        log = (Path(run_a["run_dir"]) / "train.log").read_text()
        assert "Starting training for 1 epochs" in log, log[-2000:]
        assert not (Path(run_b["run_dir"]) / "train.log").exists()
        for k in METRICS:
            assert run_a[k] == run_b[k], (a["model"], k)
        wa = torch.load(run_a["weights"], map_location="cpu", weights_only=False)["model"].float().state_dict()
        wb = torch.load(run_b["weights"], map_location="cpu", weights_only=False)["model"].float().state_dict()
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), a["model"]

    again = _run(console_script, [*common, "jobs=1", f"project={tmp_path / 'par'}"])
    assert again.returncode == 0 and again.stderr.count("reusing the finished run") == 2, again.stderr[-3000:]
