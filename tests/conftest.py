"""Session-wide test settings and shared fixtures.

Every test runs offline (YOLO_OFFLINE=1) with Ultralytics' settings in a throw-away folder, and plots
go to a non-interactive backend; subprocesses inherit all of it through os.environ.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

_CONFIG_DIR = tempfile.mkdtemp(prefix="yolo-nonlocal-test-config-")
os.environ["YOLO_OFFLINE"] = "1"
os.environ["YOLO_CONFIG_DIR"] = _CONFIG_DIR
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

VENV_BIN = Path(sys.executable).parent


def write_tiny_yolo_dataset(root: Path, n_train: int = 8, n_val: int = 4, imgsz: int = 128, seed: int = 0) -> Path:
    """Write a tiny YOLO-format detection dataset (2 classes: red boxes, blue boxes) and return its data.yaml.

    Objects span small to medium sizes; the last validation image has no objects (an empty label file).
    """
    import cv2
    import yaml

    rng = np.random.default_rng(seed)
    root = Path(root)
    for split, count in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for k in range(count):
            img = rng.integers(90, 140, size=(imgsz, imgsz, 3), dtype=np.uint8)
            rows = []
            n_obj = 0 if (split == "val" and k == count - 1) else int(rng.integers(1, 5))
            for _ in range(n_obj):
                cls = int(rng.integers(0, 2))
                w, h = (int(v) for v in rng.integers(6, imgsz // 2, size=2))
                x0, y0 = int(rng.integers(0, imgsz - w)), int(rng.integers(0, imgsz - h))
                colour = (30, 30, 230) if cls == 0 else (230, 60, 30)  # BGR: red, blue
                cv2.rectangle(img, (x0, y0), (x0 + w - 1, y0 + h - 1), colour, thickness=-1)
                rows.append(f"{cls} {(x0 + w / 2) / imgsz:.6f} {(y0 + h / 2) / imgsz:.6f} {w / imgsz:.6f} {h / imgsz:.6f}")
            cv2.imwrite(str(root / "images" / split / f"{split}_{k:03d}.jpg"), img)
            (root / "labels" / split / f"{split}_{k:03d}.txt").write_text("\n".join(rows) + ("\n" if rows else ""))
    data = {"path": str(root), "train": "images/train", "val": "images/val", "names": {0: "red", 1: "blue"}}
    (root / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root / "data.yaml"


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """Path to the data.yaml of a tiny generated YOLO dataset shared by the session (do not modify it)."""
    return write_tiny_yolo_dataset(tmp_path_factory.mktemp("tiny_dataset"))


@pytest.fixture(scope="session")
def console_script() -> str:
    """The ``yolo-nonlocal`` console script of this interpreter's environment (installed by ``pip install -e .``).

    Command behaviour is tested in-process (:func:`run_cli`); each entry point also gets one smoke test through
    the real console script, found here once.
    """
    path = VENV_BIN / "yolo-nonlocal"
    found = str(path) if path.is_file() else shutil.which("yolo-nonlocal")
    if not found:
        pytest.fail(f"no yolo-nonlocal console script beside {sys.executable}; install the package (make install)")
    return found


@dataclass
class CliResult:
    """What one in-process ``yolo-nonlocal`` call returned and printed."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli(capsys):
    """Run ``yolo-nonlocal ARGV...`` in this process (``yolo_nonlocal.cli.main``) and capture what it printed."""

    def run(*argv: str) -> CliResult:
        from yolo_nonlocal.cli import main

        capsys.readouterr()
        rc = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return CliResult(rc, out, err)

    return run


@pytest.fixture(scope="session")
def largest_tensor():
    """A context manager class recording the largest tensor any ATen op produces (forward and backward):
    ``with largest_tensor() as rec: ...; rec.largest`` (elements). Shows that no N x N' tensor is built."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class LargestTensor(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    self.largest = max(self.largest, t.numel())
            return out

    return LargestTensor


@pytest.fixture(scope="session")
def context_val_images(tmp_path_factory) -> Path:
    """Three 128 px images of the synthetic context set (its images/val folder; do not modify them)."""
    from yolo_nonlocal.data.synthetic import SyntheticConfig, make_dataset

    cfg = SyntheticConfig(kind="context", n_train=1, n_val=3, imgsz=128, seed=7, min_size=8, max_size=16)
    return make_dataset(tmp_path_factory.mktemp("context3") / "ds", cfg, progress=False).parent / "images" / "val"


def _trained_like_nonlocal_yolo(images: Path):
    """A fresh yolov8n-nl whose blocks are far from the identity, as training would leave them: BatchNorm
    statistics set from ``images`` (an untrained YOLO's activations otherwise shrink to ~0), then random W_z
    BatchNorm weights and biases (seeded)."""
    import cv2
    import torch
    from ultralytics import YOLO

    from yolo_nonlocal import NonLocal

    from yolo_nonlocal.integrations.ultralytics.options import configure

    torch.manual_seed(0)
    yolo = configure(YOLO("yolov8n-nl.yaml"), init_attention="random")  # trained maps are query-dependent
    net = yolo.model
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    arr = [cv2.imread(str(p))[:, :, ::-1].copy() for p in sorted(Path(images).glob("*.png"))]
    net.train()
    with torch.no_grad():
        net(torch.from_numpy(np.stack(arr)).permute(0, 3, 1, 2).float() / 255)
    net.eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, NonLocal):
                m.w_z[1].weight.normal_(0.0, 0.5)
                m.w_z[1].bias.normal_(0.0, 0.1)
    return yolo


@pytest.fixture(scope="session")
def make_trained_like_nl():
    """The factory of :func:`_trained_like_nonlocal_yolo`: each call builds a new model (tests may change it)."""
    return _trained_like_nonlocal_yolo
