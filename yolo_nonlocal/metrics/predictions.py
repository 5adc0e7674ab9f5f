"""Detections as detectors write them (a COCO results JSON) -> detections in the ground truth's ids.

Ultralytics, YOLOv5 and YOLOv7 write ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` with boxes
in original-image pixels and ``image_id`` the image file stem (an int when the stem is numeric, else the stem
string). They disagree on ``category_id``; ``category_ids`` says which convention a file uses:

- ``0``: the class index ``c`` (YOLOv5, YOLOv7 and old Ultralytics releases on custom datasets);
- ``1``: ``c + 1`` (current Ultralytics releases);
- ``"coco91"``: COCO's 91-id numbering (:data:`COCO91_IDS`), what every tool writes for COCO itself;
- ``"auto"`` (default): 0-based when an id 0 occurs, 1-based when the id ``nc`` occurs, ``coco91`` for an
  80-class dataset whose ids exceed 80; when none of these decides (every id in ``1..nc-1``) it falls back to
  1-based, what current Ultralytics writes, and warns (:class:`CategoryIdWarning`).

Bad input raises :class:`~yolo_nonlocal.metrics.errors.CocoEvalError` naming the first offending entry.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

from yolo_nonlocal.metrics.errors import CocoEvalError

__all__ = ["COCO91_IDS", "CATEGORY_ID_CHOICES", "CategoryIdWarning", "load_predictions", "convert_predictions",
           "is_integer"]

#: The category ids of COCO's 80 classes in the official 91-id numbering (class index i -> COCO91_IDS[i]).
COCO91_IDS: tuple[int, ...] = (
    *range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70, *range(72, 83), *range(84, 91)
)
#: The values ``category_ids`` takes.
CATEGORY_ID_CHOICES: tuple[str, ...] = ("auto", "0", "1", "coco91")
AMBIGUOUS = "auto: ambiguous, assumed 1-based (pass category_ids=0 for YOLOv5/YOLOv7 files)"


class CategoryIdWarning(UserWarning):
    """The category-id convention of a predictions file could not be told from its ids."""


def is_integer(v: Any) -> bool:
    """Whether ``v`` is an integer (Python or numpy), not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _short(entry: Any, limit: int = 160) -> str:
    text = json.dumps(entry, default=str) if isinstance(entry, (dict, list)) else repr(entry)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_predictions(predictions: str | os.PathLike | Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Read a COCO results JSON (a list of detection dicts) or take the list itself; the entries are checked later."""
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


def _resolve_convention(preds: Sequence[Mapping[str, Any]], nc: int, category_ids: Any) -> tuple[str, str]:
    """Which category-id convention the predictions use: ('0' | '1' | 'coco91', how it was decided)."""
    choice = str(category_ids).strip().lower()
    if choice not in CATEGORY_ID_CHOICES:
        raise CocoEvalError(f"category_ids={category_ids!r} is not one of {', '.join(CATEGORY_ID_CHOICES)}")
    for i, p in enumerate(preds):
        if not isinstance(p, Mapping):
            raise CocoEvalError(f"predictions[{i}] {_short(p)}: each detection must be an object "
                                "{image_id, category_id, bbox, score}")
        missing = [k for k in ("image_id", "category_id", "bbox", "score") if k not in p]
        if missing:
            raise CocoEvalError(f"predictions[{i}] {_short(p)}: missing {', '.join(missing)}")
        c = p["category_id"]
        if not is_integer(c) and not (isinstance(c, float) and c.is_integer()):
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


def convert_predictions(preds: Sequence[Mapping[str, Any]], gt: Mapping[str, Any],
                        category_ids: Any = "auto") -> tuple[list[dict], str]:
    """Check detections and map them to ``gt``'s image ids and 1-based category ids.

    Returns the detections for COCOeval and how their category ids were read (``"1-based (auto: ...)"``).
    An ``image_id`` shared by two images of ``gt`` (``1.jpg``, ``1.png``) needs the detection's ``file_name``.
    """
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
        elif is_integer(raw):
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
