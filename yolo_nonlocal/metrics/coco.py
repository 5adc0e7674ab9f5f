"""COCO AP and small-object AP for any YOLO-format detection dataset: the COCOeval core and its Python API.

What
    Scores detections (a COCO results JSON, or a list of dicts) against the ground truth of a YOLO-format
    dataset, with a well-kept COCO evaluator: faster-coco-eval when it is installed (same numbers, ~8x
    faster), else pycocotools. Returns AP, AP50, AP75 and the area-range APs as fractions, optionally with
    the tiny-object ranges of AI-TOD / VisDrone style benchmarks. This module is the one home of the metric
    names (:data:`STAT_KEYS`, :data:`TINY_STAT_KEYS`) and their area ranges.

Why
    The question users of this package ask is "did small-object AP go up?". Ultralytics' mAP50-95 has no
    area ranges and YOLOv5/YOLOv7 give APs only for COCO itself; this gives COCO's numbers for any dataset in
    YOLO format, with box areas in original-image pixels (the areas COCO's ranges are defined on).

The package's metrics, by concept
    :mod:`yolo_nonlocal.metrics.datasets`      data YAML -> names, root, split image files -> label files
    :mod:`yolo_nonlocal.metrics.ground_truth`  label files -> COCO ground truth in pixels, cached on disk
    :mod:`yolo_nonlocal.metrics.predictions`   a results JSON -> detections in the ground truth's ids
    :mod:`yolo_nonlocal.metrics.coco`          (here) COCOeval, the metric names, ``evaluate``
    ``yolo-nonlocal eval`` (:mod:`yolo_nonlocal.cli.eval`) is the command line over :func:`evaluate_report`.

Public API (stable; used by ``yolo_nonlocal.integrations.ultralytics.metrics``, ``compare`` and ``eval``)
    ``evaluate(data, predictions, split="val", *, category_ids="auto", tiny=False, backend="auto",
    max_dets=100) -> dict[str, float]``
        ``data``: a data YAML path or its dict (see :mod:`~yolo_nonlocal.metrics.datasets`). ``predictions``:
        a COCO results JSON path or a list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``
        dicts, boxes in original-image pixels, ``image_id`` the image file stem; ``category_ids``: ``auto``,
        ``0``, ``1`` or ``coco91`` (see :mod:`~yolo_nonlocal.metrics.predictions`). Returns ``{"AP", "AP50",
        "AP75", "APs", "APm", "APl"}`` (plus ``"APvt"``, ``"APt"`` when ``tiny``) as fractions in [0, 1], or
        -1.0 where the range holds no ground truth (as COCOeval reports it).
    ``evaluate_report(...) -> EvalReport``: the same with the backend used, the category-id convention and the
        image / object / detection counts.
    ``cocoeval_stats(gt, dets, *, tiny, backend, max_dets, cat_ids) -> dict[str, float]``: the stats of
        detections already in the ground truth's ids.
    ``resolve_backend(backend) -> str``: the evaluator ``auto`` / a name stands for, checked installed.
    Re-exported for the callers of earlier releases: ``build_ground_truth``, ``ground_truth_for_images``,
    ``load_data_config``, ``split_image_files``, ``label_file_for``, ``load_predictions``, ``COCO91_IDS``,
    ``CocoEvalError``, ``CategoryIdWarning``.

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
import io
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from yolo_nonlocal.metrics.datasets import label_file_for, load_data_config, split_image_files
from yolo_nonlocal.metrics.errors import CocoEvalError, DataConfigError
from yolo_nonlocal.metrics.ground_truth import build_ground_truth, ground_truth_for_images
from yolo_nonlocal.metrics.predictions import (
    COCO91_IDS,
    CategoryIdWarning,
    convert_predictions,
    is_integer,
    load_predictions,
)

__all__ = [
    "AREA_RANGES",
    "TINY_AREA_RANGES",
    "STAT_KEYS",
    "TINY_STAT_KEYS",
    "BACKENDS",
    "EvalReport",
    "evaluate",
    "evaluate_report",
    "cocoeval_stats",
    "resolve_backend",
    "stat_keys",
    # re-exported from their own modules, for the callers of earlier releases
    "COCO91_IDS",
    "CocoEvalError",
    "DataConfigError",
    "CategoryIdWarning",
    "build_ground_truth",
    "ground_truth_for_images",
    "load_data_config",
    "split_image_files",
    "label_file_for",
    "load_predictions",
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
#: The metric names, in the order every table and ``results.csv`` lists them.
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
#: The evaluators ``backend`` names.
BACKENDS = ("auto", "pycocotools", "faster-coco-eval")


def stat_keys(tiny: bool = False) -> tuple[str, ...]:
    """The keys an evaluation returns, in order: :data:`STAT_KEYS`, then :data:`TINY_STAT_KEYS` when ``tiny``."""
    return STAT_KEYS + (TINY_STAT_KEYS if tiny else ())


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
    if not is_integer(max_dets) or max_dets < 1:
        raise CocoEvalError(f"max_dets must be a positive integer, got {max_dets!r}")
    precision, params = _run_cocoeval(gt, dets, _area_ranges(tiny), max_dets, resolve_backend(backend), cat_ids)
    return {k: _mean_precision(precision, params, *_KEY_SPEC[k], max_dets) for k in stat_keys(tiny)}


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
    dets, convention = convert_predictions(preds, gt, category_ids)
    stats = cocoeval_stats(gt, dets, tiny=tiny, backend=backend, max_dets=max_dets)
    return EvalReport(stats, backend, convention, len(gt["images"]), len(gt["annotations"]), len(dets))


def evaluate(data: str | os.PathLike | Mapping[str, Any], predictions: str | os.PathLike | Sequence[Mapping[str, Any]],
             split: str = "val", *, category_ids: Any = "auto", tiny: bool = False, backend: str = "auto",
             max_dets: int = 100) -> dict[str, float]:
    """COCO AP, AP50, AP75, APs, APm, APl (and APvt, APt when ``tiny``) of ``predictions`` on a YOLO dataset split.

    See the module docstring for the arguments and the area ranges, :mod:`yolo_nonlocal.metrics.predictions` for
    the category-id conventions and :mod:`yolo_nonlocal.metrics.datasets` for how ``data`` is read.
    """
    return evaluate_report(data, predictions, split, category_ids=category_ids, tiny=tiny, backend=backend,
                           max_dets=max_dets).stats
