"""Fixtures of the command-line tests: a small trained-like Non-local model and its images.

The console-script fixture (``console_script``) and the in-process runner (``run_cli``) are in tests/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def cli_images(tmp_path_factory) -> Path:
    """Three 128 px images of the synthetic context set (its images/val folder)."""
    from yolo_nonlocal.data.synthetic import SyntheticConfig, make_dataset

    cfg = SyntheticConfig(kind="context", n_train=1, n_val=3, imgsz=128, seed=7, min_size=8, max_size=16)
    return make_dataset(tmp_path_factory.mktemp("cli") / "ds", cfg, progress=False).parent / "images" / "val"


@pytest.fixture(scope="session")
def nl_checkpoint(cli_images, tmp_path_factory) -> Path:
    """A yolov8n-nl checkpoint whose blocks are far from the identity, as training would leave them: BatchNorm
    statistics set from the images (an untrained YOLO's activations otherwise shrink to ~0), then random W_z
    BatchNorm weights and biases. Saved as Ultralytics saves (half precision)."""
    import cv2
    import torch
    from ultralytics import YOLO

    from yolo_nonlocal import NonLocal

    torch.manual_seed(0)
    yolo = YOLO("yolov8n-nl.yaml")
    net = yolo.model
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    arr = [cv2.imread(str(p))[:, :, ::-1].copy() for p in sorted(cli_images.glob("*.png"))]
    net.train()
    with torch.no_grad():
        net(torch.from_numpy(np.stack(arr)).permute(0, 3, 1, 2).float() / 255)
    net.eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, NonLocal):
                m.w_z[1].weight.normal_(0.0, 0.5)
                m.w_z[1].bias.normal_(0.0, 0.1)
    path = tmp_path_factory.mktemp("ckpt") / "run-a" / "weights" / "best.pt"
    path.parent.mkdir(parents=True)
    yolo.save(str(path))
    return path
