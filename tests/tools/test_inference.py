"""yolo_nonlocal.tools.inference: the letterbox the detector sees, model names for file names, the NonLocal layers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from yolo_nonlocal.tools.inference import input_size, letterbox, load_model, model_label, nonlocal_layers, read_image


def test_letterbox_scales_the_long_side_and_pads_right_and_bottom():
    img = np.zeros((100, 60, 3), np.uint8)
    img[:] = (10, 20, 30)
    out, r = letterbox(img, 128, 32)
    assert r == pytest.approx(1.28) and out.shape == (128, 96, 3)  # 128 x 77 -> padded to 128 x 96
    assert (out[:128, :77] == (10, 20, 30)).all() and (out[:, 77:] == 114).all()
    same, r1 = letterbox(np.zeros((64, 64, 3), np.uint8), 64, 32)
    assert r1 == 1.0 and same.shape == (64, 64, 3)
    with pytest.raises(ValueError, match="H x W x 3"):
        letterbox(np.zeros((8, 8), np.uint8), 64)


@pytest.mark.parametrize(
    "spec, label",
    [
        ("runs/detect/train3/weights/best.pt", "train3-best"),
        ("runs/cmp/runs/yolov8n-nl-seed0-abc/weights/last.pt", "yolov8n-nl-seed0-abc-last"),
        ("mine/best.pt", "mine-best"),
        ("yolov8n-nl.yaml", "yolov8n-nl"),
        (Path("/x/my model.pt"), "my_model"),
    ],
)
def test_model_label(spec, label):
    assert model_label(spec) == label


def test_model_label_of_models_in_memory():
    from ultralytics import YOLO

    yolo = YOLO("yolov8n-nl.yaml")
    assert model_label(yolo) == model_label(yolo.model) == "yolov8n-nl"
    assert sorted(nonlocal_layers(load_model(yolo))) == [10, 17]
    assert input_size(yolo.model, None) == 640 and input_size(yolo.model, 128) == 128
    with pytest.raises(ValueError, match="must be >= 32"):
        input_size(yolo.model, 16)


def test_missing_inputs_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads weights"):
        load_model(tmp_path / "missing.pt", "attention")
    with pytest.raises(FileNotFoundError, match="not a readable image"):
        read_image(tmp_path / "none.png")
