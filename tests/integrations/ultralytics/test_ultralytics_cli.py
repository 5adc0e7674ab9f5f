"""The stock `yolo` command end to end with a Non-local model, each step in a new process from a temp folder:

train (pretrained= a stock checkpoint made here) -> val and predict from best.pt (also under
ULTRALYTICS_SAFE_LOAD=1) -> export ONNX (onnxruntime agrees with torch; opset < 14 refused) and TorchScript.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from copy import deepcopy
from pathlib import Path

import numpy as np
import pytest
import torch

YOLO_BIN = Path(sys.executable).parent / "yolo"
pytestmark = pytest.mark.slow


def yolo(args: list[str], cwd: Path, safe_load: bool = False, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if safe_load:
        env["ULTRALYTICS_SAFE_LOAD"] = "1"
    r = subprocess.run([str(YOLO_BIN), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    r.output = r.stdout + r.stderr
    return r


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_dataset):
    """A 1-epoch yolov8n-nl run started from a stock checkpoint; returns (work dir, best.pt, train output)."""
    if not YOLO_BIN.exists():
        pytest.skip(f"no `yolo` script next to {sys.executable}")
    import yolo_nonlocal

    yolo_nonlocal.register()
    from ultralytics import __version__
    from ultralytics.nn.tasks import DetectionModel

    work = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    stock = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
    stock.names = {0: "red", 1: "blue"}
    n_stock = len(stock.state_dict())
    torch.save({"model": deepcopy(stock).half(), "ema": None, "train_args": {}, "version": __version__},
               work / "stock.pt")
    r = yolo(["train", "model=yolov8n-nl.yaml", "pretrained=stock.pt", f"data={tiny_dataset}", "epochs=1",
              "imgsz=64", "batch=4", "workers=0", "plots=False", "device=cpu", "amp=False", "val=True",
              f"project={work / 'runs'}", "name=train", "exist_ok=True", "seed=0"], work)
    assert r.returncode == 0, r.output[-4000:]
    best = work / "runs" / "train" / "weights" / "best.pt"
    assert best.exists(), r.output[-2000:]
    return work, best, r.output, n_stock


def test_train_transfers_every_stock_tensor_and_reports_true_gflops(trained):
    _, _, out, n_stock = trained
    transferred = re.search(r"Transferred (\d+)/(\d+) items", out)
    assert transferred and int(transferred.group(1)) == n_stock  # the block tensors keep their init
    # counted after Ultralytics' own load: the same number, and nothing dropped
    assert f"pretrained weights: {n_stock}/{n_stock} checkpoint tensors landed" in out and " dropped" not in out
    gflops = [float(g) for g in re.findall(r"YOLOv8n-nl summary: [^\n]*?([\d.]+) GFLOPs", out)]
    assert gflops and all(g > 9.5 for g in gflops)  # 8.2 (stock, nc=2) + 1.4 attention (P3 keys sub-sampled) + block convs


@pytest.mark.parametrize("safe_load", [False, True], ids=["default", "safe-load"])
def test_val_and_predict_from_best_pt_in_new_processes(trained, tiny_dataset, safe_load):
    work, best, _, _ = trained
    r = yolo(["val", f"model={best}", f"data={tiny_dataset}", "imgsz=64", "batch=4", "workers=0", "plots=False",
              "device=cpu", f"project={work / 'runs'}", f"name=val{int(safe_load)}", "exist_ok=True"], work, safe_load)
    assert r.returncode == 0, r.output[-3000:]
    assert re.search(r"^\s+all\s+4\s+\d+", r.output, re.M), r.output[-2000:]
    source = Path(tiny_dataset).parent / "images" / "val"
    r = yolo(["predict", f"model={best}", f"source={source}", "imgsz=64", "device=cpu", "save=False",
              f"project={work / 'runs'}", f"name=pred{int(safe_load)}", "exist_ok=True"], work, safe_load)
    assert r.returncode == 0, r.output[-3000:]
    assert "image 4/4" in r.output


def _torch_reference(best: Path, x: np.ndarray) -> np.ndarray:
    from ultralytics import YOLO

    model = YOLO(str(best)).model.float().fuse().eval()
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    return (out[0] if isinstance(out, (list, tuple)) else out).numpy()


def test_export_onnx_agrees_with_torch(trained):
    import onnxruntime as ort

    work, best, _, _ = trained
    r = yolo(["export", f"model={best}", "format=onnx", "imgsz=64", "device=cpu"], work)
    assert r.returncode == 0, r.output[-3000:]
    onnx_file = best.with_suffix(".onnx")
    assert onnx_file.exists()
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    ref = _torch_reference(best, x)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3)


def test_export_onnx_low_opset_is_refused_clearly(trained):
    work, best, _, _ = trained
    r = yolo(["export", f"model={best}", "format=onnx", "imgsz=64", "device=cpu", "opset=12"], work)
    assert r.returncode != 0
    assert "exports to ONNX from opset 14 on; opset=12 was asked" in r.output


def test_export_torchscript_agrees_with_torch(trained):
    work, best, _, _ = trained
    r = yolo(["export", f"model={best}", "format=torchscript", "imgsz=64", "device=cpu"], work)
    assert r.returncode == 0, r.output[-3000:]
    ts = torch.jit.load(str(best.with_suffix(".torchscript")))
    x = np.random.default_rng(1).random((1, 3, 64, 64), dtype=np.float32)
    with torch.no_grad():
        got = ts(torch.from_numpy(x))
    got = (got[0] if isinstance(got, (list, tuple)) else got).numpy()
    np.testing.assert_allclose(got, _torch_reference(best, x), rtol=1e-4, atol=1e-4)
