"""VisDrone-DET and AI-TOD converters on small fixtures written here, read back by Ultralytics' own
dataset loader through the configs in datasets/ (nothing downloads)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolo_nonlocal.data.converters import (
    AITOD_NAMES,
    VISDRONE_NAMES,
    coco_to_yolo,
    convert_aitod,
    convert_visdrone,
    visdrone_rows_to_yolo,
)
from yolo_nonlocal.cli import convert as convert_cli

REPO = Path(__file__).resolve().parents[2]


def _image(path: Path, w: int, h: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 90, np.uint8))


def _rows(path: Path) -> list[list[float]]:
    return [[float(v) for v in line.split()] for line in path.read_text().splitlines()]


def _ultralytics_labels(yaml_path: Path, split: str) -> dict[str, list]:
    """{image stem: [(cls, xc, yc, w, h), ...]} as Ultralytics' YOLODataset loads them."""
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    data = check_det_dataset(str(yaml_path))
    ds = YOLODataset(img_path=data[split], data=data, imgsz=64, augment=False, task="detect")
    return {
        Path(lb["im_file"]).stem: [(int(c), *map(float, b)) for c, b in zip(lb["cls"].ravel(), lb["bboxes"])]
        for lb in ds.labels
    }


VISDRONE_ANN = """\
10,20,30,40,1,4,0,0
0,0,50,60,0,0,0,0
5,5,10,10,1,11,0,0
7,7,8,8,0,1,0,0
180,140,40,30,1,1,0,1
60,60,0,12,1,2,0,0
100,50,20,10,1,10,1,2,
"""


def test_visdrone_rows_convention():
    rows, stats = visdrone_rows_to_yolo(VISDRONE_ANN, 200, 150)
    assert stats == {"kept": 3, "ignored_region": 1, "others": 1, "score0": 1, "empty": 1}
    got = [[float(v) for v in r.split()] for r in rows]
    # car (category 4 -> class 3): 10..40 x 20..60
    assert got[0] == pytest.approx([3, 25 / 200, 40 / 150, 30 / 200, 40 / 150], abs=1e-6)
    # pedestrian crossing the corner is clipped to 180..200 x 140..150
    assert got[1] == pytest.approx([0, 190 / 200, 145 / 150, 20 / 200, 10 / 150], abs=1e-6)
    # motor (category 10 -> class 9), a row with a trailing comma
    assert got[2] == pytest.approx([9, 110 / 200, 55 / 150, 20 / 200, 10 / 150], abs=1e-6)
    with pytest.raises(ValueError, match="category 12 is outside"):
        visdrone_rows_to_yolo("1,1,2,2,1,12,0,0", 10, 10, "x.txt")
    with pytest.raises(ValueError, match=r"x.txt:1: .* is not a VisDrone-DET row"):
        visdrone_rows_to_yolo("1,1,2,2", 10, 10, "x.txt")


def test_visdrone_split_loads_in_ultralytics(tmp_path):
    root = tmp_path / "VisDrone"
    for split, stems in (("VisDrone2019-DET-train", ["0000001_a", "0000002_b"]), ("VisDrone2019-DET-val", ["0000003_c"])):
        for k, stem in enumerate(stems):
            _image(root / split / "images" / f"{stem}.jpg", 200, 150)
            ann = VISDRONE_ANN if k == 0 else "0,0,50,60,0,0,0,0\n"  # the second image: only an ignored region
            (root / split / "annotations").mkdir(parents=True, exist_ok=True)
            (root / split / "annotations" / f"{stem}.txt").write_text(ann)
    stats = convert_visdrone(root)
    assert stats["VisDrone2019-DET-train"]["images"] == 2 and stats["VisDrone2019-DET-train"]["kept"] == 3
    assert (root / "VisDrone2019-DET-train" / "labels" / "0000002_b.txt").read_text() == ""

    cfg = tmp_path / "VisDrone.yaml"
    shutil.copy(REPO / "datasets" / "VisDrone.yaml", cfg)  # the shipped config, unpacked next to it
    labels = _ultralytics_labels(cfg, "train")
    assert sorted(labels) == ["0000001_a", "0000002_b"] and labels["0000002_b"] == []
    assert [c for c, *_ in labels["0000001_a"]] == [3, 0, 9]
    assert labels["0000001_a"][0][1:] == pytest.approx((0.125, 40 / 150, 0.15, 40 / 150), abs=1e-5)
    import yaml

    names = yaml.safe_load(cfg.read_text())["names"]
    assert tuple(names.values()) == VISDRONE_NAMES


