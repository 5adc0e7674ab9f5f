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

Command line::

    python -m yolo_nonlocal.data.converters visdrone ROOT      # ROOT holds VisDrone2019-DET-*
    python -m yolo_nonlocal.data.converters aitod ROOT         # ROOT holds images/ and annotations/
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "VISDRONE_NAMES",
    "AITOD_NAMES",
    "visdrone_rows_to_yolo",
    "convert_visdrone_split",
    "convert_visdrone",
    "coco_to_yolo",
    "convert_aitod",
    "main",
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
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the image size ({e})") from e


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
    """Write ``split_dir/labels/*.txt`` from ``split_dir/annotations/*.txt`` (images in ``split_dir/images``)."""
    split_dir = Path(split_dir)
    ann_dir, img_dir, out_dir = split_dir / "annotations", split_dir / "images", split_dir / "labels"
    if not ann_dir.is_dir() or not img_dir.is_dir():
        raise FileNotFoundError(
            f"{split_dir} must hold annotations/ and images/ (an unpacked VisDrone2019-DET split archive)"
        )
    out_dir.mkdir(exist_ok=True)
    totals = {"images": 0, "kept": 0, "ignored_region": 0, "others": 0, "score0": 0, "empty": 0}
    images = {p.stem: p for p in img_dir.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES}
    for ann in sorted(ann_dir.glob("*.txt")):
        img = images.get(ann.stem)
        if img is None:
            raise FileNotFoundError(f"{ann} has no image {ann.stem}.* in {img_dir}")
        w, h = _image_size(img)
        rows, stats = visdrone_rows_to_yolo(ann.read_text(), w, h, source=str(ann))
        (out_dir / f"{ann.stem}.txt").write_text("".join(r + "\n" for r in rows))
        totals["images"] += 1
        for k, v in stats.items():
            totals[k] += v
    if totals["images"] == 0:
        raise FileNotFoundError(f"{ann_dir} holds no annotation .txt files")
    return totals


def convert_visdrone(root: str | Path) -> dict[str, dict[str, int]]:
    """Convert every VisDrone2019-DET split found under ``root``."""
    root = Path(root)
    found = [root / s for s in VISDRONE_SPLITS if (root / s).is_dir()]
    if not found:
        raise FileNotFoundError(f"{root} holds none of {', '.join(VISDRONE_SPLITS)}; unpack the archives there")
    return {d.name: convert_visdrone_split(d) for d in found}


def _labels_dir_for(images_dir: Path) -> Path:
    """Ultralytics' rule: the last ``images`` component of the path becomes ``labels``."""
    parts = list(images_dir.parts)
    if "images" not in parts:
        raise ValueError(f"{images_dir} has no 'images' folder in its path; Ultralytics could not find the labels")
    i = len(parts) - 1 - parts[::-1].index("images")
    parts[i] = "labels"
    return Path(*parts)


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
    labels_dir = _labels_dir_for(images_dir)
    by_image: dict[Any, list[dict]] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    stats = {"images": 0, "kept": 0, "crowd_or_ignore": 0, "empty": 0, "missing_images": 0}
    listed: list[Path] = []
    for im in coco["images"]:
        rel = Path(im["file_name"])
        img_path = images_dir / rel
        if not img_path.is_file():
            stats["missing_images"] += 1
            continue
        iw, ih = int(im.get("width") or 0), int(im.get("height") or 0)
        if iw <= 0 or ih <= 0:
            iw, ih = _image_size(img_path)
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
        out = (labels_dir / rel).with_suffix(".txt")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(r + "\n" for r in rows))
        listed.append(img_path.resolve())
        stats["images"] += 1
        stats["kept"] += len(rows)
    if stats["images"] == 0:
        raise FileNotFoundError(f"none of the {len(coco['images'])} images of {json_path} is in {images_dir}")
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: python -m yolo_nonlocal.data.converters {visdrone|aitod} ROOT   (see docs/datasets.md)"
    if not argv or argv[0] in {"-h", "--help"}:
        print(usage)
        return 0 if argv else 2
    if len(argv) != 2 or argv[0] not in {"visdrone", "aitod"}:
        print(usage, file=sys.stderr)
        return 2
    try:
        result = convert_visdrone(argv[1]) if argv[0] == "visdrone" else convert_aitod(argv[1])
    except (ValueError, FileNotFoundError) as e:
        print(f"dataset_converters: {e}", file=sys.stderr)
        return 2
    for part, stats in result.items():
        print(f"{part}: " + ", ".join(f"{k} {v}" for k, v in stats.items() if k != "names"))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
