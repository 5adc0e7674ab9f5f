"""COCO metrics inside Ultralytics: the in-validator numbers equal the standalone evaluator's, results.csv and
the console of the real `yolo train` / `yolo val` commands carry the coco/* columns."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import site
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from yolo_nonlocal.metrics import coco as ce
from yolo_nonlocal.integrations.ultralytics import metrics as um

COCO_KEYS = ["coco/AP", "coco/AP50", "coco/AP75", "coco/APs", "coco/APm", "coco/APl"]
TINY_KEYS = ["coco/APvt", "coco/APt"]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Keep the GT cache out of the shared dataset fixture, and the switches at their defaults."""
    monkeypatch.setenv("YOLO_NONLOCAL_CACHE_DIR", str(tmp_path / "gt-cache"))
    for name in (um.ENV_TINY, um.ENV_ENABLE, um.ENV_BACKEND, um.ENV_MAX_DETS):
        monkeypatch.delenv(name, raising=False)


def _hook_installed() -> bool:
    """Whether the package's start-up hook (which calls install() in every process) is in this environment."""
    if importlib.util.find_spec("yolo_nonlocal._startup") is None:
        return False
    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    return any((Path(d) / "yolo_nonlocal-autoregister.pth").exists() for d in dirs)


def _yolo() -> list[str]:
    """The stock `yolo` command when the start-up hook is installed, else the same entry point after install()."""
    if _hook_installed():
        return [str(Path(sys.executable).parent / "yolo")]
    code = "import yolo_nonlocal.integrations.ultralytics.metrics as m; m.install(); from ultralytics.cfg import entrypoint; entrypoint()"
    return [sys.executable, "-c", code]


def test_install_is_lazy_and_idempotent():
    code = (
        "import sys, yolo_nonlocal.integrations.ultralytics.metrics as m\n"
        "m.install(); m.install()\n"
        "assert not any(k == 'ultralytics' or k.startswith('ultralytics.') for k in sys.modules), 'imported ultralytics'\n"
        "from ultralytics.models.yolo.detect.val import DetectionValidator as V\n"
        "from ultralytics.engine.trainer import BaseTrainer as T\n"
        "m.install()\n"
        "from yolo_nonlocal.integrations.import_hooks import wrapper_key as key\n"
        "for f in (V.init_metrics, V.update_metrics, V.gather_stats, V.get_stats, V.print_results, T.save_metrics):\n"
        "    assert key(f) == 'yolo_nonlocal.metrics.' + f.__name__ and key(f.__wrapped__) is None, f\n"
        "m.uninstall()\n"
        "assert key(V.get_stats) is None and key(T.save_metrics) is None and not m.is_installed()\n"
        "print('ok')\n"
    )
    env = {**os.environ, "YOLO_NONLOCAL_NO_AUTOREGISTER": "1"}  # this process installs by hand, nothing else does
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0 and proc.stdout.strip().splitlines()[-1] == "ok", proc.stderr[-3000:]


def _run_validator(data_yaml: Path, save_dir: Path, keep, score, extra_fp: bool, **args):
    """Drive a real DetectionValidator over the dataset with predictions made from its own letterboxed labels."""
    import torch
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.models.yolo.detect.val import DetectionValidator

    um.install()
    v = DetectionValidator(args=dict(data=str(data_yaml), imgsz=64, batch=2, workers=0, plots=False, device="cpu",
                                     rect=False, verbose=False, **args), save_dir=save_dir)
    v.data = check_det_dataset(str(data_yaml))
    v.device, v.stride, v.training = torch.device("cpu"), 32, False
    v.names = v.data["names"]
    v.dataloader = v.get_dataloader(v.data["val"], 2)
    v.init_metrics(SimpleNamespace(names=v.data["names"], end2end=False))
    for batch in v.dataloader:
        batch = v.preprocess(batch)
        preds = []
        for si, im_file in enumerate(batch["im_file"]):
            pb = v._prepare_batch(si, batch)
            rows = [j for j in range(len(pb["cls"])) if keep(Path(im_file).stem, j)]
            boxes = pb["bboxes"][rows].clone()
            conf = torch.tensor([score(Path(im_file).stem, j) for j in rows], dtype=torch.float32)
            cls = pb["cls"][rows].clone()
            if extra_fp and not len(pb["cls"]):  # a confident false positive on the image without labels
                boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
                conf, cls = torch.tensor([0.95]), torch.tensor([1.0])
            preds.append({"bboxes": boxes, "conf": conf, "cls": cls, "extra": torch.zeros((len(cls), 0))})
        v.update_metrics(preds, batch)
    v.gather_stats()
    stats = v.get_stats()
    v.print_results()
    return v, stats


