"""Convert the public small-object benchmarks to YOLO labels: VisDrone-DET and AI-TOD.

Why: both are the usual places to measure small-object AP, and neither ships YOLO labels. Nothing here
downloads: you unpack the archives where the configs in ``datasets/`` point, and convert once.

VisDrone-DET (``VisDrone2019-DET-{train,val,test-dev}/annotations/*.txt``)
    One row per box: ``left,top,width,height,score,category,truncation,occlusion`` in pixels. Following
    VisDrone's evaluation convention, ``category 0`` ("ignored regions") and ``category 11`` ("others")
    are not objects, nor is any row with ``score 0`` (the box is ignored in evaluation); categories
    1..10 (pedestrian .. motor) become YOLO classes 0..9. Boxes are clipped to the image; rows without
    area after clipping are dropped. Labels go to ``<split>/labels/<stem>.txt`` next to ``<split>/images``.

AI-TOD (COCO JSON, e.g. ``annotations/aitod_trainval_v1.json`` with images in ``images/trainval``)
    :func:`coco_to_yolo` writes one label file per image listed in the JSON (empty for images without
    boxes) beside the images (``.../images/...`` -> ``.../labels/...``, as Ultralytics looks them up), and
    a list file of the images, so that train and val, which share an image folder, are selected by list.
    Category ids become contiguous classes in ascending id order; crowd boxes and boxes marked
    ``ignore`` are skipped.

Image sizes are the ones Ultralytics sees: EXIF orientation applied (:func:`yolo_nonlocal.utils.images.image_size`),
so a photo stored 4000 x 3000 that displays 3000 x 4000 gets labels normalised by 3000 x 4000. Each converter
reads and checks every annotation before it writes a label, so a malformed file stops it with nothing half-done.

Command line (:mod:`yolo_nonlocal.cli.convert`)::

    yolo-nonlocal convert format=visdrone root=ROOT      # ROOT holds VisDrone2019-DET-*
    yolo-nonlocal convert format=aitod root=ROOT         # ROOT holds images/ and annotations/

``python -m yolo_nonlocal.data.converters visdrone ROOT``, the form of earlier releases, still runs it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from yolo_nonlocal.metrics.datasets import has_images_folder, label_file_for
from yolo_nonlocal.utils.images import image_size, is_image

__all__ = [
    "VISDRONE_NAMES",
    "AITOD_NAMES",
    "visdrone_rows_to_yolo",
    "convert_visdrone_split",
    "convert_visdrone",
    "coco_to_yolo",
    "convert_aitod",
    "FORMATS",
]

VISDRONE_NAMES = (
    "pedestrian", "people", "bicycle", "car", "van", "truck", "tricycle", "awning-tricycle", "bus", "motor",
)  # fmt: skip
VISDRONE_SPLITS = ("VisDrone2019-DET-train", "VisDrone2019-DET-val", "VisDrone2019-DET-test-dev")
AITOD_NAMES = ("airplane", "bridge", "storage-tank", "ship", "swimming-pool", "vehicle", "person", "wind-mill")
AITOD_SPLITS = {  # annotation file -> (image folder, list file)
    "aitod_train_v1.json": ("images/trainval", "train.txt"),
    "aitod_val_v1.json": ("images/trainval", "val.txt"),
    "aitod_trainval_v1.json": ("images/trainval", "trainval.txt"),
    "aitod_test_v1.json": ("images/test", "test.txt"),
}


def _yolo_row(cls: int, x: float, y: float, w: float, h: float, iw: int, ih: int) -> str | None:
    """A normalised ``cls xc yc w h`` row for a pixel box, clipped to the image; None if nothing is left."""
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(float(iw), x + w), min(float(ih), y + h)
    if x1 <= x0 or y1 <= y0:
        return None
    return f"{cls} {(x0 + x1) / 2 / iw:.6f} {(y0 + y1) / 2 / ih:.6f} {(x1 - x0) / iw:.6f} {(y1 - y0) / ih:.6f}"


def visdrone_rows_to_yolo(text: str, width: int, height: int, source: str = "<annotation>") -> tuple[list[str], dict]:
    """YOLO rows for one VisDrone-DET annotation file's ``text``; also counts of what was kept and skipped."""
    rows: list[str] = []
    stats = {"kept": 0, "ignored_region": 0, "others": 0, "score0": 0, "empty": 0}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip().rstrip(",")
        if not line:
            continue
        parts = line.split(",")
        if len(parts) < 6:
            raise ValueError(
                f"{source}:{n}: {line!r} is not a VisDrone-DET row (left,top,width,height,score,category,...)"
            )
        try:
            x, y, w, h = (float(v) for v in parts[:4])
            score, cat = int(float(parts[4])), int(float(parts[5]))
        except ValueError:
            raise ValueError(f"{source}:{n}: {line!r} has a non-numeric field") from None
        if cat == 0:
            stats["ignored_region"] += 1
            continue
        if cat == 11:
            stats["others"] += 1
            continue
        if not 1 <= cat <= 10:
            raise ValueError(f"{source}:{n}: category {cat} is outside VisDrone-DET's 0..11")
        if score == 0:
            stats["score0"] += 1
            continue
        row = _yolo_row(cat - 1, x, y, w, h, width, height)
        if row is None:
            stats["empty"] += 1
            continue
        rows.append(row)
        stats["kept"] += 1
    return rows, stats


