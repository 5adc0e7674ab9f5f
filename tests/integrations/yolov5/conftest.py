"""Fixtures of the YOLOv5/YOLOv7 integration tests (the synthetic trees live in yolov5_trees.py)."""

from __future__ import annotations

import pytest
from yolov5_trees import LAYOUTS


@pytest.fixture(params=sorted(LAYOUTS))
def layout(request) -> str:
    return request.param