def test_in_validator_numbers_equal_the_standalone_evaluator(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv(um.ENV_TINY, "1")

    def keep(stem: str, j: int) -> bool:
        return (int(stem[-3:]) + j) % 4 != 1  # drop about a quarter of the objects

    def score(stem: str, j: int) -> float:
        return 0.2 + 0.7 * (((int(stem[-3:]) * 7 + j * 3) % 10) / 10)

    v, stats = _run_validator(tiny_dataset, tmp_path / "val", keep, score, extra_fp=True)
    assert list(stats)[-8:] == COCO_KEYS + TINY_KEYS  # after Ultralytics' own keys, in order
    # the same detections written as a predictions file against the YOLO labels, in original-image pixels
    gt = ce.build_ground_truth(tiny_dataset, "val")
    dets, seen = [], {}
    for a in gt["annotations"]:
        stem = Path(gt["images"][a["image_id"] - 1]["file_name"]).stem
        j = seen[stem] = seen.get(stem, -1) + 1
        if keep(stem, j):
            dets.append({"image_id": stem, "category_id": a["category_id"], "bbox": a["bbox"], "score": score(stem, j)})
    empty = next(img for img in gt["images"] if not any(a["image_id"] == img["id"] for a in gt["annotations"]))
    dets.append({"image_id": Path(empty["file_name"]).stem, "category_id": 2, "bbox": [0, 0, 20, 20], "score": 0.95})
    want = ce.evaluate(tiny_dataset, dets, tiny=True)
    got = {k[len("coco/"):]: v for k, v in stats.items() if k.startswith("coco/")}
    assert got == pytest.approx(want, abs=1e-6)
    assert 0 < got["AP"] < 1  # the false positive and the dropped objects count
    assert v.metrics.coco == pytest.approx(want, abs=1e-6)
    assert json.loads((tmp_path / "val" / "coco_metrics.json").read_text()) == pytest.approx(want, abs=1e-6)


def test_switched_off_single_class_and_class_subset(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv(um.ENV_ENABLE, "0")
    _, stats = _run_validator(tiny_dataset, tmp_path / "off", lambda s, j: True, lambda s, j: 0.9, extra_fp=False)
    assert not any(k.startswith("coco/") for k in stats)
    monkeypatch.delenv(um.ENV_ENABLE)
    _, stats = _run_validator(tiny_dataset, tmp_path / "on", lambda s, j: True, lambda s, j: 0.9, extra_fp=False)
    assert stats["coco/AP"] == pytest.approx(1.0) and stats["coco/APl"] == -1.0  # every object found, none large
    # single_cls: the dataset's labels all become class 0, and so must the COCO ground truth
    _, stats = _run_validator(tiny_dataset, tmp_path / "single", lambda s, j: True, lambda s, j: 0.9, extra_fp=False,
                              single_cls=True)
    assert stats["coco/AP"] == pytest.approx(1.0)
    # classes=[1]: Ultralytics validates class 1 only; the class-0 objects (never predicted here) must not count
    gt = ce.build_ground_truth(tiny_dataset)
    assert {a["category_id"] for a in gt["annotations"]} == {1, 2}
    _, stats = _run_validator(tiny_dataset, tmp_path / "subset", lambda s, j: True, lambda s, j: 0.9, extra_fp=False,
                              classes=[1])
    assert stats["coco/AP"] == pytest.approx(1.0)


def test_results_csv_columns_stay_stable_on_epochs_without_validation(tmp_path):
    from ultralytics.engine.trainer import BaseTrainer

    um.install()
    trainer = SimpleNamespace(csv=tmp_path / "results.csv", epoch=0, train_time_start=time.time(),
                              validator=SimpleNamespace(args=SimpleNamespace(task="detect")))
    placeholder = {"train/box_loss": 1.5, "metrics/precision(B)": 0, "metrics/mAP50-95(B)": 0, "val/box_loss": 0,
                   "lr/pg0": 0.01}
    BaseTrainer.save_metrics(trainer, placeholder)  # val=False epoch: Ultralytics' zero placeholders
    trainer.epoch = 1
    validated = {"train/box_loss": 1.2, "metrics/precision(B)": 0.5, "metrics/mAP50-95(B)": 0.25,
                 **dict.fromkeys(COCO_KEYS, 0.125), "val/box_loss": 1.1, "lr/pg0": 0.01}
    BaseTrainer.save_metrics(trainer, validated)
    rows = list(csv.reader(trainer.csv.open()))
    assert rows[0] == ["epoch", "time", "train/box_loss", "metrics/precision(B)", "metrics/mAP50-95(B)", *COCO_KEYS,
                       "val/box_loss", "lr/pg0"]
    assert [len(r) for r in rows] == [len(rows[0])] * 3
    assert [float(x) for x in rows[1][5:11]] == [0.0] * 6 and [float(x) for x in rows[2][5:11]] == [0.125] * 6


@pytest.mark.slow
def test_yolo_train_and_val_commands_report_coco_columns(tiny_dataset, tmp_path):
    env = {**os.environ, "YOLO_NONLOCAL_CACHE_DIR": str(tmp_path / "gt-cache"), um.ENV_TINY: "1"}
    common = [f"data={tiny_dataset}", "imgsz=64", "batch=4", "workers=0", "plots=False", "device=cpu",
              f"project={tmp_path}"]
    train = subprocess.run([*_yolo(), "train", "model=yolov8n.yaml", "epochs=1", "amp=False", "name=train", *common],
                           capture_output=True, text=True, timeout=300, env=env)
    out = train.stdout + train.stderr
    assert train.returncode == 0, out[-4000:]
    with (tmp_path / "train" / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and all(k in rows[0] for k in COCO_KEYS + TINY_KEYS), list(rows[0])
    assert all(-1.0 <= float(rows[0][k]) <= 1.0 for k in COCO_KEYS + TINY_KEYS)
    assert "COCO bbox" in out and "APvt" in out

    env.pop(um.ENV_TINY)
    weights = tmp_path / "train" / "weights" / "last.pt"
    val = subprocess.run([*_yolo(), "val", f"model={weights}", "name=val", "save_json=True", "conf=0.000001", *common],
                         capture_output=True, text=True, timeout=300, env=env)
    out = val.stdout + val.stderr
    assert val.returncode == 0, out[-4000:]
    header = next(line for line in out.splitlines() if "COCO bbox" in line)
    assert header.split()[2:] == ["AP", "AP50", "AP75", "APs", "APm", "APl"]  # no tiny columns without the switch
    reported = json.loads((tmp_path / "val" / "coco_metrics.json").read_text())
    assert list(reported) == ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    # Ultralytics' own predictions.json (file stems as ids, 1-based classes) scores the same standalone
    standalone = ce.evaluate(tiny_dataset, tmp_path / "val" / "predictions.json")
    assert standalone == pytest.approx(reported, abs=1e-4)


@pytest.mark.parametrize("backend", ["pycocotools", "faster-coco-eval"])
def test_keeping_each_class_top_detections_changes_no_number(tiny_dataset, backend):
    import numpy as np

    gt = ce.build_ground_truth(tiny_dataset)
    rng = np.random.default_rng(0)
    full, kept = [], []
    for img in gt["images"]:
        n = 40
        xywh = np.column_stack([rng.uniform(0, 100, (n, 2)), rng.uniform(4, 60, (n, 2))])
        conf = rng.choice([0.1, 0.3, 0.5, 0.7, 0.9], n)  # many ties across the cut
        cls = rng.integers(0, 2, n)
        keep = um._top_per_class(conf, cls, 7)
        assert all((cls[keep] == c).sum() == min(7, (cls == c).sum()) for c in (0, 1))
        for out, rows in ((full, range(n)), (kept, keep)):
            out += [{"image_id": img["id"], "category_id": int(cls[i]) + 1, "bbox": xywh[i].tolist(),
                     "score": float(conf[i])} for i in rows]
    for a in gt["annotations"]:  # and some true positives, so that the numbers are not all zero
        full.append({"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.6})
        kept.append(full[-1])
    assert len(kept) < len(full)
    a = ce.cocoeval_stats(gt, full, backend=backend, max_dets=7)
    b = ce.cocoeval_stats(gt, kept, backend=backend, max_dets=7)
    assert a == b and a["AP"] > 0


@pytest.mark.slow
def test_trainer_imported_first_and_epochs_without_validation(tiny_dataset, tmp_path):
    """install() runs inside Ultralytics' import chain, when engine.trainer may be half-imported: the trainer
    must still be patched before the run, and epochs without validation keep the CSV rectangular."""
    if not _hook_installed():
        pytest.skip("needs the package's start-up hook (install() inside Ultralytics' own import)")
    code = (
        "import sys\n"
        "import ultralytics.engine.trainer\n"  # nn.tasks, hence install(), is imported during this import
        "from ultralytics import YOLO\n"
        f"YOLO('yolov8n.yaml').train(data={str(tiny_dataset)!r}, epochs=2, val=False, imgsz=64, batch=4, workers=0,"
        f" plots=False, device='cpu', project={str(tmp_path)!r}, name='nv', amp=False)\n"
    )
    env = {**os.environ, "YOLO_NONLOCAL_CACHE_DIR": str(tmp_path / "gt-cache")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    rows = list(csv.reader((tmp_path / "nv" / "results.csv").open()))
    assert [len(r) for r in rows] == [len(rows[0])] * 3
    cols = [rows[0].index(k) for k in COCO_KEYS]
    assert cols == list(range(cols[0], cols[0] + 6)) and rows[0][cols[0] - 1].startswith("metrics/")
    assert [float(rows[1][i]) for i in cols] == [0.0] * 6  # epoch 1: not validated, placeholders
    assert float(rows[2][cols[-1]]) == -1.0  # epoch 2 (final, validated): no large object in the dataset
