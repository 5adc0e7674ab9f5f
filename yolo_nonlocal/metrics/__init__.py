"""COCO AP / AP50 / AP75 / APs / APm / APl (and tiny-object ranges) for YOLO-format datasets.

``from yolo_nonlocal.metrics import evaluate`` works; the names load their module on first use, so importing
the package imports neither numpy, torch nor Ultralytics. The modules, by concept:

- :mod:`~yolo_nonlocal.metrics.datasets`: the one data-YAML reader (names, root, split files, label files);
- :mod:`~yolo_nonlocal.metrics.ground_truth`: YOLO labels -> COCO ground truth in pixels, cached on disk;
- :mod:`~yolo_nonlocal.metrics.predictions`: a COCO results JSON -> detections in the ground truth's ids;
- :mod:`~yolo_nonlocal.metrics.coco`: COCOeval, the metric names, ``evaluate``;
- :mod:`~yolo_nonlocal.metrics.errors`: ``CocoEvalError`` and ``DataConfigError``.
"""

from __future__ import annotations

from yolo_nonlocal.utils.lazy import lazy_exports

# public name -> the module that defines it
_HOMES: dict[str, str] = {
    **dict.fromkeys(("CocoEvalError", "DataConfigError"), "errors"),
    **dict.fromkeys(("load_data_config", "split_image_files", "label_file_for"), "datasets"),
    **dict.fromkeys(("build_ground_truth", "ground_truth_for_images", "clear_memory_cache"), "ground_truth"),
    **dict.fromkeys(("load_predictions", "convert_predictions", "COCO91_IDS", "CategoryIdWarning"), "predictions"),
    **dict.fromkeys(("evaluate", "evaluate_report", "EvalReport", "cocoeval_stats", "resolve_backend", "stat_keys",
                     "STAT_KEYS", "TINY_STAT_KEYS", "AREA_RANGES", "TINY_AREA_RANGES", "BACKENDS"), "coco"),
}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
