"""yolo_nonlocal.metrics (datasets, ground truth, predictions, COCO core) and ``yolo-nonlocal eval`` against
pycocotools run directly on the same ground truth and detections.

The dataset is written here from boxes known in pixels (image sizes and box coordinates are powers-of-two
fractions, so the YOLO labels round-trip exactly); the reference COCO dict is built from those same pixel
boxes, with its own image and category ids, and never by the code under test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from yolo_nonlocal.cli import eval as eval_cli
from yolo_nonlocal.metrics import coco as ce
from yolo_nonlocal.metrics import ground_truth as gtm

NAMES = ["car", "person", "never"]  # class 2 has no ground truth
# (stem, suffix, width, height, [(class, x0, y0, w, h) in pixels]); None = no label file at all
IMAGES = [
    ("img_a", "png", 512, 256, [(0, 10, 12, 4, 5), (1, 40, 20, 10, 12), (0, 100, 30, 20, 24), (1, 200, 60, 48, 64),
                                (0, 300, 40, 150, 200), (1, 60, 100, 6, 6)]),
    ("0007", "jpg", 256, 512, [(0, 8, 8, 3, 2), (1, 30, 40, 12, 14), (0, 100, 100, 28, 30), (1, 20, 300, 100, 120)]),
    ("img_c", "png", 1024, 512, [(1, 500, 100, 200, 180), (0, 50, 50, 64, 40), (1, 900, 400, 14, 10),
                                 (0, 700, 300, 7, 7), (0, 600, 200, 1, 1)]),
    ("empty_labels", "png", 256, 256, []),
    ("no_label_file", "png", 256, 256, None),
]


def _write_dataset(root: Path) -> Path:
    import cv2
    import yaml

    for stem, suffix, w, h, boxes in IMAGES:
        (root / "images" / "val").mkdir(parents=True, exist_ok=True)
        (root / "labels" / "val").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "images" / "val" / f"{stem}.{suffix}"), np.full((h, w, 3), 127, np.uint8))
        if boxes is None:
            continue
        rows = [f"{c} {(x + bw / 2) / w!r} {(y + bh / 2) / h!r} {bw / w!r} {bh / h!r}" for c, x, y, bw, bh in boxes]
        if stem == "img_a":
            rows.append(rows[0])  # a duplicate row: Ultralytics drops it, and so must the ground truth
        (root / "labels" / "val" / f"{stem}.txt").write_text("\n".join(rows) + "\n")
    data = {"path": str(root), "train": "images/val", "val": "images/val", "names": dict(enumerate(NAMES))}
    (root / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root / "data.yaml"


def _detections(seed: int = 0) -> list[dict]:
    """Jittered true positives, class confusions, duplicates and false positives (on every image), pixel boxes."""
    rng = np.random.default_rng(seed)
    dets = []
    for stem, _, w, h, boxes in IMAGES:
        image_id = int(stem) if stem.isnumeric() else stem
        for c, x, y, bw, bh in boxes or []:
            for _ in range(int(rng.integers(0, 3))):
                jx, jy = rng.normal(0, 0.15 * max(bw, 2), 2)
                sw, sh = np.exp(rng.normal(0, 0.2, 2))
                cls = c if rng.random() > 0.15 else int(rng.integers(0, 3))
                dets.append({"image_id": image_id, "category_id": cls + 1,
                             "bbox": [float(x + jx), float(y + jy), float(bw * sw), float(bh * sh)],
                             "score": float(rng.random())})
        for _ in range(3):  # false positives of every size
            bw, bh = (float(v) for v in rng.uniform(2, 120, 2))
            dets.append({"image_id": image_id, "category_id": int(rng.integers(1, 4)),
                         "bbox": [float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh)), bw, bh],
                         "score": float(rng.random())})
    return dets


def _reference_stats(dets: list[dict], ranges: list[list[float]] | None = None) -> list[float]:
    """pycocotools' own summarize() stats on a COCO dict built here from the pixel boxes (ids of its own)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    image_ids = {stem: 101 + 7 * i for i, (stem, *_rest) in enumerate(IMAGES)}  # unrelated to the tool's ids
    gt = {"images": [{"id": image_ids[s], "width": w, "height": h} for s, _, w, h, _b in IMAGES],
          "categories": [{"id": 11 + i} for i in range(len(NAMES))], "annotations": []}
    for stem, _, w, h, boxes in IMAGES:
        for c, x, y, bw, bh in boxes or []:
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image_ids[stem],
                                      "category_id": 11 + c, "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0})
    res = [{**d, "image_id": image_ids[str(d["image_id"]).zfill(4) if isinstance(d["image_id"], int) else d["image_id"]],
            "category_id": 10 + d["category_id"]} for d in dets]
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        if res:
            coco_dt = coco_gt.loadRes(res)
        else:  # loadRes cannot take [], an empty result set is the same evaluation
            coco_dt = COCO()
            coco_dt.dataset = {"images": gt["images"], "categories": gt["categories"], "annotations": []}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        if ranges is not None:  # summarize() reads ranges by label: relabel so stats[3], stats[4] are ours
            ev.params.areaRng = ranges
            ev.params.areaRngLbl = ["all", "small", "medium", "large"][: len(ranges)]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return _write_dataset(tmp_path_factory.mktemp("coco_eval_ds"))


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_NONLOCAL_CACHE_DIR", str(tmp_path / "cache"))
    gtm.clear_memory_cache()


