"""A resumed run's results.csv follows its own header, whatever the environment says at resume (issue 11 item 1).

The three reproductions of the issue: (a) a run started without the package, resumed with it; (b) started
without ``YOLO_NONLOCAL_TINY``, resumed with it; (c) started with the COCO columns, resumed with
``YOLO_NONLOCAL_COCO=0``. Before the fix each appended rows with another number of fields than the header
(or shifted ``val/box_loss`` under ``coco/AP``). Checked with Ultralytics' real ``save_metrics`` and, in the
slow tests, with real interrupted and resumed trainings.
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import pytest

import yolo_nonlocal

yolo_nonlocal.register()

from ultralytics.engine.trainer import BaseTrainer  # noqa: E402

from yolo_nonlocal.integrations.ultralytics import metrics as um  # noqa: E402

COCO = ["coco/AP", "coco/AP50", "coco/AP75", "coco/APs", "coco/APm", "coco/APl"]
TINY = ["coco/APvt", "coco/APt"]
STOCK = {"train/box_loss": 1.5, "train/cls_loss": 2.5, "metrics/precision(B)": 0.1, "metrics/mAP50-95(B)": 0.05,
         "val/box_loss": 1.25, "val/cls_loss": 2.25, "lr/pg0": 0.01}


def _trainer(path):
    return SimpleNamespace(csv=path, epoch=0, train_time_start=time.time(),
                           validator=SimpleNamespace(args=SimpleNamespace(task="detect")))


def _with(coco_keys, value=0.5):
    """Metrics as the validator returns them with the given coco/* keys (after the metrics/* keys)."""
    out = {}
    for k, v in STOCK.items():
        out[k] = v
        if k == "metrics/mAP50-95(B)":
            out.update(dict.fromkeys(coco_keys, value))
    return out


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def _dicts(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_run_started_without_the_package_keeps_its_columns(tmp_path):
    """(a): the header has no coco/* columns; the resumed epochs add them at the end, earlier rows get nan."""
    path = tmp_path / "results.csv"
    t = _trainer(path)
    BaseTrainer.save_metrics.__wrapped__(t, dict(STOCK))  # epoch 1 written by stock Ultralytics
    t.epoch = 1
    BaseTrainer.save_metrics(t, _with(COCO))  # resumed with the package installed
    rows = _rows(path)
    assert [len(r) for r in rows] == [len(rows[0])] * 3
    assert rows[0][: 2 + len(STOCK)] == ["epoch", "time", *STOCK] and rows[0][2 + len(STOCK):] == COCO
    first, second = _dicts(path)
    assert all(math.isnan(float(first[k])) for k in COCO) and all(float(second[k]) == 0.5 for k in COCO)
    assert float(first["val/box_loss"]) == float(second["val/box_loss"]) == 1.25  # nothing shifted


def test_b_tiny_columns_switched_on_at_resume_are_appended(tmp_path, monkeypatch):
    path = tmp_path / "results.csv"
    t = _trainer(path)
    BaseTrainer.save_metrics(t, _with(COCO))
    monkeypatch.setenv(um.ENV_TINY, "1")
    t.epoch = 1
    BaseTrainer.save_metrics(t, _with(COCO + TINY, 0.25))
    rows = _rows(path)
    assert [len(r) for r in rows] == [len(rows[0])] * 3 and rows[0][-2:] == TINY
    first, second = _dicts(path)
    assert float(first["coco/AP"]) == 0.5 and math.isnan(float(first["coco/APt"]))
    assert float(second["coco/APt"]) == 0.25 and float(second["val/box_loss"]) == 1.25


def test_c_coco_switched_off_at_resume_fills_nan_and_shifts_nothing(tmp_path, monkeypatch):
    path = tmp_path / "results.csv"
    t = _trainer(path)
    BaseTrainer.save_metrics(t, _with(COCO))
    monkeypatch.setenv(um.ENV_ENABLE, "0")
    t.epoch = 1
    BaseTrainer.save_metrics(t, dict(STOCK))  # the validator adds no coco/* keys any more
    rows = _rows(path)
    assert [len(r) for r in rows] == [len(rows[0])] * 3
    first, second = _dicts(path)
    assert all(math.isnan(float(second[k])) for k in COCO)
    assert float(second["val/box_loss"]) == 1.25 and float(second["lr/pg0"]) == 0.01  # not under coco/AP


def test_padded_header_of_older_releases(tmp_path):
    """8.3.x pads every field to 23 characters: the header is read stripped and new columns keep the padding."""
    path = tmp_path / "results.csv"
    names = ["epoch", *STOCK]
    path.write_text(",".join(f"{n:>23}" for n in names) + "\n" + ",".join(f"{v:>23.5g}" for v in [1, *STOCK.values()])
                    + "\n")
    t = _trainer(path)
    t.epoch = 1
    aligned, extra = um.align_to_header(_with(COCO), [c.strip() for c in path.read_text().splitlines()[0].split(",")])
    assert list(aligned)[: len(STOCK)] == list(STOCK) and extra == COCO
    um._save_metrics(lambda self, m: None)(t, _with(COCO))
    header = path.read_text().splitlines()[0].split(",")
    assert [h.strip() for h in header] == names + COCO and all(len(h) == 23 for h in header)
    assert [v.strip() for v in path.read_text().splitlines()[1].split(",")][-len(COCO):] == ["nan"] * len(COCO)


# -------------------------------------------------------------------------------- real trainings (slow)
TRAIN = """
import os, sys
{register}
from ultralytics import YOLO

class Stop(Exception):
    pass

def stop(trainer):
    if trainer.epoch == 0:
        raise Stop

model = YOLO("yolov8n.yaml")
model.add_callback("on_fit_epoch_end", stop)
try:
    model.train(data={data!r}, epochs=2, imgsz=64, batch=4, workers=0, device="cpu", plots=False, amp=False,
                project={project!r}, name="run", exist_ok=True, val=True)
except Stop:
    print("stopped after epoch 1")
"""

RESUME = """
from ultralytics import YOLO
from ultralytics.utils.plotting import plot_results
YOLO({last!r}).train(resume=True)
plot_results(file={csv!r})
"""


def _run(code: str, cwd, **env) -> str:
    environ = {**os.environ, **env}
    environ.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=environ, capture_output=True,
                          text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("case", ["a", "c"])
def test_interrupted_and_resumed_training(case, tiny_dataset, tmp_path):
    start_env = {"YOLO_NONLOCAL_NO_AUTOREGISTER": "1"} if case == "a" else {}  # (a): as if not installed yet
    resume_env = {um.ENV_ENABLE: "0"} if case == "c" else {}
    start_env["YOLO_NONLOCAL_CACHE_DIR"] = resume_env["YOLO_NONLOCAL_CACHE_DIR"] = str(tmp_path / "gt-cache")
    out = _run(TRAIN.format(register="" if case == "a" else "import yolo_nonlocal; yolo_nonlocal.register()",
                            data=str(tiny_dataset), project=str(tmp_path)), tmp_path, **start_env)
    assert "stopped after epoch 1" in out
    path = tmp_path / "run" / "results.csv"
    header = _rows(path)[0]
    assert (any(c.startswith("coco/") for c in header)) == (case == "c")
    out = _run(RESUME.format(last=str(tmp_path / "run" / "weights" / "last.pt"), csv=str(path)), tmp_path, **resume_env)
    assert "Plotting error" not in out, out[-3000:]
    assert (tmp_path / "run" / "results.png").exists()
    rows = _rows(path)
    assert len(rows) == 3 and [len(r) for r in rows] == [len(rows[0])] * 3, rows
    assert rows[0][: len(header)] == header  # the run's columns stay where they were
    first, second = _dicts(path)
    assert 0 < float(second["val/box_loss"]) < 100 and 0 < float(first["val/box_loss"]) < 100
    if case == "a":
        assert math.isnan(float(first["coco/AP"])) and -1 <= float(second["coco/AP"]) <= 1
    else:
        assert math.isnan(float(second["coco/AP"])) and -1 <= float(first["coco/AP"]) <= 1
