"""The COCO ground truth of a YOLO-format split: label files -> boxes in original-image pixels, cached on disk.

Boxes are converted to pixels of the image as Ultralytics sees it (size from the file header, EXIF
orientation applied: :func:`yolo_nonlocal.utils.images.image_size`) and clipped to it; polygon (segment)
labels become their bounding boxes and duplicate rows are dropped, as Ultralytics does. Images without a
label file stay in the ground truth with no objects.

The result is cached, keyed by a hash of every image and label file's path, mtime and size (so editing a label
rebuilds it): in ``labels/<dir>.coco-gt-<hash>.json`` beside the label directory (next to Ultralytics'
``labels/<dir>.cache``), readable by every user of a shared dataset as a normal file write makes it (mode
0666 less the umask: 0644 under the usual 022); where the dataset is not writable, in
``~/.cache/yolo-nonlocal/coco_gt/`` (``$XDG_CACHE_HOME`` honoured). With ``$YOLO_NONLOCAL_CACHE_DIR`` set,
only ``<it>/coco_gt/`` is used. Within a process the last result of each cache file is kept in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from yolo_nonlocal.metrics.datasets import label_file_for, load_data_config, split_image_files
from yolo_nonlocal.metrics.errors import CocoEvalError
from yolo_nonlocal.utils.images import ImageReadError, image_size

__all__ = ["build_ground_truth", "ground_truth_for_images", "read_labels", "clear_memory_cache", "CACHE_ENV"]

#: Set to a directory: the ground-truth cache goes there only (never beside the labels).
CACHE_ENV = "YOLO_NONLOCAL_CACHE_DIR"
_CACHE_VERSION = 1
_MEMORY_CACHE: dict[tuple[str, str], dict] = {}


def read_labels(label_file: str, nc: int, width: int, height: int,
                kpt_values: int | None = None) -> list[tuple[int, list[float]]]:
    """One YOLO label file as ``(class, [x, y, w, h])`` boxes in pixels of a ``width`` x ``height`` image.

    Rows are ``class xc yc w h`` (normalised; ``kpt_values`` more on a pose dataset) or polygons
    ``class x1 y1 x2 y2 ...`` (their bounding box). Boxes are clipped to the image; duplicate rows are dropped,
    as Ultralytics does. A missing file is an image without objects. A malformed row raises CocoEvalError
    naming ``file:line``.
    """
    if not os.path.isfile(label_file):
        return []
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


def clear_memory_cache() -> None:
    """Forget the ground truths kept in memory (the files on disk stay): the next build reads or rebuilds them."""
    _MEMORY_CACHE.clear()


def _user_cache_dir() -> Path:
    override = os.environ.get(CACHE_ENV)
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
    """Where the GT cache of this image list may live, first choice first (see the module docstring)."""
    list_hash = hashlib.sha1("\n".join(image_files).encode()).hexdigest()[:12]
    label_dir = Path(label_files[0]).parent
    beside = label_dir.parent / f"{label_dir.name}.coco-gt-{list_hash}.json"
    user = _user_cache_dir() / "coco_gt" / f"{hashlib.sha1(str(label_dir).encode()).hexdigest()[:12]}-{list_hash}.json"
    return [user] if os.environ.get(CACHE_ENV) else [beside, user]


def _write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` to ``path`` through a temporary file and a rename, so readers never see half a file.

    The temporary file is created with mode 0666 and the process umask applied by the kernel, as ``open()``
    creates a file (``tempfile.mkstemp`` would make it 0600: unreadable to the other users of a shared dataset).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for _ in range(100):
        tmp = path.parent / f"{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 random names taken
        raise FileExistsError(f"cannot create a temporary file beside {path}")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(obj, separators=(",", ":")))  # dumps uses the C encoder, dump() does not
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _with_names(gt: dict, names: list[str]) -> dict:
    """The cached GT with the current class names (renaming a class does not invalidate the cache)."""
    return {**gt, "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}


def _read_cached(paths: Sequence[Path], key: str, names: list[str]) -> dict | None:
    for p in paths:
        hit = _MEMORY_CACHE.get((str(p), key))
        if hit is not None:
            return _with_names(hit, names)
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            stored = json.loads(p.read_text(encoding="utf-8"))
            if stored.get("key") == key:
                _MEMORY_CACHE[(str(p), key)] = stored["gt"]
                return _with_names(stored["gt"], names)
    return None


def _size(image_file: str) -> tuple[int, int]:
    try:
        return image_size(image_file)
    except ImageReadError as e:
        raise CocoEvalError(str(e)) from None


def ground_truth_for_images(image_files: Iterable[str | os.PathLike], names: Sequence[str] | Mapping[int, str], *,
                            kpt_shape: Sequence[int] | None = None, cache: bool = True) -> dict:
    """The COCO ground truth of an explicit list of images, such as the ones a validator evaluated.

    See :func:`build_ground_truth` for the format and the module docstring for the cache (``cache=False``: build
    it, read and write no cache).
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
    cached = _read_cached(paths, key, names)
    if cached is not None:
        return cached

    gt_images, annotations = [], []
    for image_id, (img, lbl) in enumerate(zip(images, labels), 1):
        w, h = _size(img)
        gt_images.append({"id": image_id, "file_name": os.path.basename(img), "width": w, "height": h, "path": img})
        for cls, box in read_labels(lbl, len(names), w, h, kpt_values):
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


def build_ground_truth(data: str | os.PathLike | Mapping[str, Any], split: str = "val") -> dict:
    """The COCO ground-truth dict of one split of a YOLO-format dataset (a data YAML path or its dict).

    ``images``: ``id`` 1..N in sorted path order, ``file_name`` (basename), ``width``/``height`` (EXIF-corrected,
    as Ultralytics sees the image), ``path`` (absolute). ``annotations``: ``bbox`` [x, y, w, h] in
    original-image pixels, clipped to the image; ``area`` = w * h; ``category_id`` = YOLO class index + 1;
    ``iscrowd`` 0. ``categories``: ``id`` = index + 1, ``name``. Cached on disk (see the module docstring).
    """
    cfg = load_data_config(data)
    return ground_truth_for_images(split_image_files(cfg, split), cfg["names"], kpt_shape=cfg["kpt_shape"])