def convert_visdrone_split(split_dir: str | Path) -> dict[str, int]:
    """Write ``split_dir/labels/*.txt`` from ``split_dir/annotations/*.txt`` (images in ``split_dir/images``).

    Every annotation is read and checked before the first label is written.
    """
    split_dir = Path(split_dir)
    ann_dir, img_dir = split_dir / "annotations", split_dir / "images"
    if not ann_dir.is_dir() or not img_dir.is_dir():
        raise FileNotFoundError(
            f"{split_dir} must hold annotations/ and images/ (an unpacked VisDrone2019-DET split archive)"
        )
    totals = {"images": 0, "kept": 0, "ignored_region": 0, "others": 0, "score0": 0, "empty": 0}
    images = {p.stem: p for p in img_dir.iterdir() if is_image(p)}
    labels: list[tuple[Path, list[str]]] = []
    for ann in sorted(ann_dir.glob("*.txt")):
        img = images.get(ann.stem)
        if img is None:
            raise FileNotFoundError(f"{ann} has no image {ann.stem}.* in {img_dir}")
        w, h = image_size(img)
        rows, stats = visdrone_rows_to_yolo(ann.read_text(), w, h, source=str(ann))
        labels.append((Path(label_file_for(img.absolute())), rows))
        totals["images"] += 1
        for k, v in stats.items():
            totals[k] += v
    if totals["images"] == 0:
        raise FileNotFoundError(f"{ann_dir} holds no annotation .txt files")
    _write_labels(labels)
    return totals


def _write_labels(labels: list[tuple[Path, list[str]]]) -> None:
    for path, rows in labels:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(r + "\n" for r in rows))


def convert_visdrone(root: str | Path) -> dict[str, dict[str, int]]:
    """Convert every VisDrone2019-DET split found under ``root``."""
    root = Path(root)
    found = [root / s for s in VISDRONE_SPLITS if (root / s).is_dir()]
    if not found:
        raise FileNotFoundError(f"{root} holds none of {', '.join(VISDRONE_SPLITS)}; unpack the archives there")
    return {d.name: convert_visdrone_split(d) for d in found}


def _frame_size(json_path: Path, image: dict, img_path: Path) -> tuple[int, int]:
    """The (width, height) a COCO JSON's boxes are normalised by: the JSON's, else the image as Ultralytics sees it.

    A JSON size that is the displayed size turned by 90 degrees describes the stored pixels of an image with an
    EXIF orientation (or is wrong): its boxes would land rotated on the image Ultralytics loads, so it is refused.
    """
    shown = image_size(img_path)
    given = (int(image.get("width") or 0), int(image.get("height") or 0))
    if given[0] <= 0 or given[1] <= 0:
        return shown
    if given == shown[::-1] and shown[0] != shown[1]:
        raise ValueError(
            f"{json_path}: image {image.get('file_name')!r} is {given[0]}x{given[1]} in the JSON but "
            f"{shown[0]}x{shown[1]} as Ultralytics sees it (EXIF orientation applied), so its boxes are in another "
            "frame than the image trained on; re-save the image with its pixels rotated and no EXIF orientation, "
            "or give the JSON the displayed size and boxes, then convert again"
        )
    return given