def _aitod_fixture(root: Path) -> None:
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(AITOD_NAMES)]
    _image(root / "images" / "trainval" / "a.png", 100, 80)
    _image(root / "images" / "trainval" / "b.png", 100, 80)
    _image(root / "images" / "test" / "c.png", 64, 64)
    train = {
        "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 80}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 6, "bbox": [10, 20, 8, 6], "iscrowd": 0},  # vehicle
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [95, 70, 10, 20], "iscrowd": 0},  # clipped
            {"id": 3, "image_id": 1, "category_id": 7, "bbox": [30, 30, 4, 4], "iscrowd": 1},  # crowd: skipped
            {"id": 4, "image_id": 1, "category_id": 7, "bbox": [40, 30, 4, 4], "ignore": 1},  # ignored: skipped
        ],
        "categories": cats,
    }
    val = {
        "images": [{"id": 2, "file_name": "b.png", "width": 0, "height": 0}],  # size read from the file
        "annotations": [{"id": 5, "image_id": 2, "category_id": 8, "bbox": [0, 0, 5, 5]}],
        "categories": cats,
    }
    test = {"images": [{"id": 3, "file_name": "c.png", "width": 64, "height": 64}], "annotations": [], "categories": cats}
    (root / "annotations").mkdir(parents=True)
    for name, content in (("aitod_train_v1.json", train), ("aitod_val_v1.json", val), ("aitod_test_v1.json", test)):
        (root / "annotations" / name).write_text(json.dumps(content))


def test_aitod_converts_and_loads_in_ultralytics(tmp_path):
    root = tmp_path / "AI-TOD"
    _aitod_fixture(root)
    stats = convert_aitod(root)
    assert set(stats) == {"aitod_train_v1.json", "aitod_val_v1.json", "aitod_test_v1.json"}
    assert stats["aitod_train_v1.json"]["kept"] == 2 and stats["aitod_train_v1.json"]["crowd_or_ignore"] == 2
    rows = _rows(root / "labels" / "trainval" / "a.txt")
    assert len(rows) == 2
    assert rows[0] == pytest.approx([5, 14 / 100, 23 / 80, 8 / 100, 6 / 80], abs=1e-6)  # vehicle
    assert rows[1] == pytest.approx([0, 97.5 / 100, 75 / 80, 5 / 100, 10 / 80], abs=1e-6)  # airplane, clipped
    assert (root / "labels" / "test" / "c.txt").read_text() == ""
    assert (root / "train.txt").read_text() == "./images/trainval/a.png\n"

    cfg = tmp_path / "AI-TOD.yaml"
    shutil.copy(REPO / "datasets" / "AI-TOD.yaml", cfg)
    moved = tmp_path / "moved"  # './' list entries: the converted dataset can move with its config
    moved.mkdir()
    shutil.move(str(root), moved / "AI-TOD")
    shutil.move(str(cfg), moved / "AI-TOD.yaml")
    train = _ultralytics_labels(moved / "AI-TOD.yaml", "train")
    assert list(train) == ["a"] and [c for c, *_ in train["a"]] == [5, 0]
    assert train["a"][0][1:] == pytest.approx((0.14, 23 / 80, 0.08, 6 / 80), abs=1e-5)
    assert train["a"][1][1:] == pytest.approx((0.975, 75 / 80, 0.05, 0.125), abs=1e-5)
    val = _ultralytics_labels(moved / "AI-TOD.yaml", "val")
    assert list(val) == ["b"] and val["b"][0][0] == 7
    assert val["b"][0][1:] == pytest.approx((0.025, 2.5 / 80, 0.05, 5 / 80), abs=1e-5)


def test_coco_errors_are_precise(tmp_path):
    root = tmp_path / "AI-TOD"
    _aitod_fixture(root)
    ann = root / "annotations" / "aitod_train_v1.json"
    with pytest.raises(ValueError, match="differ from the expected"):
        coco_to_yolo(ann, root / "images" / "trainval", names=("a", "b"))
    with pytest.raises(ValueError, match="no 'images' folder"):
        coco_to_yolo(ann, tmp_path)
    with pytest.raises(FileNotFoundError, match="none of the 1 images"):
        coco_to_yolo(ann, root / "images" / "test")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="needs 'annotations'"):
        coco_to_yolo(bad, root / "images" / "trainval")



