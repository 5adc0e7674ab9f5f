"""COCO AP and small-object AP in every Ultralytics detection validation (``yolo train`` epochs and ``yolo val``).

What
    ``install()`` makes every ``DetectionValidator`` run (task ``detect``) also score its predictions with
    ``yolo_nonlocal.metrics.coco`` (pycocotools, or faster-coco-eval when installed) on box areas in
    original-image pixels, and report ``coco/AP``, ``coco/AP50``, ``coco/AP75``, ``coco/APs``, ``coco/APm``,
    ``coco/APl`` (plus ``coco/APvt``, ``coco/APt`` with ``YOLO_NONLOCAL_TINY=1``):
      - in training, the keys join the validator's stats, so the trainer writes them to ``results.csv`` (and
        to every logger callback: TensorBoard, MLflow, ...) each epoch;
      - the console prints them after Ultralytics' table;
      - a standalone validation (``yolo val``, ``model.val()``, the final validation of ``best.pt``) also
        writes them to ``<save_dir>/coco_metrics.json`` and puts them on ``validator.metrics.coco``.

Why here and how
    Ultralytics' own COCO path needs ``save_json=True``, reports only mAP_small/medium/large and never AP50
    or AP75 in the same evaluation. Its callbacks cannot add columns to ``results.csv`` (the trainer writes
    the dict the validator returns), so ``install()`` wraps five ``DetectionValidator`` methods
    (``init_metrics`` starts a collection, ``update_metrics`` keeps each image's boxes scaled to the original
    image with the validator's own ``scale_preds``, ``gather_stats`` gathers them across DDP ranks,
    ``get_stats`` evaluates and adds the keys, ``print_results`` prints them) and ``BaseTrainer.save_metrics``
    (keeps the CSV columns stable on epochs without validation, and makes a resumed run's rows follow the
    header already in its ``results.csv``: columns this environment does not produce are written as ``nan``,
    columns it adds are appended at the end of the header with ``nan`` in earlier rows; nothing shifts, and
    nothing is dropped, whatever ``YOLO_NONLOCAL_COCO`` / ``YOLO_NONLOCAL_TINY`` say at resume). Predictions stay in memory: the user's
    ``save_json`` is not touched. Ground truth is built once per dataset from its YOLO labels and cached
    (see ``coco_eval.ground_truth_for_images``).

Installation is idempotent and never imports Ultralytics itself: the patches go through the package's one
post-import hook mechanism (:mod:`yolo_nonlocal.integrations.import_hooks`), so a module that is not
imported yet is patched the moment it is, again after ``importlib.reload``, and one caught half-way through
its own import is patched as soon as it has finished. ``yolo_nonlocal.register()`` installs these patches;
``yolo_nonlocal.unregister()`` (or :func:`uninstall`) takes them off. Validators whose class replaces
``update_metrics`` or ``get_stats`` without the patched ones are left alone.

Environment switches (read at every validation, so they work from the stock ``yolo`` command)
    ``YOLO_NONLOCAL_TINY=1``          also report ``coco/APvt`` (2-8 px) and ``coco/APt`` (8-16 px)
    ``YOLO_NONLOCAL_COCO=0``          switch the COCO metrics off
    ``YOLO_NONLOCAL_COCO_BACKEND=..`` ``auto`` (default), ``pycocotools`` or ``faster-coco-eval``
    ``YOLO_NONLOCAL_COCO_MAX_DETS=N`` detections per image and class that COCOeval keeps (default 100)

An evaluation that fails (never expected) logs a warning and reports NaN: it never stops a training run.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from typing import Any, Callable

import numpy as np

from yolo_nonlocal.integrations import import_hooks
from yolo_nonlocal.utils.env import env_flag

__all__ = ["install", "uninstall", "is_installed", "coco_columns", "tiny_enabled", "align_to_header", "PATCHES",
           "patch_validator", "unpatch_validator", "patch_trainer", "unpatch_trainer", "ENV_TINY", "ENV_ENABLE",
           "ENV_BACKEND", "ENV_MAX_DETS", "PREFIX"]

ENV_TINY = "YOLO_NONLOCAL_TINY"
ENV_ENABLE = "YOLO_NONLOCAL_COCO"
ENV_BACKEND = "YOLO_NONLOCAL_COCO_BACKEND"
ENV_MAX_DETS = "YOLO_NONLOCAL_COCO_MAX_DETS"
PREFIX = "coco/"
_VALIDATOR_MODULE = "ultralytics.models.yolo.detect.val"
_TRAINER_MODULE = "ultralytics.engine.trainer"
_KEY = "yolo_nonlocal.metrics"
_STATE = "_yolo_nonlocal_coco_state"
_VALIDATOR_METHODS = ("init_metrics", "update_metrics", "gather_stats", "get_stats", "print_results")

_lock = threading.RLock()


def tiny_enabled() -> bool:
    """Whether the tiny-object ranges are switched on (``YOLO_NONLOCAL_TINY=1``)."""
    return env_flag(ENV_TINY, False)


def coco_columns(tiny: bool | None = None) -> list[str]:
    """The ``coco/*`` keys a validation adds (``results.csv`` columns), in order."""
    from yolo_nonlocal.metrics.coco import STAT_KEYS, TINY_STAT_KEYS

    tiny = tiny_enabled() if tiny is None else tiny
    return [PREFIX + k for k in STAT_KEYS + (TINY_STAT_KEYS if tiny else ())]


def _wrap(cls: type, name: str, make: Callable[[Callable], Callable]) -> None:
    import_hooks.wrap(cls, name, make, key=f"{_KEY}.{name}")


def _ours(cls: type, name: str) -> bool:
    """Whether ``cls.<name>`` (inherited or not) is the wrapper installed here (not a subclass's override)."""
    return import_hooks.wrapper_key(getattr(cls, name, None)) == f"{_KEY}.{name}"


# ----------------------------------------------------------------------------------------------------------------------
# The validator side
# ----------------------------------------------------------------------------------------------------------------------


class _Collector:
    """Per-validator state: the predictions of the current run and the (cached) ground truth."""

    def __init__(self) -> None:
        self.records: list[tuple[str, Any, Any, Any]] = []  # (image file, xywh (n,4), score (n,), class (n,))
        self.enabled = False
        self.failed = False
        self.stats: dict[str, float] | None = None
        self.backend = ""
        self.seconds = 0.0
        self.gt: dict | None = None
        self.gt_files: tuple[str, ...] | None = None


def _state(validator) -> _Collector:
    st = validator.__dict__.get(_STATE)
    if st is None:
        st = _Collector()
        validator.__dict__[_STATE] = st
    return st


def _warn(message: str) -> None:
    from ultralytics.utils import LOGGER

    LOGGER.warning(f"yolo-nonlocal COCO metrics: {message}")


def _init_metrics(original):
    def init_metrics(self, model, *args, **kwargs):
        result = original(self, model, *args, **kwargs)
        st = _state(self)
        st.records, st.stats, st.failed, st.seconds = [], None, False, 0.0
        cls = type(self)  # a subclass that replaces these methods without calling them is not ours to score
        st.enabled = (getattr(self.args, "task", None) == "detect" and env_flag(ENV_ENABLE, True)
                      and hasattr(getattr(self.dataloader, "dataset", None), "im_files")
                      and all(_ours(cls, m) for m in ("update_metrics", "get_stats")))
        return result

    return init_metrics


def _update_metrics(original):
    def update_metrics(self, preds, batch, *args, **kwargs):
        result = original(self, preds, batch, *args, **kwargs)
        st = _state(self)
        if not st.enabled or st.failed:
            return result
        try:
            for si, pred in enumerate(preds):
                pbatch = self._prepare_batch(si, batch)
                if len(pred["cls"]) == 0:
                    continue
                xyxy = self.scale_preds(pred, pbatch)["bboxes"].detach().float().cpu().numpy()
                xywh = xyxy.copy()
                xywh[:, 2:] -= xywh[:, :2]
                st.records.append((str(pbatch["im_file"]), xywh, pred["conf"].detach().float().cpu().numpy(),
                                   pred["cls"].detach().cpu().numpy().astype("int64")))
        except Exception as e:  # never stop a validation for the extra metrics
            st.failed = True
            _warn(f"collecting predictions failed ({type(e).__name__}: {e}); reporting NaN")
        return result

    return update_metrics


def _gather_stats(original):
    def gather_stats(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        st = _state(self)
        if st.enabled:
            from ultralytics.utils import RANK

            if RANK != -1:
                import torch.distributed as dist

                if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                    if RANK == 0:
                        gathered = [None] * dist.get_world_size()
                        dist.gather_object((st.records, st.failed), gathered, dst=0)
                        st.records = [r for records, _ in gathered for r in records]
                        st.failed = any(failed for _, failed in gathered)
                    else:
                        dist.gather_object((st.records, st.failed), None, dst=0)
                        st.records = []
        return result

    return gather_stats


def _ground_truth(validator, st: _Collector) -> dict:
    """The validator's GT, built from its dataset's label files once per image list (and cached on disk)."""
    from yolo_nonlocal.metrics.coco import ground_truth_for_images

    files = tuple(os.path.abspath(f) for f in validator.dataloader.dataset.im_files)
    if st.gt is None or st.gt_files != files:
        data = validator.data or {}
        names = data.get("names") or validator.names
        st.gt = ground_truth_for_images(files, names, kpt_shape=data.get("kpt_shape"))
        st.gt_files = files
    return st.gt


def _top_per_class(conf, cls, max_dets: int):
    """Indices (in their original order) of each class's ``max_dets`` best detections of one image.

    COCOeval itself keeps only those (a stable sort by score per image and category), so dropping the rest
    first changes no number; it bounds the work when a weak model fills ``max_det=300`` with one class.
    """
    if len(conf) <= max_dets:
        return np.arange(len(conf))
    keep = []
    for c in np.unique(cls):
        idx = np.flatnonzero(cls == c)
        keep.append(idx[np.argsort(-conf[idx], kind="stable")[:max_dets]])
    return np.sort(np.concatenate(keep))


def _evaluate(validator, st: _Collector, tiny: bool) -> dict[str, float]:
    from yolo_nonlocal.metrics.coco import cocoeval_stats, resolve_backend

    gt = _ground_truth(validator, st)
    ids = {img["path"]: img["id"] for img in gt["images"]}
    nc = len(gt["categories"])
    single = bool(getattr(validator.args, "single_cls", False))
    max_dets = int(os.environ.get(ENV_MAX_DETS, "100") or 100)
    dets = []
    for im_file, xywh, conf, cls in st.records:
        image_id = ids[os.path.abspath(im_file)]
        if single:
            cls = np.zeros_like(cls)
        keep = _top_per_class(conf, cls, max_dets)
        for box, score, c in zip(xywh[keep].tolist(), conf[keep].tolist(), cls[keep].tolist()):
            dets.append({"image_id": image_id, "category_id": int(c) + 1, "bbox": box, "score": score})
    if single:  # one class: every object is category 1
        gt = {**gt, "annotations": [{**a, "category_id": 1} for a in gt["annotations"]],
              "categories": [{"id": 1, "name": "object"}]}
        cat_ids = [1]
    else:
        keep = range(min(nc, len(validator.names or {}) or nc))  # a model with fewer classes: score those only
        classes = getattr(validator.args, "classes", None)
        if classes is not None:
            wanted = {int(c) for c in (classes if isinstance(classes, (list, tuple)) else [classes])}
            keep = [c for c in keep if c in wanted]
        cat_ids = [c + 1 for c in keep]
    backend = resolve_backend(os.environ.get(ENV_BACKEND, "auto") or "auto")
    st.backend = backend
    return cocoeval_stats(gt, dets, tiny=tiny, backend=backend, max_dets=max_dets, cat_ids=cat_ids)


def _get_stats(original):
    def get_stats(self, *args, **kwargs):
        stats = original(self, *args, **kwargs)
        st = _state(self)
        if not st.enabled or not isinstance(stats, dict):
            return stats
        tiny = tiny_enabled()
        t0 = time.perf_counter()
        try:
            if st.failed:
                raise RuntimeError("predictions were not collected")
            coco = _evaluate(self, st, tiny)
        except Exception as e:
            if not st.failed:
                _warn(f"evaluation failed ({type(e).__name__}: {e}); reporting NaN")
            st.failed = True
            coco = {k[len(PREFIX):]: math.nan for k in coco_columns(tiny)}
        st.seconds = time.perf_counter() - t0
        st.stats = coco
        st.records = []
        stats.update({PREFIX + k: float(v) for k, v in coco.items()})
        try:
            self.metrics.coco = dict(coco)
        except Exception:
            pass
        if not self.training:
            try:
                (self.save_dir / "coco_metrics.json").write_text(json.dumps(coco, indent=2) + "\n", encoding="utf-8")
            except OSError as e:
                _warn(f"cannot write {self.save_dir / 'coco_metrics.json'}: {e}")
        return stats

    return get_stats


def _print_results(original):
    def print_results(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        st = _state(self)
        if st.enabled and st.stats:
            from ultralytics.utils import LOGGER

            keys = list(st.stats)
            source = st.backend or "not evaluated"
            LOGGER.info(("%22s" + "%11s" * len(keys)) % ("COCO bbox", *keys))
            LOGGER.info(("%22s" + "%11.3g" * len(keys) + "  (%s, original-image px, %.2fs)")
                        % ("all", *st.stats.values(), source, st.seconds))
        return result

    return print_results


def patch_validator(module) -> None:
    """Wrap the five ``DetectionValidator`` methods of ``module`` (idempotent; re-applied after a reload)."""
    cls = getattr(module, "DetectionValidator", None)
    if cls is None:
        return
    with _lock:
        for name, make in zip(_VALIDATOR_METHODS, (_init_metrics, _update_metrics, _gather_stats, _get_stats,
                                                    _print_results)):
            _wrap(cls, name, make)


def unpatch_validator(module) -> None:
    cls = getattr(module, "DetectionValidator", None)
    if cls is None:
        return
    with _lock:
        for name in _VALIDATOR_METHODS:
            import_hooks.unwrap(cls, name, key=f"{_KEY}.{name}")


# ----------------------------------------------------------------------------------------------------------------------
# The trainer side: results.csv columns that follow the run's header
# ----------------------------------------------------------------------------------------------------------------------

_FIXED = ("epoch", "time")  # columns Ultralytics' save_metrics writes itself, before the metrics


def _csv_header(path) -> list[str] | None:
    """The column names of an existing results.csv (stripped: 8.3.x pads them), or None."""
    try:
        with open(path, encoding="utf-8") as f:
            line = f.readline()
    except OSError:
        return None
    names = [c.strip() for c in line.rstrip("\r\n").split(",")]
    return names if line.strip() and names else None


def _extend_csv(path, header_line: str, new: list[str]) -> None:
    """Append columns ``new`` to a results.csv: the header gains them, earlier rows get ``nan`` (atomic)."""
    with open(path, encoding="utf-8") as f:
        text = f.read().splitlines()
    first = text[0].split(",")
    width = len(first[-1]) if first[-1] != first[-1].strip() else 0  # 8.3.x pads every field to 23 characters
    pad = (lambda v: v.rjust(width)) if width else (lambda v: v)
    out = [text[0] + "".join("," + pad(c) for c in new)]
    out += [row + ("," + pad("nan")) * len(new) if row.strip() else row for row in text[1:]]
    tmp = f"{path}.yolo-nonlocal.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
    os.replace(tmp, path)


def align_to_header(metrics: dict, header: list[str]) -> tuple[dict, list[str]]:
    """``metrics`` in the order of an existing results.csv header; returns it and the keys the header lacks.

    Columns of the header that this epoch does not produce get NaN (never a shift of the later columns);
    keys the header lacks are returned so the caller can append them as new columns.
    """
    columns = [c for c in header if c not in _FIXED]
    aligned = {c: metrics.get(c, math.nan) for c in columns}
    extra = [k for k in metrics if k not in aligned]
    aligned.update({k: metrics[k] for k in extra})
    return aligned, extra


def _save_metrics(original):
    def save_metrics(self, metrics, *args, **kwargs):
        validator = getattr(self, "validator", None)
        st = validator.__dict__.get(_STATE) if validator is not None else None
        wanted = (getattr(getattr(validator, "args", None), "task", None) == "detect"
                  and env_flag(ENV_ENABLE, True) and (st is None or st.enabled))
        if wanted and isinstance(metrics, dict):
            columns = coco_columns()
            if any(c not in metrics for c in columns):  # an epoch without validation: placeholders, as Ultralytics
                rest = [(k, v) for k, v in metrics.items() if k not in columns]
                at = max((i + 1 for i, (k, _) in enumerate(rest) if k.startswith("metrics/")), default=len(rest))
                fill = [(c, metrics.get(c, 0.0)) for c in columns]
                metrics = dict(rest[:at] + fill + rest[at:])
        csv = getattr(self, "csv", None)
        header = _csv_header(csv) if isinstance(metrics, dict) and csv is not None and os.path.exists(csv) else None
        if header is not None:  # a resumed (or continued) run: follow the file's columns, whatever the environment
            try:
                metrics, extra = align_to_header(metrics, header)
                if extra:
                    _extend_csv(csv, ",".join(header), extra)
                    _warn(f"{csv} gains the column(s) {', '.join(extra)} (earlier rows: nan); this run started "
                          "without them")
            except Exception as e:  # never lose an epoch's row over this
                _warn(f"could not align {csv} to its header ({type(e).__name__}: {e})")
        return original(self, metrics, *args, **kwargs)

    return save_metrics


def patch_trainer(module) -> None:
    """Wrap ``BaseTrainer.save_metrics`` of ``module`` (idempotent; re-applied after a reload)."""
    cls = getattr(module, "BaseTrainer", None)
    if cls is None:
        return
    with _lock:
        _wrap(cls, "save_metrics", _save_metrics)


def unpatch_trainer(module) -> None:
    cls = getattr(module, "BaseTrainer", None)
    if cls is not None:
        import_hooks.unwrap(cls, "save_metrics", key=f"{_KEY}.save_metrics")


# ----------------------------------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------------------------------

PATCHES = (
    import_hooks.Patch(_VALIDATOR_MODULE, f"{_KEY}.validator", patch_validator, unpatch_validator),
    import_hooks.Patch(_TRAINER_MODULE, f"{_KEY}.trainer", patch_trainer, unpatch_trainer),
)


def install() -> None:
    """Add the COCO metrics to every Ultralytics detection validation of this process (idempotent).

    Imports no Ultralytics module: each patch applies now where its module is loaded, else when it is
    imported (and again after a reload). ``yolo_nonlocal.register()`` installs the same patches.
    """
    import_hooks.install_patches(PATCHES)


def is_installed() -> bool:
    """Whether the patches wait on (or are applied to) Ultralytics' modules in this process."""
    return all(import_hooks.has_hook(p.module, p.key) for p in PATCHES)


def uninstall() -> None:
    """Undo ``install()``: restore the original methods and drop the hooks (for tests and notebooks)."""
    import_hooks.uninstall_patches(PATCHES)