def coco_to_yolo(
    json_path: str | Path,
    images_dir: str | Path,
    list_path: str | Path | None = None,
    names: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Write YOLO labels for every image of a COCO detection JSON; returns names and counts.

    Labels go beside the images (``images`` -> ``labels`` in the path); ``list_path`` (optional) receives
    the absolute image paths, one per line. ``names``, when given, must match the JSON's category names in
    ascending id order (a check that the file is the dataset you think it is).
    """
    json_path, images_dir = Path(json_path), Path(images_dir)
    try:
        coco = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{json_path}: not a readable COCO JSON ({e})") from e
    for key in ("images", "annotations", "categories"):
        if key not in coco:
            raise ValueError(f"{json_path}: a COCO detection JSON needs '{key}'")
    cats = sorted(coco["categories"], key=lambda c: c["id"])
    cat_to_cls = {c["id"]: i for i, c in enumerate(cats)}
    json_names = tuple(c["name"] for c in cats)
    if names is not None and tuple(names) != json_names:
        raise ValueError(f"{json_path}: categories {json_names} differ from the expected {tuple(names)}")
    if not has_images_folder(images_dir):
        raise ValueError(f"{images_dir} has no 'images' folder in its path; Ultralytics could not find the labels")
    by_image: dict[Any, list[dict]] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    stats = {"images": 0, "kept": 0, "crowd_or_ignore": 0, "empty": 0, "missing_images": 0}
    listed: list[Path] = []
    labels: list[tuple[Path, list[str]]] = []
    for im in coco["images"]:
        img_path = images_dir / im["file_name"]
        if not img_path.is_file():
            stats["missing_images"] += 1
            continue
        iw, ih = _frame_size(json_path, im, img_path)
        rows = []
        for a in by_image.get(im["id"], []):
            if a.get("iscrowd", 0) or a.get("ignore", 0):
                stats["crowd_or_ignore"] += 1
                continue
            if a["category_id"] not in cat_to_cls:
                raise ValueError(f"{json_path}: annotation {a.get('id')} has unknown category_id {a['category_id']}")
            row = _yolo_row(cat_to_cls[a["category_id"]], *(float(v) for v in a["bbox"]), iw, ih)
            if row is None:
                stats["empty"] += 1
                continue
            rows.append(row)
        labels.append((Path(label_file_for(img_path.absolute())), rows))
        listed.append(img_path.resolve())
        stats["images"] += 1
        stats["kept"] += len(rows)
    if stats["images"] == 0:
        raise FileNotFoundError(f"none of the {len(coco['images'])} images of {json_path} is in {images_dir}")
    _write_labels(labels)
    if list_path is not None:
        # './'-relative entries (Ultralytics resolves them against the list's folder): the dataset can move
        base = Path(list_path).resolve().parent
        lines = [f"./{p.relative_to(base).as_posix()}" if p.is_relative_to(base) else str(p) for p in listed]
        Path(list_path).write_text("".join(line + "\n" for line in lines))
    return {"names": list(json_names), **stats}


def convert_aitod(root: str | Path) -> dict[str, dict[str, Any]]:
    """Convert every AI-TOD annotation JSON found in ``root/annotations`` (see ``AITOD_SPLITS``)."""
    root = Path(root)
    done = {}
    for ann, (img_rel, list_name) in AITOD_SPLITS.items():
        path = root / "annotations" / ann
        if path.is_file():
            done[ann] = coco_to_yolo(path, root / img_rel, root / list_name, names=AITOD_NAMES)
    if not done:
        raise FileNotFoundError(f"{root / 'annotations'} holds none of {', '.join(AITOD_SPLITS)}")
    return done


FORMATS: dict[str, Any] = {"visdrone": convert_visdrone, "aitod": convert_aitod}  # format= -> converter


if __name__ == "__main__":  # pragma: no cover - the form of earlier releases: visdrone ROOT
    from yolo_nonlocal.cli.convert import legacy_main

    sys.exit(legacy_main(sys.argv[1:]))
