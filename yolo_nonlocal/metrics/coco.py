"""COCO AP and small-object AP for any YOLO-format detection dataset.

What
    Scores detections (a COCO results JSON, or a list of dicts) against the ground truth of a YOLO-format
    dataset, with a well-kept COCO evaluator: faster-coco-eval when it is installed (same numbers, ~8x
    faster), else pycocotools. Returns AP, AP50, AP75 and the area-range APs as fractions, optionally with
    the tiny-object ranges of AI-TOD / VisDrone style benchmarks.

Why
    The question users of this package ask is "did small-object AP go up?". Ultralytics' mAP50-95 has no
    area ranges and YOLOv5/YOLOv7 give APs only for COCO itself; this module gives COCO's numbers for any
    dataset in YOLO format, with box areas in original-image pixels (the areas COCO's ranges are defined on).

Public API (stable; used by ``yolo_nonlocal.integrations.ultralytics.metrics`` and the ``yolo-nonlocal eval`` command)
    ``evaluate(data, predictions, split="val", *, category_ids="auto", tiny=False, backend="auto",
    max_dets=100) -> dict[str, float]``
        ``data``: a data YAML path as Ultralytics reads it (``path``; ``train``/``val``/``test`` each a
        directory, a list of directories or a ``.txt`` list of image paths; ``names`` as list or dict, or
        ``nc``), or the same content as a dict. Labels are found by Ultralytics' rule: the last ``/images/``
        of an image path becomes ``/labels/`` and the extension ``.txt``. ``predictions``: a path to a COCO
        results JSON or a list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` dicts,
        boxes in original-image pixels. ``image_id`` is the image file stem, as Ultralytics, YOLOv5 and
        YOLOv7 write it (an int when the stem is numeric, else the stem string). ``category_ids`` says how
        ``category_id`` maps to the YOLO class index ``c``: ``0`` (``c``: YOLOv5, YOLOv7 and old
        Ultralytics releases on custom datasets), ``1`` (``c + 1``: current Ultralytics releases),
        ``"coco91"`` (the 91-id COCO list that every tool writes for COCO itself), or ``"auto"``
        (default): 0-based when an id 0 occurs, 1-based when the id ``nc`` occurs, ``coco91`` for an
        80-class dataset whose ids exceed 80; when none of these decides (every id in ``1..nc-1``) it falls
        back to 1-based, what current Ultralytics writes, and warns (``CategoryIdWarning``).
        Returns ``{"AP", "AP50", "AP75", "APs", "APm", "APl"}`` (plus ``"APvt"``, ``"APt"`` when ``tiny``)
        as fractions in [0, 1], or -1.0 where the range holds no ground truth (as COCOeval reports it).
    ``build_ground_truth(data, split="val") -> dict``
        The COCO ground-truth dict of a split: ``images`` (``id`` 1..N in sorted path order,
        ``file_name``, ``width``, ``height`` (EXIF-corrected, as Ultralytics sees the image) and ``path``),
        ``annotations`` (``bbox`` ``[x, y, w, h]`` in original-image pixels clipped to the image, ``area`` =
        ``w * h``, ``iscrowd`` 0) and ``categories`` (``id`` = class index + 1, ``name``). Cached on disk
        (see ``ground_truth_for_images``).
    ``ground_truth_for_images(image_files, names, *, kpt_shape=None, cache=True) -> dict``
        The same for an explicit image list (what a validator evaluated).
    ``cli(argv) -> int``: ``yolo-nonlocal eval data=DATA.yaml predictions=PRED.json [split=val]
        [json=OUT.json] [tiny=True] [category_ids=auto|0|1|coco91] [backend=auto|pycocotools|faster-coco-eval]
        [max_dets=100]``.

Area ranges (box area ``w * h`` in original-image pixels; both ends inclusive, as in COCOeval)
    ``APs``: area <= 32**2, ``APm``: 32**2..96**2, ``APl``: >= 96**2 (COCO's definitions, in every mode).
    With ``tiny=True`` two more: ``APvt`` (very tiny, 2**2..8**2) and ``APt`` (tiny, 8**2..16**2), the
    AI-TOD ranges. ``APs`` keeps COCO's meaning there (it includes the tiny objects); it is not AI-TOD's
    "small" (16..32 px), so the columns of runs with and without ``tiny`` stay comparable.

Reading the numbers
    Every AP is read from the evaluation's ``precision`` array (mean over the valid entries, as COCOeval's
    ``summarize()`` computes it), never from ``summarize()``'s printout, whose labels stay "small/medium/large"
    whatever the area ranges. Images without labels stay in the evaluation (their detections are false
    positives) and classes without ground truth are left out of the mean, as COCOeval does.

Bad input raises ``CocoEvalError`` (a ``ValueError``) naming the first offending entry: an image id not in
the split, a category id out of range, malformed JSON, a missing split, a malformed label line.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "AREA_RANGES",
    "TINY_AREA_RANGES",
    "STAT_KEYS",
    "TINY_STAT_KEYS",
    "COCO91_IDS",
    "CocoEvalError",
    "CategoryIdWarning",
    "EvalReport",
    "evaluate",
    "evaluate_report",
    "build_ground_truth",
    "ground_truth_for_images",
    "load_data_config",
    "split_image_files",
    "label_file_for",
    "load_predictions",
    "resolve_backend",
    "cocoeval_stats",
    "format_table",
    "cli",
]

#: COCO's area ranges, in square pixels (both ends inclusive, as COCOeval applies them).
AREA_RANGES: dict[str, tuple[float, float]] = {
    "all": (0.0, 1e5**2),
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e5**2),
}
#: The AI-TOD tiny-object ranges added by ``tiny=True``.
TINY_AREA_RANGES: dict[str, tuple[float, float]] = {
    "verytiny": (2.0**2, 8.0**2),
    "tiny": (8.0**2, 16.0**2),
}
STAT_KEYS: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl")
TINY_STAT_KEYS: tuple[str, ...] = ("APvt", "APt")
# result key -> (area-range label, IoU threshold or None for 0.50:0.95)
_KEY_SPEC: dict[str, tuple[str, float | None]] = {
    "AP": ("all", None),
    "AP50": ("all", 0.5),
    "AP75": ("all", 0.75),
    "APs": ("small", None),
    "APm": ("medium", None),
    "APl": ("large", None),
    "APvt": ("verytiny", None),
    "APt": ("tiny", None),
}
#: The category ids of COCO's 80 classes in the official 91-id numbering (class index i -> COCO91_IDS[i]).
COCO91_IDS: tuple[int, ...] = (
    *range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70, *range(72, 83), *range(84, 91)
)
#: Image suffixes a YOLO dataset directory may hold (the set Ultralytics reads).
IMG_FORMATS = frozenset({"avif", "bmp", "dng", "heic", "heif", "jp2", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp"})
BACKENDS = ("auto", "pycocotools", "faster-coco-eval")
_CACHE_VERSION = 1
_EXIF_ORIENTATION = 274


class CocoEvalError(ValueError):
    """Bad input to the COCO evaluation: the message names the first offending entry and how to fix it."""


class CategoryIdWarning(UserWarning):
    """The category-id convention of a predictions file could not be told from its ids."""


# ----------------------------------------------------------------------------------------------------------------------
# Dataset: data YAML -> image files -> label files
# ----------------------------------------------------------------------------------------------------------------------


def load_data_config(data: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """Read a data YAML (or take its dict) and resolve it as Ultralytics does.

    Returns a dict with ``root`` (Path), ``names`` (list[str], index = class), ``nc``, ``kpt_shape`` (or None),
    ``yaml`` (the file, or None) and the split entries (``train``, ``val``, ``test``, ...) untouched.
    """
    yaml_file: Path | None = None
    if isinstance(data, Mapping):
        cfg = dict(data)
        if cfg.get("yaml_file"):
            yaml_file = Path(cfg["yaml_file"])
    elif isinstance(data, (str, os.PathLike)):
        yaml_file = Path(data)
        if not yaml_file.is_file():
            raise CocoEvalError(f"data YAML {str(yaml_file)!r} does not exist; pass data=path/to/data.yaml")
        import yaml

        try:
            cfg = yaml.safe_load(yaml_file.read_text(encoding="utf-8-sig"))
        except yaml.YAMLError as e:
            raise CocoEvalError(f"data YAML {str(yaml_file)!r} is not valid YAML: {e}") from None
        if not isinstance(cfg, dict):
            raise CocoEvalError(f"data YAML {str(yaml_file)!r} must hold a mapping (path, train, val, names), "
                                f"not {type(cfg).__name__}")
    else:
        raise CocoEvalError(f"data must be a data YAML path or a dict, not {type(data).__name__}")

    where = f"data YAML {str(yaml_file)!r}" if yaml_file else "data dict"
    names = cfg.get("names")
    if names is None:
        nc = cfg.get("nc")
        if not isinstance(nc, int) or nc < 1:
            raise CocoEvalError(f"{where} needs 'names' (a list or a dict) or a positive integer 'nc'")
        names = [f"class_{i}" for i in range(nc)]
    elif isinstance(names, Mapping):
        try:
            by_index = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise CocoEvalError(f"{where}: 'names' keys must be class indices 0..n-1, got {list(names)[:5]}") from None
        if sorted(by_index) != list(range(len(by_index))):
            raise CocoEvalError(f"{where}: 'names' keys must be the class indices 0..{len(by_index) - 1} without gaps, "
                                f"got {sorted(by_index)[:10]}")
        names = [by_index[i] for i in range(len(by_index))]
    elif isinstance(names, (list, tuple)):
        names = [str(n) for n in names]
    else:
        raise CocoEvalError(f"{where}: 'names' must be a list or a dict, not {type(names).__name__}")
    if not names:
        raise CocoEvalError(f"{where}: 'names' is empty; a detection dataset needs at least one class")
    try:
        nc_matches = cfg.get("nc") is None or float(cfg["nc"]) == len(names)
    except (TypeError, ValueError):
        nc_matches = False
    if not nc_matches:
        raise CocoEvalError(f"{where}: 'nc: {cfg['nc']}' does not match the {len(names)} entries of 'names'")

    base = yaml_file.parent if yaml_file else Path.cwd()
    root_entry = cfg.get("path")
    if isinstance(root_entry, Path) or root_entry:
        root = Path(root_entry)
        if not root.is_absolute():
            candidates = [Path.cwd() / root, base / root]
            root = next((c for c in candidates if c.exists()), None)
            if root is None:
                raise CocoEvalError(
                    f"{where}: dataset root 'path: {root_entry}' exists neither relative to the working directory "
                    f"nor to the YAML ({base}); write an absolute path")
    else:
        root = base
    kpt_shape = cfg.get("kpt_shape")
    out = {k: v for k, v in cfg.items() if k not in {"names", "path"}}
    out.update(root=Path(root), names=names, nc=len(names), kpt_shape=tuple(kpt_shape) if kpt_shape else None,
               yaml=yaml_file)
    return out


def split_image_files(cfg: Mapping[str, Any], split: str = "val") -> list[str]:
    """The sorted image files of a split, resolved as Ultralytics resolves them (dirs, .txt lists, lists of both)."""
    if not isinstance(split, str) or not split:
        raise CocoEvalError(f"split must be a split name such as 'val', not {split!r}")
    if split == "val" and not cfg.get("val") and cfg.get("validation"):
        split = "validation"
    entry = cfg.get(split)
    if not entry:
        known = [k for k in ("train", "val", "validation", "test", "minival") if cfg.get(k)]
        where = f"data YAML {str(cfg['yaml'])!r}" if cfg.get("yaml") else "the data dict"
        raise CocoEvalError(f"{where} has no {split!r} split; it defines: {', '.join(known) or 'none'}. "
                            f"Pass split=<one of those>")
    root = Path(cfg["root"])
    entries = entry if isinstance(entry, (list, tuple)) else [entry]
    files: list[str] = []
    for item in entries:
        p = Path(item)
        if not p.is_absolute():
            p = (root / item).resolve()
            if not p.exists() and str(item).startswith("../"):
                p = (root / str(item)[3:]).resolve()
        if p.is_dir():
            files += [str(f) for f in p.rglob("*.*") if f.is_file()]
        elif p.is_file():
            parent = str(p.parent) + os.sep
            lines = p.read_text(encoding="utf-8-sig").strip().splitlines()
            for line in (x.strip() for x in lines):
                if line:
                    files.append(line.replace("./", parent, 1) if line.startswith("./") else line)
        else:
            raise CocoEvalError(f"split {split!r}: {str(item)!r} resolves to {str(p)!r}, which does not exist")
    images = sorted(os.path.abspath(f) for f in files if f.rpartition(".")[-1].lower() in IMG_FORMATS)
    if not images:
        raise CocoEvalError(f"split {split!r} ({entries}) holds no images (suffixes: {', '.join(sorted(IMG_FORMATS))})")
    return images


def label_file_for(image_file: str | os.PathLike) -> str:
    """The YOLO label file of an image: the last ``/images/`` becomes ``/labels/`` and the suffix ``.txt``."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return sb.join(os.fspath(image_file).rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt"


