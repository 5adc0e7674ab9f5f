"""Fixtures of the command-line tests: a small trained-like Non-local model and its images.

The console-script fixture (``console_script``) and the in-process runner (``run_cli``) are in tests/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def cli_images(context_val_images) -> Path:
    """Three 128 px images of the synthetic context set (its images/val folder)."""
    return context_val_images


@pytest.fixture(scope="session")
def nl_checkpoint(cli_images, make_trained_like_nl, tmp_path_factory) -> Path:
    """A yolov8n-nl checkpoint whose blocks are far from the identity, saved as Ultralytics saves (half precision)."""
    yolo = make_trained_like_nl(cli_images)
    path = tmp_path_factory.mktemp("ckpt") / "run-a" / "weights" / "best.pt"
    path.parent.mkdir(parents=True)
    yolo.save(str(path))
    return path