def test_convert_command_in_process(tmp_path, capsys):
    root = tmp_path / "AI-TOD"
    _aitod_fixture(root)
    assert convert_cli.main(["format=visdrone", f"root={tmp_path / 'nowhere'}"]) == 2
    assert "yolo-nonlocal convert: error: " in capsys.readouterr().err
    assert convert_cli.main(["format=coco", f"root={root}"]) == 2
    assert "format='coco' is not one of: visdrone, aitod" in capsys.readouterr().err
    assert convert_cli.main([f"root={root}"]) == 2
    assert "missing format=" in capsys.readouterr().err
    assert convert_cli.main(["format=aitod", f"root={root}"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "aitod_train_v1.json: images 1, kept 2, crowd_or_ignore 2, empty 0, missing_images 0"
    assert len(out) == 3 and (root / "labels" / "trainval" / "a.txt").is_file()
    assert convert_cli.main(["--help"]) == 0 and "format=FORMAT" in capsys.readouterr().out


def test_the_module_form_of_earlier_releases_still_converts(tmp_path, monkeypatch, capsys):
    import runpy
    import sys

    root = tmp_path / "AI-TOD"
    _aitod_fixture(root)
    monkeypatch.setattr(sys, "argv", ["converters", "aitod", str(root)])
    monkeypatch.delitem(sys.modules, "yolo_nonlocal.data.converters")  # run it as __main__, as python -m does
    with pytest.raises(SystemExit) as info:
        runpy.run_module("yolo_nonlocal.data.converters", run_name="__main__")
    assert info.value.code == 0
    captured = capsys.readouterr()
    assert "yolo-nonlocal convert format=aitod" in captured.err and "aitod_test_v1.json: images 1" in captured.out


def _exif_rotated_image(path: Path, stored_w: int, stored_h: int) -> None:
    """A JPEG stored ``stored_w`` x ``stored_h`` with EXIF orientation 6: decoders (and Ultralytics) show it turned."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (stored_w, stored_h), (90, 90, 90)).save(path, exif=exif.tobytes())


def test_exif_rotated_images_get_labels_of_the_displayed_size(tmp_path):
    """Labels normalised by the stored size land wrong on the turned image Ultralytics trains on."""
    root = tmp_path / "VisDrone"
    split = root / "VisDrone2019-DET-val"
    _exif_rotated_image(split / "images" / "0000001_r.jpg", 200, 100)  # displays 100 wide x 200 high
    (split / "annotations").mkdir(parents=True)
    (split / "annotations" / "0000001_r.txt").write_text("10,20,30,40,1,4,0,0\n")  # pixels of the displayed image
    convert_visdrone(root)
    assert _rows(split / "labels" / "0000001_r.txt") == [pytest.approx([3, 25 / 100, 40 / 200, 30 / 100, 40 / 200])]
    cfg = tmp_path / "VisDrone.yaml"
    shutil.copy(REPO / "datasets" / "VisDrone.yaml", cfg)
    labels = _ultralytics_labels(cfg, "val")  # Ultralytics itself: the same normalised box on the turned image
    assert labels["0000001_r"] == [pytest.approx((3, 0.25, 0.2, 0.3, 0.2), abs=1e-5)]

    aitod = tmp_path / "AI-TOD"
    _exif_rotated_image(aitod / "images" / "test" / "r.jpg", 200, 100)
    ann = aitod / "annotations" / "aitod_test_v1.json"
    ann.parent.mkdir(parents=True)
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(AITOD_NAMES)]
    box = {"id": 1, "image_id": 1, "category_id": 2, "bbox": [10, 20, 30, 40]}
    for width, height in ((0, 0), (100, 200)):  # no size in the JSON: the file's, as shown; or the shown size
        ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "r.jpg", "width": width, "height": height}],
                                   "annotations": [box], "categories": cats}))
        convert_aitod(aitod)
        assert _rows(aitod / "labels" / "test" / "r.txt") == [pytest.approx([1, 0.25, 0.2, 0.3, 0.2])]
    (aitod / "labels" / "test" / "r.txt").unlink()
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "r.jpg", "width": 200, "height": 100}],
                               "annotations": [box], "categories": cats}))
    with pytest.raises(ValueError, match=r"'r.jpg' is 200x100 in the JSON but 100x200 as Ultralytics sees it"):
        convert_aitod(aitod)
    assert not (aitod / "labels" / "test" / "r.txt").exists()  # refused before anything was written


def test_a_bad_row_stops_the_conversion_before_any_label_is_written(tmp_path):
    split = tmp_path / "VisDrone" / "VisDrone2019-DET-train"
    for stem, ann in (("0000001_a", "10,20,30,40,1,4,0,0\n"), ("0000002_b", "1,1,2,2,1,12,0,0\n")):
        _image(split / "images" / f"{stem}.jpg", 64, 64)
        (split / "annotations").mkdir(parents=True, exist_ok=True)
        (split / "annotations" / f"{stem}.txt").write_text(ann)
    with pytest.raises(ValueError, match=r"0000002_b\.txt:1: category 12 is outside"):
        convert_visdrone(tmp_path / "VisDrone")
    assert not (split / "labels").exists()