def _image_size(path: str) -> tuple[int, int]:
    """(width, height) of an image as decoders that honour EXIF orientation see it, from the header only."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = None
            # JPEG/TIFF/WebP hold EXIF in the header; a PNG only when its eXIf chunk precedes the pixels (Pillow
            # would otherwise decode the whole image to look for one after them)
            if im.format in {"JPEG", "MPO", "TIFF", "WEBP"} or "exif" in im.info:
                try:
                    orientation = im.getexif().get(_EXIF_ORIENTATION)
                except Exception:  # a broken EXIF block: the pixels are still there
                    orientation = None
    except FileNotFoundError:
        raise CocoEvalError(f"image {path!r} does not exist") from None
    except Exception as e:
        raise CocoEvalError(f"image {path!r} cannot be read: {e}") from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _read_labels(label_file: str, nc: int, width: int, height: int, kpt_values: int | None) -> list[tuple[int, list[float]]]:
    """Parse one YOLO label file into (class, [x, y, w, h] pixels) boxes, duplicates removed as Ultralytics does."""
    if not os.path.isfile(label_file):
        return []  # an image without a label file has no objects
    with open(label_file, encoding="utf-8-sig") as f:
        text = f.read()
    seen: set[tuple[float, ...]] = set()
    boxes: list[tuple[int, list[float]]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            values = np.array([float(v) for v in parts], dtype=np.float32)
        except ValueError:
            raise CocoEvalError(f"{label_file}:{lineno}: {line.strip()!r} is not a row of numbers "
                                "('class x_center y_center width height', normalised to 0..1)") from None
        if not np.isfinite(values).all():
            raise CocoEvalError(f"{label_file}:{lineno}: {line.strip()!r} holds a non-finite value")
        cls = float(values[0])
        if cls != int(cls) or not 0 <= cls < nc:
            raise CocoEvalError(f"{label_file}:{lineno}: class {parts[0]} is not one of the dataset's class indices "
                                f"0..{nc - 1}; fix the label or the data YAML's names")
        n = len(values)
        if n == 5 or (kpt_values is not None and n == 5 + kpt_values):
            cx, cy, bw, bh = (float(v) for v in values[1:5])
            x0, y0, x1, y1 = cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2
        elif n > 6 and (n - 1) % 2 == 0:  # a polygon: class x1 y1 x2 y2 ... -> its bounding box
            xy = values[1:].reshape(-1, 2).astype(np.float64)
            x0, y0 = xy.min(0)
            x1, y1 = xy.max(0)
        else:
            raise CocoEvalError(f"{label_file}:{lineno}: {n} values; a detection label is 'class x_center y_center "
                                "width height' (5 values) and a segment 'class x1 y1 x2 y2 x3 y3 ...'")
        key = tuple(values.tolist())
        if key in seen:
            continue
        seen.add(key)
        px0, px1 = (min(max(v * width, 0.0), float(width)) for v in (x0, x1))
        py0, py1 = (min(max(v * height, 0.0), float(height)) for v in (y0, y1))
        boxes.append((int(cls), [px0, py0, px1 - px0, py1 - py0]))
    return boxes


# ----------------------------------------------------------------------------------------------------------------------
# Ground truth, cached
# ----------------------------------------------------------------------------------------------------------------------


def _user_cache_dir() -> Path:
    override = os.environ.get("YOLO_NONLOCAL_CACHE_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "yolo-nonlocal"


def _file_signature(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)
    return (st.st_mtime_ns, st.st_size)


def _cache_paths(image_files: Sequence[str], label_files: Sequence[str]) -> list[Path]:
    """Where the GT cache of this image list may live: $YOLO_NONLOCAL_CACHE_DIR if set, else beside the labels
    and, where that is read-only, the user cache dir."""
    list_hash = hashlib.sha1("\n".join(image_files).encode()).hexdigest()[:12]
    label_dir = Path(label_files[0]).parent
    beside = label_dir.parent / f"{label_dir.name}.coco-gt-{list_hash}.json"
    user = _user_cache_dir() / "coco_gt" / f"{hashlib.sha1(str(label_dir).encode()).hexdigest()[:12]}-{list_hash}.json"
    return [user] if os.environ.get("YOLO_NONLOCAL_CACHE_DIR") else [beside, user]


def _write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(obj, separators=(",", ":")))  # dumps uses the C encoder, dump() does not
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


_MEMORY_CACHE: dict[tuple[str, str], dict] = {}


def ground_truth_for_images(image_files: Iterable[str | os.PathLike], names: Sequence[str] | Mapping[int, str], *,
                            kpt_shape: Sequence[int] | None = None, cache: bool = True) -> dict:
    """The COCO ground truth of an explicit list of images (see ``build_ground_truth`` for its format).

    The result is cached, keyed by a hash of every image and label file's path, mtime and size (so editing a
    label rebuilds it): in ``labels/<dir>.coco-gt-<hash>.json`` beside the label directory (next to
    Ultralytics' ``labels/<dir>.cache``), or, where that is not writable, in ``~/.cache/yolo-nonlocal/coco_gt/``
    (``$XDG_CACHE_HOME`` honoured). When ``$YOLO_NONLOCAL_CACHE_DIR`` is set, only ``<it>/coco_gt/`` is used.
    """
    images = sorted({os.path.abspath(os.fspath(f)) for f in image_files})
    if not images:
        raise CocoEvalError("no images to build the ground truth from")
    if isinstance(names, Mapping):
        names = [str(names[i]) for i in range(len(names))]
    names = list(names)
    labels = [label_file_for(f) for f in images]
    kpt_values = int(np.prod(kpt_shape)) if kpt_shape else None
    key_src = json.dumps([_CACHE_VERSION, len(names), kpt_values,
                          [(i, _file_signature(i), lb, _file_signature(lb)) for i, lb in zip(images, labels)]])
    key = hashlib.sha1(key_src.encode()).hexdigest()
    paths = _cache_paths(images, labels) if cache else []
    for p in paths:
        hit = _MEMORY_CACHE.get((str(p), key))
        if hit is not None:
            return _with_names(hit, names)
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            stored = json.loads(p.read_text(encoding="utf-8"))
            if stored.get("key") == key:
                _MEMORY_CACHE[(str(p), key)] = stored["gt"]
                return _with_names(stored["gt"], names)

    gt_images, annotations = [], []
    for image_id, (img, lbl) in enumerate(zip(images, labels), 1):
        w, h = _image_size(img)
        gt_images.append({"id": image_id, "file_name": os.path.basename(img), "width": w, "height": h, "path": img})
        for cls, box in _read_labels(lbl, len(names), w, h, kpt_values):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cls + 1,
                                "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
    gt = {"info": {"description": "COCO ground truth built from YOLO labels by yolo-nonlocal"},
          "images": gt_images, "annotations": annotations,
          "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}
    for p in paths:  # first writable location wins; a read-only dataset falls back to the user cache
        try:
            _write_json_atomic(p, {"key": key, "gt": gt})
            _MEMORY_CACHE[(str(p), key)] = gt
            break
        except OSError:
            continue
    return gt


def _with_names(gt: dict, names: list[str]) -> dict:
    """The cached GT with the current class names (renaming a class does not invalidate the cache)."""
    return {**gt, "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}


def build_ground_truth(data: str | os.PathLike | Mapping[str, Any], split: str = "val") -> dict:
    """The COCO ground-truth dict of one split of a YOLO-format dataset.

    ``images``: ``id`` 1..N in sorted path order, ``file_name`` (basename), ``width``/``height`` (EXIF-corrected),
    ``path`` (absolute). ``annotations``: ``bbox`` [x, y, w, h] in original-image pixels, clipped to the image;
    ``area`` = w * h; ``category_id`` = YOLO class index + 1; ``iscrowd`` 0. ``categories``: ``id`` = index + 1.
    Duplicate label rows are dropped and polygons become their bounding boxes, as Ultralytics does.
    """
    cfg = load_data_config(data)
    return ground_truth_for_images(split_image_files(cfg, split), cfg["names"], kpt_shape=cfg["kpt_shape"])


# ----------------------------------------------------------------------------------------------------------------------
# Predictions
# ----------------------------------------------------------------------------------------------------------------------


def _short(entry: Any, limit: int = 160) -> str:
    text = json.dumps(entry, default=str) if isinstance(entry, (dict, list)) else repr(entry)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_predictions(predictions: str | os.PathLike | Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Read a COCO results JSON (a list of detection dicts) or take the list itself."""
    if isinstance(predictions, (str, os.PathLike)):
        path = Path(predictions)
        if not path.is_file():
            raise CocoEvalError(f"predictions file {str(path)!r} does not exist")
        try:
            loaded = json.loads(path.read_text(encoding="utf-8-sig"))
        except json.JSONDecodeError as e:
            raise CocoEvalError(f"predictions file {str(path)!r} is not valid JSON: {e.msg} at line {e.lineno}, "
                                f"column {e.colno}") from None
        where = f"predictions file {str(path)!r}"
    else:
        loaded, where = predictions, "predictions"
    if isinstance(loaded, Mapping) and "annotations" in loaded:
        raise CocoEvalError(f"{where} is a COCO dataset dict (it has 'annotations'); pass the results list "
                            "[{image_id, category_id, bbox, score}, ...] that a detector writes")
    if not isinstance(loaded, (list, tuple)):
        raise CocoEvalError(f"{where} must be a JSON list of detections [{{image_id, category_id, bbox, score}}, ...],"
                            f" not {type(loaded).__name__}")
    return list(loaded)


def _stem_id(stem: str) -> int | str:
    """The image id that Ultralytics, YOLOv5 and YOLOv7 write for a file stem."""
    if stem.isnumeric():
        with contextlib.suppress(ValueError):
            return int(stem)
    return stem


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


AMBIGUOUS = "auto: ambiguous, assumed 1-based (pass category_ids=0 for YOLOv5/YOLOv7 files)"


def _resolve_convention(preds: Sequence[Mapping[str, Any]], nc: int, category_ids: Any) -> tuple[str, str]:
    """Which category-id convention the predictions use: ('0' | '1' | 'coco91', how it was decided)."""
    choice = str(category_ids).strip().lower()
    if choice not in {"auto", "0", "1", "coco91"}:
        raise CocoEvalError(f"category_ids={category_ids!r} is not one of auto, 0, 1, coco91")
    for i, p in enumerate(preds):
        if not isinstance(p, Mapping):
            raise CocoEvalError(f"predictions[{i}] {_short(p)}: each detection must be an object "
                                "{image_id, category_id, bbox, score}")
        missing = [k for k in ("image_id", "category_id", "bbox", "score") if k not in p]
        if missing:
            raise CocoEvalError(f"predictions[{i}] {_short(p)}: missing {', '.join(missing)}")
        c = p["category_id"]
        if not _is_int(c) and not (isinstance(c, float) and c.is_integer()):
            raise CocoEvalError(f"predictions[{i}] {_short(p)}: 'category_id' must be an integer, got {c!r}")
    ids = {int(p["category_id"]) for p in preds}
    if choice != "auto":
        if choice == "coco91" and nc != 80:
            raise CocoEvalError(f"category_ids=coco91 needs an 80-class dataset (COCO); this one has {nc} classes")
        return choice, "set by category_ids"
    if not ids:
        return "1", "no predictions"
    if 0 in ids:
        return "0", "auto: id 0 occurs"
    if max(ids) == nc:
        return "1", f"auto: id {nc} (= nc) occurs"
    if nc == 80 and max(ids) > 80 and ids <= set(COCO91_IDS):
        return "coco91", "auto: ids above 80 on an 80-class dataset"
    if max(ids) > nc:
        return "1", "auto"  # out of range for every convention: the range check names the entry
    return "1", AMBIGUOUS


def _convert_predictions(preds: Sequence[Mapping[str, Any]], gt: dict, category_ids: Any) -> tuple[list[dict], str]:
    """Validate detections and map them to the GT's image ids and 1-based category ids."""
    nc = len(gt["categories"])
    convention, how = _resolve_convention(preds, nc, category_ids)
    if convention == "0":
        to_cat, valid = (lambda c: c + 1), f"0..{nc - 1} (0-based)"
    elif convention == "1":
        to_cat, valid = (lambda c: c), f"1..{nc} (1-based)"
    else:
        index = {cid: i for i, cid in enumerate(COCO91_IDS)}
        to_cat, valid = (lambda c: index[c] + 1), "the 80 COCO91 ids"
    by_stem: dict[int | str, list[int]] = {}
    by_name: dict[str, list[int]] = {}
    for img in gt["images"]:
        by_stem.setdefault(_stem_id(Path(img["file_name"]).stem), []).append(img["id"])
        by_name.setdefault(img["file_name"], []).append(img["id"])
    dets = []
    for i, p in enumerate(preds):  # structure and category ids were checked by _resolve_convention
        raw = p["image_id"]
        if isinstance(raw, str):
            key: int | str = _stem_id(raw)
        elif _is_int(raw):
            key = int(raw)
        else:
            raise CocoEvalError(f"predictions[{i}] {_short(p)}: 'image_id' must be the image file stem "
                                f"(an int or a string), got {raw!r}")
        ids = by_stem.get(key)
        if ids and len(ids) > 1:
            ids = by_name.get(p.get("file_name"), ids) if isinstance(p.get("file_name"), str) else ids
        if not ids:
            raise CocoEvalError(f"predictions[{i}] {_short(p)}: image_id {raw!r} is not the stem of any image in this "
                                f"split ({len(gt['images'])} images, e.g. {gt['images'][0]['file_name']!r}); "
                                "check data= and split=")
        if len(ids) > 1:
            raise CocoEvalError(f"predictions[{i}] {_short(p)}: image_id {raw!r} is the stem of {len(ids)} images of "
                                "this split; add 'file_name' to the detections or give the images distinct names")
        c = int(p["category_id"])
        try:
            cat = to_cat(c)
        except KeyError:
            cat = -1
        if not 1 <= cat <= nc:
            raise CocoEvalError(f"predictions[{i}] {_short(p)}: category_id {c} is out of range: this {nc}-class "
                                f"dataset takes {valid} ({how}); pass category_ids=0|1|coco91 to say which")
        box = p["bbox"]
        if (not isinstance(box, (list, tuple)) or len(box) != 4 or not all(_is_number(v) for v in box)
                or box[2] < 0 or box[3] < 0):
            raise CocoEvalError(f"predictions[{i}] {_short(p)}: 'bbox' must be [x, y, width, height] with finite "
                                "numbers and width, height >= 0 (COCO format, original-image pixels)")
        if not _is_number(p["score"]):
            raise CocoEvalError(f"predictions[{i}] {_short(p)}: 'score' must be a finite number")
        dets.append({"image_id": ids[0], "category_id": cat, "bbox": [float(v) for v in box],
                     "score": float(p["score"])})
    if how == AMBIGUOUS:  # warned only once every entry has passed the checks
        ids = sorted({int(p["category_id"]) for p in preds})
        warnings.warn(f"category ids {ids[0]}..{ids[-1]} fit both 0-based and 1-based classes of this {nc}-class "
                      "dataset; assuming 1-based (what current Ultralytics writes). Pass category_ids=0 for YOLOv5, "
                      "YOLOv7 or old Ultralytics predictions.", CategoryIdWarning, stacklevel=4)
    label = {"0": "0-based", "1": "1-based", "coco91": "COCO91"}[convention]
    return dets, f"{label} ({how})"


# ----------------------------------------------------------------------------------------------------------------------
# The evaluation itself
# ----------------------------------------------------------------------------------------------------------------------


def resolve_backend(backend: str = "auto") -> str:
    """'faster-coco-eval' or 'pycocotools': the evaluator ``backend`` names (auto: the fast one when installed)."""
    name = str(backend).strip().lower().replace("_", "-")
    if name not in BACKENDS:
        raise CocoEvalError(f"backend={backend!r} is not one of {', '.join(BACKENDS)}")
    import importlib.util

    has_fast = importlib.util.find_spec("faster_coco_eval") is not None
    if name == "auto":
        name = "faster-coco-eval" if has_fast else "pycocotools"
    if name == "faster-coco-eval" and not has_fast:
        raise CocoEvalError("backend=faster-coco-eval but faster-coco-eval is not installed: "
                            "pip install 'yolo-nonlocal[fast]' (or faster-coco-eval), or pass backend=pycocotools")
    if name == "pycocotools" and importlib.util.find_spec("pycocotools") is None:
        raise CocoEvalError("backend=pycocotools but pycocotools is not installed: pip install pycocotools")
    return name


def _area_ranges(tiny: bool) -> dict[str, tuple[float, float]]:
    return {**AREA_RANGES, **(TINY_AREA_RANGES if tiny else {})}


def _run_cocoeval(gt: dict, dets: list[dict], ranges: Mapping[str, tuple[float, float]], max_dets: int, backend: str,
                  cat_ids: Sequence[int] | None) -> tuple[np.ndarray, Any]:
    """Run COCOeval (bbox) and return its accumulated precision array (T, R, K, A, M) and params."""
    quiet = contextlib.redirect_stdout(io.StringIO())
    if backend == "faster-coco-eval":
        from faster_coco_eval import COCO, COCOeval_faster as COCOeval

        def noop(*args, **kwargs):
            return None

        with quiet:
            coco_gt = COCO(gt, print_function=noop)
            coco_dt = coco_gt.loadRes(dets)
            ev = COCOeval(coco_gt, coco_dt, "bbox", print_function=noop)
    else:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with quiet:
            coco_gt = COCO()
            coco_gt.dataset = gt
            coco_gt.createIndex()
            if dets:
                coco_dt = coco_gt.loadRes(dets)
            else:  # pycocotools' loadRes cannot take an empty list: an empty result set evaluates the same
                coco_dt = COCO()
                coco_dt.dataset = {"images": list(gt["images"]), "categories": list(gt["categories"]),
                                   "annotations": []}
                coco_dt.createIndex()
            ev = COCOeval(coco_gt, coco_dt, "bbox")
    p = ev.params
    p.imgIds = sorted(img["id"] for img in gt["images"])
    p.catIds = sorted(cat_ids) if cat_ids is not None else sorted(c["id"] for c in gt["categories"])
    p.areaRng = [list(v) for v in ranges.values()]
    p.areaRngLbl = list(ranges)
    p.maxDets = [1, 10, int(max_dets)] if max_dets > 10 else [int(max_dets)]
    with quiet:
        ev.evaluate()
        ev.accumulate()
    return np.asarray(ev.eval["precision"]), ev.params


def _mean_precision(precision: np.ndarray, params: Any, area: str, iou: float | None, max_dets: int) -> float:
    """COCOeval.summarize()'s AP formula, read from the precision array for one area range and IoU threshold."""
    s = precision[:, :, :, list(params.areaRngLbl).index(area), list(params.maxDets).index(max_dets)]
    if iou is not None:
        s = s[np.isclose(np.asarray(params.iouThrs), iou)]
    s = s[s > -1]
    return float(np.mean(s)) if s.size else -1.0


def cocoeval_stats(gt: dict, dets: list[dict], *, tiny: bool = False, backend: str = "auto", max_dets: int = 100,
                   cat_ids: Sequence[int] | None = None) -> dict[str, float]:
    """COCO bbox stats of detections already in the GT's ids (``image_id`` from ``gt``, 1-based ``category_id``).

    ``cat_ids`` restricts the evaluation to some categories (the default is all of ``gt``'s).
    """
    if not _is_int(max_dets) or max_dets < 1:
        raise CocoEvalError(f"max_dets must be a positive integer, got {max_dets!r}")
    precision, params = _run_cocoeval(gt, dets, _area_ranges(tiny), max_dets, resolve_backend(backend), cat_ids)
    keys = STAT_KEYS + (TINY_STAT_KEYS if tiny else ())
    return {k: _mean_precision(precision, params, *_KEY_SPEC[k], max_dets) for k in keys}


@dataclass
class EvalReport:
    """The stats of one evaluation and how they were obtained (for printing)."""

    stats: dict[str, float]
    backend: str
    convention: str
    images: int
    objects: int
    detections: int
    extra: dict[str, Any] = field(default_factory=dict)


def evaluate_report(data: str | os.PathLike | Mapping[str, Any],
                    predictions: str | os.PathLike | Sequence[Mapping[str, Any]], split: str = "val", *,
                    category_ids: Any = "auto", tiny: bool = False, backend: str = "auto",
                    max_dets: int = 100) -> EvalReport:
    """``evaluate`` with its context: backend used, category-id convention, image/object/detection counts."""
    backend = resolve_backend(backend)
    gt = build_ground_truth(data, split)
    preds = load_predictions(predictions)
    dets, convention = _convert_predictions(preds, gt, category_ids)
    stats = cocoeval_stats(gt, dets, tiny=tiny, backend=backend, max_dets=max_dets)
    return EvalReport(stats, backend, convention, len(gt["images"]), len(gt["annotations"]), len(dets))


def evaluate(data: str | os.PathLike | Mapping[str, Any], predictions: str | os.PathLike | Sequence[Mapping[str, Any]],
             split: str = "val", *, category_ids: Any = "auto", tiny: bool = False, backend: str = "auto",
             max_dets: int = 100) -> dict[str, float]:
    """COCO AP, AP50, AP75, APs, APm, APl (and APvt, APt when ``tiny``) of ``predictions`` on a YOLO dataset split.

    See the module docstring for the arguments, the category-id conventions and the area ranges.
    """
    return evaluate_report(data, predictions, split, category_ids=category_ids, tiny=tiny, backend=backend,
                           max_dets=max_dets).stats


# ----------------------------------------------------------------------------------------------------------------------
# Printing and the command line
# ----------------------------------------------------------------------------------------------------------------------


def format_table(stats: Mapping[str, float], title: str = "") -> str:
    """A two-line table of the stats (as fractions, '-' where a range has no ground truth)."""
    keys = [k for k in (*STAT_KEYS, *TINY_STAT_KEYS) if k in stats]
    head = "".join(f"{k:>9}" for k in keys)
    row = "".join(f"{'-' if stats[k] < 0 else format(stats[k], '.4f'):>9}" for k in keys)
    return "\n".join(x for x in (title, head, row) if x)


USAGE = """usage: yolo-nonlocal eval data=DATA.yaml predictions=PRED.json [split=val] [json=OUT.json] [tiny=False]
                          [category_ids=auto|0|1|coco91] [backend=auto|pycocotools|faster-coco-eval] [max_dets=100]

Score a COCO results JSON (what Ultralytics' save_json=True and YOLOv5/YOLOv7's val.py --save-json write)
against the YOLO-format labels of a dataset split, with COCO's area ranges on original-image pixels.

  data          data YAML as Ultralytics reads it (path, train/val/test, names)
  predictions   COCO results JSON: [{"image_id": <file stem>, "category_id", "bbox": [x, y, w, h], "score"}, ...]
  split         split to score (default val)
  json          write the stats here as JSON: AP, AP50, AP75, APs, APm, APl (+ APvt, APt) as fractions
  tiny          also report the AI-TOD tiny ranges: APvt (2-8 px), APt (8-16 px); APs/APm/APl stay COCO's
  category_ids  auto (default): 0-based if id 0 occurs, 1-based if id nc occurs, coco91 for COCO's 91 ids,
                else 1-based with a warning. 0: YOLOv5/YOLOv7/old Ultralytics; 1: current Ultralytics
  backend       auto (default: faster-coco-eval when installed), pycocotools, faster-coco-eval
  max_dets      detections kept per image and class, by score (default 100, as COCO)

Exit status: 0 on success, 2 on bad input (the message names the first offending entry)."""

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _parse_bool(key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise CocoEvalError(f"{key}={value!r} is not a boolean; use True or False")


def cli(argv: Sequence[str] | None = None) -> int:
    """``yolo-nonlocal eval key=value ...``: print the table, write ``json=`` if given. Returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in {"-h", "--help", "help"} for a in argv):
        print(USAGE)
        return 0
    allowed = {"data", "predictions", "split", "json", "tiny", "category_ids", "backend", "max_dets"}
    args: dict[str, str] = {}
    try:
        for a in argv:
            k, sep, v = a.partition("=")
            k = k.strip().lstrip("-").replace("-", "_")
            if not sep or not k:
                raise CocoEvalError(f"argument {a!r} is not key=value; see 'yolo-nonlocal eval --help'")
            if k not in allowed:
                raise CocoEvalError(f"unknown argument {k!r}; expected one of: {', '.join(sorted(allowed))}")
            args[k] = v
        for k in ("data", "predictions"):
            if not args.get(k):
                raise CocoEvalError(f"missing {k}=...; usage: yolo-nonlocal eval data=DATA.yaml predictions=PRED.json")
        try:
            max_dets = int(args.get("max_dets", "100"))
        except ValueError:
            raise CocoEvalError(f"max_dets={args['max_dets']!r} is not an integer") from None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CategoryIdWarning)
            report = evaluate_report(args["data"], args["predictions"], args.get("split", "val"),
                                     category_ids=args.get("category_ids", "auto"),
                                     tiny=_parse_bool("tiny", args.get("tiny", "False")),
                                     backend=args.get("backend", "auto"), max_dets=max_dets)
        for w in caught:
            print(f"yolo-nonlocal eval: warning: {w.message}", file=sys.stderr)
        title = (f"COCO bbox AP ({report.backend}): {report.images} images, {report.objects} objects, "
                 f"{report.detections} detections; category ids {report.convention}")
        print(format_table(report.stats, title))
        if args.get("json"):
            out = Path(args["json"])
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(report.stats, indent=2) + "\n", encoding="utf-8")
            except OSError as e:
                raise CocoEvalError(f"cannot write json={str(out)!r}: {e.strerror}") from None
            print(f"Saved {out}")
    except CocoEvalError as e:
        print(f"yolo-nonlocal eval: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(cli())