BACKENDS = ["pycocotools", "faster-coco-eval"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_every_number_matches_pycocotools(dataset, backend, seed):
    dets = _detections(seed)
    ref = _reference_stats(dets)
    got = ce.evaluate(dataset, dets, backend=backend)
    assert list(got) == ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    np.testing.assert_allclose([got[k] for k in got], ref[:6], atol=1e-6, rtol=0)
    assert 0 < got["AP"] < 1 and got["APl"] > 0  # a non-trivial evaluation, every range populated


@pytest.mark.parametrize("backend", BACKENDS)
def test_tiny_ranges_match_cocoeval_with_area_ranges_set_by_hand(dataset, backend):
    dets = _detections(2)
    got = ce.evaluate(dataset, dets, backend=backend, tiny=True)
    assert list(got)[-2:] == ["APvt", "APt"]
    ref = _reference_stats(dets, ranges=[[0, 1e10], [2**2, 8**2], [8**2, 16**2], [1e9, 1e10]])
    np.testing.assert_allclose([got["AP"], got["APvt"], got["APt"]], [ref[0], ref[3], ref[4]], atol=1e-6, rtol=0)
    coco = _reference_stats(dets)  # APs/APm/APl keep COCO's meaning in tiny mode
    np.testing.assert_allclose([got["APs"], got["APm"], got["APl"]], coco[3:6], atol=1e-6, rtol=0)
    assert got["APvt"] != got["APs"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_predictions_file(dataset, backend, tmp_path):
    (tmp_path / "empty.json").write_text("[]")
    got = ce.evaluate(dataset, tmp_path / "empty.json", backend=backend, tiny=True)
    assert got == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "APs": 0.0, "APm": 0.0, "APl": 0.0, "APvt": 0.0, "APt": 0.0}
    assert [got[k] for k in ce.STAT_KEYS] == pytest.approx(_reference_stats([])[:6], abs=1e-6)


def test_ground_truth_in_original_pixels(dataset):
    gt = ce.build_ground_truth(dataset, "val")
    by_name = {img["file_name"]: img for img in gt["images"]}
    assert sorted(by_name) == sorted(f"{s}.{x}" for s, x, *_ in IMAGES)  # images without labels are kept
    assert (by_name["0007.jpg"]["width"], by_name["0007.jpg"]["height"]) == (256, 512)
    assert gt["categories"] == [{"id": i + 1, "name": n} for i, n in enumerate(NAMES)]
    for stem, suffix, w, h, boxes in IMAGES:
        image_id = by_name[f"{stem}.{suffix}"]["id"]
        anns = [a for a in gt["annotations"] if a["image_id"] == image_id]
        want = sorted((c + 1, [float(x), float(y), float(bw), float(bh)]) for c, x, y, bw, bh in boxes or [])
        assert sorted((a["category_id"], a["bbox"]) for a in anns) == want  # the duplicate row is gone
        assert all(a["area"] == a["bbox"][2] * a["bbox"][3] and a["iscrowd"] == 0 for a in anns)
    assert len({a["id"] for a in gt["annotations"]}) == len(gt["annotations"]) and min(a["id"] for a in gt["annotations"]) >= 1


def test_ground_truth_is_cached_and_rebuilt_when_a_label_changes(dataset, tmp_path, monkeypatch):
    gt = ce.build_ground_truth(dataset)
    cached = list((tmp_path / "cache" / "coco_gt").glob("*.json"))
    assert len(cached) == 1
    gtm.clear_memory_cache()

    def no_reads(path):
        raise AssertionError("the cached ground truth should have been used")

    monkeypatch.setattr(gtm, "image_size", no_reads)
    assert ce.build_ground_truth(dataset) == gt  # from the file cache, no image opened
    monkeypatch.undo()
    monkeypatch.setenv("YOLO_NONLOCAL_CACHE_DIR", str(tmp_path / "cache"))

    root = tmp_path / "copy"
    data = _write_dataset(root)
    before = ce.build_ground_truth(data)
    label = root / "labels" / "val" / "empty_labels.txt"
    label.write_text("2 0.5 0.5 0.25 0.25\n")
    os.utime(label, ns=(1, 1))  # a different mtime even on coarse file systems
    after = ce.build_ground_truth(data)
    assert len(after["annotations"]) == len(before["annotations"]) + 1
    image_id = next(img["id"] for img in after["images"] if img["file_name"] == "empty_labels.png")
    assert [(a["category_id"], a["bbox"]) for a in after["annotations"] if a["image_id"] == image_id] == [
        (3, [96.0, 96.0, 64.0, 64.0])]


def test_cache_beside_labels_falls_back_to_user_cache_when_read_only(tmp_path, monkeypatch):
    monkeypatch.delenv("YOLO_NONLOCAL_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    data = _write_dataset(tmp_path / "ro")
    real_write = gtm._write_json_atomic

    def read_only_dataset(path, obj):
        if str(path).startswith(str(tmp_path / "ro")):
            raise PermissionError(13, "Read-only file system", str(path))
        real_write(path, obj)

    monkeypatch.setattr(gtm, "_write_json_atomic", read_only_dataset)
    gt = ce.build_ground_truth(data)
    assert len(list((tmp_path / "xdg" / "yolo-nonlocal" / "coco_gt").glob("*.json"))) == 1
    assert not list((tmp_path / "ro").rglob("*.coco-gt-*.json"))
    gtm.clear_memory_cache()
    monkeypatch.setattr(gtm, "image_size", lambda path: pytest.fail("the user-cache copy should have been used"))
    assert ce.build_ground_truth(data) == gt


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_cache_beside_labels_is_readable_like_a_normal_file(tmp_path, monkeypatch, umask):
    """Issue 11: the cache beside a shared dataset's labels was 0600 (mkstemp); Ultralytics' val.cache is 0644."""
    monkeypatch.delenv("YOLO_NONLOCAL_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    data = _write_dataset(tmp_path / "shared")
    old = os.umask(umask)
    try:
        ce.build_ground_truth(data)
        (tmp_path / "plain.txt").write_text("a file written the ordinary way")
    finally:
        os.umask(old)
    (cache,) = (tmp_path / "shared" / "labels").glob("val.coco-gt-*.json")
    mode = cache.stat().st_mode & 0o777
    assert mode == (tmp_path / "plain.txt").stat().st_mode & 0o777 == 0o666 & ~umask
    assert mode == {0o022: 0o644, 0o027: 0o640}[umask]
    assert not list((tmp_path / "shared" / "labels").glob("*.tmp"))  # no temporary file left behind
    assert not (tmp_path / "xdg").exists()  # beside the labels was writable: the user cache is not used


def test_importing_the_metrics_package_loads_no_framework():
    code = ("import sys, yolo_nonlocal.metrics as m\n"
            "assert not {'numpy', 'torch', 'ultralytics'} & set(sys.modules), sorted(sys.modules)\n"
            "from yolo_nonlocal.metrics.coco import (evaluate, cocoeval_stats, resolve_backend, ground_truth_for_images,"
            " STAT_KEYS, TINY_STAT_KEYS, CocoEvalError, build_ground_truth, load_data_config)\n"
            "assert m.evaluate is evaluate and m.STAT_KEYS is STAT_KEYS and m.CocoEvalError is CocoEvalError\n"
            "assert m.load_data_config.__module__ == 'yolo_nonlocal.metrics.datasets'\n"
            "assert not {'torch', 'ultralytics'} & set(sys.modules)\n"
            "try:\n    m.no_such_name\nexcept AttributeError as e:\n    assert 'no_such_name' in str(e)\n"
            "else:\n    raise SystemExit('no AttributeError')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "YOLO_NONLOCAL_NO_AUTOREGISTER": "1"})
    assert proc.returncode == 0, proc.stderr


def test_data_config_serves_every_caller(tmp_path):
    import yaml

    from yolo_nonlocal.metrics import datasets

    repo = Path(__file__).resolve().parents[2]
    shipped = repo / "datasets" / "context.yaml"  # the synthetic sets carry train_args for compare
    cfg = datasets.load_data_config(shipped)
    raw = yaml.safe_load(shipped.read_text())
    assert cfg["train_args"] == raw["train_args"] and cfg["train_args"]
    assert cfg["root"] == shipped.parent and cfg["names"] == [raw["names"][i] for i in range(len(raw["names"]))]
    bare = tmp_path / "bare.yaml"
    bare.write_text("val: images\nnc: 2\n")
    assert datasets.load_data_config(bare)["train_args"] == {}
    assert datasets.load_data_config(bare)["names"] == ["class_0", "class_1"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("val: images\nnames: [a]\ntrain_args: [mosaic, 0]\n")
    with pytest.raises(datasets.DataConfigError, match=r"'train_args' must be a mapping .*train_args: \{mosaic: 0\}"):
        datasets.load_data_config(bad)
    with pytest.raises(ce.CocoEvalError, match=r"nowhere\.yaml' does not exist"):  # the error of earlier releases
        datasets.load_data_config(tmp_path / "nowhere.yaml")
    assert issubclass(datasets.DataConfigError, ce.CocoEvalError) and issubclass(ce.CocoEvalError, ValueError)
    assert datasets.label_file_for(os.path.join(os.sep, "d", "images", "v", "images", "x.y.jpg")) == os.path.join(
        os.sep, "d", "images", "v", "labels", "x.y.txt")  # the last images/ folder, the last suffix


@pytest.mark.parametrize("backend", BACKENDS)
def test_string_and_int_image_ids(dataset, backend):
    dets = _detections(3)
    # Ultralytics/YOLOv5/YOLOv7 write int(stem) for numeric stems; the stem string itself must work too
    as_string = [{**d, "image_id": "0007"} if d["image_id"] == 7 else d for d in dets]
    a = ce.evaluate(dataset, dets, backend=backend)
    b = ce.evaluate(dataset, as_string, backend=backend)
    assert a == b and a["AP"] > 0
    assert any(isinstance(d["image_id"], str) for d in dets)  # faster-coco-eval itself rejects these


def test_category_id_conventions(dataset, tmp_path):
    dets = _detections(4)
    one_based = ce.evaluate(dataset, dets)
    zero_based = [{**d, "category_id": d["category_id"] - 1} for d in dets]
    assert ce.evaluate(dataset, zero_based) == one_based  # auto: id 0 occurs -> 0-based
    assert ce.evaluate(dataset, zero_based, category_ids=0) == one_based
    assert ce.evaluate(dataset, dets, category_ids="1") == one_based
    # ids 1..nc-1 only: ambiguous, 1-based assumed with a warning; category_ids=0 reads them as 0-based
    ambiguous = [d for d in dets if d["category_id"] in (1, 2)]
    with pytest.warns(ce.CategoryIdWarning, match="category_ids=0"):
        assert ce.evaluate(dataset, ambiguous) == ce.evaluate(dataset, ambiguous, category_ids=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shifted = ce.evaluate(dataset, ambiguous, category_ids=0)
    assert shifted == ce.evaluate(dataset, [{**d, "category_id": d["category_id"] + 1} for d in ambiguous])
    with pytest.raises(ce.CocoEvalError, match=r"predictions\[\d+\].*category_id 0 is out of range.*1\.\.3"):
        ce.evaluate(dataset, zero_based, category_ids=1)


def test_coco91_ids_on_an_80_class_dataset(tmp_path):
    import cv2
    import yaml

    root = tmp_path / "coco80"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    cv2.imwrite(str(root / "images" / "000000000139.jpg"), np.zeros((64, 128, 3), np.uint8))
    (root / "labels" / "000000000139.txt").write_text("79 0.5 0.5 0.25 0.5\n0 0.25 0.25 0.125 0.25\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"path": str(root), "train": "images", "val": "images",
                                                    "names": [f"c{i}" for i in range(80)]}))
    dets = [{"image_id": 139, "category_id": 90, "bbox": [48, 16, 32, 32], "score": 0.9},  # class 79 -> COCO id 90
            {"image_id": 139, "category_id": 1, "bbox": [24, 8, 16, 16], "score": 0.8}]
    assert ce.evaluate(root / "data.yaml", dets)["AP"] == pytest.approx(1.0)
    assert ce.evaluate(root / "data.yaml", dets, category_ids="coco91")["AP"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("mutate", "split", "message"),
    [
        (lambda d: d + [{"image_id": "not_there", "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}], "val",
         r"predictions\[\d+\] .*not_there.*image_id 'not_there' is not the stem of any image"),
        (lambda d: d[:2] + [{"image_id": 7, "category_id": 9, "bbox": [0, 0, 1, 1], "score": 0.5}] + d[2:], "val",
         r"predictions\[2\] .*category_id 9 is out of range"),
        (lambda d: d[:1] + [{"image_id": 7, "category_id": 1, "bbox": [0, 0, 1], "score": 0.5}], "val",
         r"predictions\[1\] .*'bbox' must be \[x, y, width, height\]"),
        (lambda d: d[:3] + [{"image_id": 7, "category_id": 1, "bbox": [0, 0, 1, 1]}], "val",
         r"predictions\[3\] .*missing score"),
        (lambda d: d[:1] + [{"image_id": 7.5, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}], "val",
         r"predictions\[1\] .*'image_id' must be the image file stem"),
        (lambda d: d[:2] + [[7, 1, [0, 0, 1, 1], 0.5]], "val", r"predictions\[2\] \[7, 1, .*must be an object"),
        (lambda d: d[:1] + [{"image_id": 7, "bbox": [0, 0, 1, 1], "score": 0.5}], "val",
         r"predictions\[1\] .*missing category_id"),
        (lambda d: d, "test", r"has no 'test' split; it defines: train, val"),
        (lambda d: {"images": [], "annotations": []}, "val", r"is a COCO dataset dict"),
    ],
)
def test_bad_input_names_the_first_offending_entry(dataset, tmp_path, mutate, split, message):
    path = tmp_path / "pred.json"
    path.write_text(json.dumps(mutate(_detections(5))))
    with pytest.raises(ValueError, match=message) as info:
        ce.evaluate(dataset, path, split=split)
    assert isinstance(info.value, ce.CocoEvalError)


def test_malformed_json_and_labels_are_reported_with_their_location(dataset, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"image_id": 7, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5},\n {"image_id": ]')
    with pytest.raises(ce.CocoEvalError, match=r"bad\.json' is not valid JSON: .* line 2, column 15"):
        ce.evaluate(dataset, bad)
    root = tmp_path / "badlabels"
    data = _write_dataset(root)
    (root / "labels" / "val" / "img_c.txt").write_text("1 0.5 0.5 0.1 0.1\n\n0 0.5 0.5 0.1\n")
    with pytest.raises(ce.CocoEvalError, match=r"img_c\.txt:3: 4 values"):
        ce.build_ground_truth(data)
    (root / "labels" / "val" / "img_c.txt").write_text("3 0.5 0.5 0.1 0.1\n")
    with pytest.raises(ce.CocoEvalError, match=r"img_c\.txt:1: class 3 is not one of the dataset's class indices 0\.\.2"):
        ce.build_ground_truth(data)


def test_data_yaml_forms_txt_lists_segments_and_exif(tmp_path):
    import cv2
    import yaml
    from PIL import Image

    root = tmp_path / "forms"
    for d in ("images/a", "images/b", "labels/a", "labels/b"):
        (root / d).mkdir(parents=True)
    cv2.imwrite(str(root / "images/a/x.png"), np.zeros((64, 128, 3), np.uint8))
    (root / "labels/a/x.txt").write_text("0 0.25 0.25 0.75 0.25 0.75 0.75 0.5 1.0\n")  # a polygon -> its box
    # stored 128 wide x 64 high, EXIF orientation 6 (rotate 90): decoders, and Ultralytics, see 64 x 128
    exif = Image.Exif()
    exif[274] = 6
    Image.new("RGB", (128, 64)).save(root / "images/b/y.jpg", exif=exif.tobytes())
    (root / "labels/b/y.txt").write_text("0 0.5 0.5 0.5 0.25\n")
    (root / "list.txt").write_text("./images/a/x.png\n./images/b/y.jpg\n")
    gt_list = ce.build_ground_truth({"path": str(root), "val": "list.txt", "names": ["only"]})
    gt_dirs = ce.build_ground_truth({"path": str(root), "val": ["images/a", "images/b"], "names": {0: "only"}})
    assert gt_list["images"] == gt_dirs["images"] and gt_list["annotations"] == gt_dirs["annotations"]
    sizes = {img["file_name"]: (img["width"], img["height"]) for img in gt_list["images"]}
    assert sizes == {"x.png": (128, 64), "y.jpg": (64, 128)}
    boxes = sorted(a["bbox"] for a in gt_list["annotations"])
    assert boxes == [[16.0, 48.0, 32.0, 32.0], [32.0, 16.0, 64.0, 48.0]]
    (root / "data.yaml").write_text(yaml.safe_dump({"path": str(root), "val": "missing_dir", "names": ["only"]}))
    with pytest.raises(ce.CocoEvalError, match=r"split 'val': 'missing_dir' resolves to .*missing_dir"):
        ce.build_ground_truth(root / "data.yaml")


def test_cli_writes_out_json_in_a_subprocess(dataset, tmp_path, console_script):
    """The smoke test of the installed command; everything else about it is tested in-process."""
    dets = _detections(6)
    (tmp_path / "pred.json").write_text(json.dumps(dets))
    out = tmp_path / "out" / "stats.json"
    cmd = [console_script, "eval", f"data={dataset}", f"predictions={tmp_path / 'pred.json'}",
           f"json={out}", "tiny=True", "backend=pycocotools"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(out.read_text())
    assert list(stats) == [*ce.STAT_KEYS, *ce.TINY_STAT_KEYS]
    assert stats == pytest.approx(ce.evaluate(dataset, dets, tiny=True), abs=1e-12)
    assert "AP50" in proc.stdout and f"{stats['AP']:.4f}" in proc.stdout and "category ids 1-based" in proc.stdout


def test_cli_argument_errors_return_2(dataset, capsys):
    assert eval_cli.main([f"data={dataset}"]) == 2
    assert "yolo-nonlocal eval: error: missing predictions=" in capsys.readouterr().err
    assert eval_cli.main([f"data={dataset}", "predictions=x.json", "color=red"]) == 2
    assert "yolo-nonlocal eval: error: unknown argument 'color'" in capsys.readouterr().err
    assert eval_cli.main([f"data={dataset}", "predictions=x.json", "tiny=maybe"]) == 2
    assert "tiny='maybe' is not a boolean" in capsys.readouterr().err
    assert eval_cli.main([f"data={dataset}", "predictions=x.json", "split=val", "split=test"]) == 2
    assert "'split' is given twice" in capsys.readouterr().err
    assert eval_cli.main([f"data={dataset}", "predictions=x.json", "max_det=5"]) == 2
    assert "did you mean max_dets=?" in capsys.readouterr().err
    assert eval_cli.main([f"data={dataset}", "predictions=x.json", "max_dets=many"]) == 2
    assert "max_dets='many' must be an integer" in capsys.readouterr().err
    assert eval_cli.main([f"data={dataset}", "predictions=x.json", "backend=tensorflow"]) == 2
    assert "backend='tensorflow' is not one of auto, pycocotools, faster-coco-eval" in capsys.readouterr().err
    assert eval_cli.main([f"data={dataset.parent / 'nope.yaml'}", "predictions=x.json"]) == 2
    assert "nope.yaml' does not exist" in capsys.readouterr().err
    assert eval_cli.main([f"data={dataset}", f"predictions={dataset.parent / 'nope.json'}"]) == 2
    assert "nope.json' does not exist" in capsys.readouterr().err
    assert eval_cli.main(["--help"]) == 0
    assert "category_ids" in capsys.readouterr().out


def test_cli_in_process_prints_the_table_warns_and_writes_json(dataset, tmp_path, capsys):
    dets = [d for d in _detections(7) if d["category_id"] in (1, 2)]  # ambiguous ids: 1-based with a warning
    (tmp_path / "pred.json").write_text(json.dumps(dets))
    out = tmp_path / "deep" / "stats.json"
    argv = [f"data={dataset}", f"predictions={tmp_path / 'pred.json'}", f"json={out}", "backend=pycocotools"]
    assert eval_cli.main(argv) == 0
    captured = capsys.readouterr()
    with pytest.warns(ce.CategoryIdWarning):
        want = ce.evaluate(dataset, dets, backend="pycocotools")
    assert json.loads(out.read_text()) == pytest.approx(want, abs=1e-12)
    assert "yolo-nonlocal eval: warning: category ids 1..2 fit both" in captured.err
    lines = captured.out.splitlines()
    assert lines[0].startswith("COCO bbox AP (pycocotools): 5 images, 15 objects, ")
    assert lines[1].split() == list(ce.STAT_KEYS)
    assert lines[2].split() == [f"{want[k]:.4f}" for k in ce.STAT_KEYS]
    assert lines[3] == f"Saved {out}"
    (tmp_path / "file").write_text("")
    assert eval_cli.main([*argv[:2], f"json={tmp_path / 'file' / 'stats.json'}"]) == 2  # a file where a folder goes
    assert "yolo-nonlocal eval: error: cannot write json=" in capsys.readouterr().err


def test_format_stats_marks_ranges_without_ground_truth():
    text = eval_cli.format_stats({"AP": 0.5, "AP50": 1.0, "AP75": 0.25, "APs": -1.0, "APm": 0.125, "APl": -1.0})
    assert text.splitlines() == ["    AP    AP50    AP75  APs     APm  APl",
                                 "0.5000  1.0000  0.2500    -  0.1250    -"]


def test_a_stem_shared_by_two_images_needs_file_name(tmp_path):
    import cv2

    root = tmp_path / "dup"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for suffix, w in (("png", 64), ("jpg", 128)):
        cv2.imwrite(str(root / "images" / f"1.{suffix}"), np.zeros((64, w, 3), np.uint8))
    (root / "labels" / "1.txt").write_text("0 0.5 0.5 0.5 0.5\n")  # both images share it (same stem)
    data = {"path": str(root), "val": "images", "names": ["a"]}
    det = {"image_id": 1, "category_id": 0, "bbox": [32, 16, 64, 32], "score": 0.9}
    with pytest.raises(ce.CocoEvalError, match=r"predictions\[0\] .*image_id 1 is the stem of 2 images.*file_name"):
        ce.evaluate(data, [det])
    both = [{**det, "file_name": "1.jpg"}, {**det, "bbox": [16, 16, 32, 32], "file_name": "1.png"}]
    assert ce.evaluate(data, both)["AP"] == pytest.approx(1.0)
    assert ce.evaluate(data, both[:1])["AP50"] == pytest.approx(51 / 101)  # recall 0.5: 51 of COCO's 101 points


def test_coco91_ids_are_ultralytics_mapping():
    from ultralytics.data.converter import coco80_to_coco91_class

    assert list(ce.COCO91_IDS) == list(coco80_to_coco91_class())
