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
    (keeps the CSV columns stable on epochs without validation). Predictions stay in memory: the user's
    ``save_json`` is not touched. Ground truth is built once per dataset from its YOLO labels and cached
    (see ``coco_eval.ground_truth_for_images``).

Installation is idempotent and never imports Ultralytics itself: a module that is not imported yet is
patched the moment it is (a post-import hook), so ``install()`` is safe to call from inside Ultralytics' own
import (``yolo_nonlocal.integrations.ultralytics.registration.register()`` calls it when ``ultralytics.nn.tasks`` loads).
A module caught half-way through its own import at that moment (``import ultralytics.engine.trainer``
imports ``nn.tasks`` before it defines ``BaseTrainer``) is patched by an ``on_pretrain_routine_start`` /
``on_val_start`` default callback, i.e. before any training or validation uses it. Validators whose class
replaces ``update_metrics`` or ``get_stats`` without the patched ones are left alone.

Environment switches (read at every validation, so they work from the stock ``yolo`` command)
    ``YOLO_NONLOCAL_TINY=1``          also report ``coco/APvt`` (2-8 px) and ``coco/APt`` (8-16 px)
    ``YOLO_NONLOCAL_COCO=0``          switch the COCO metrics off
    ``YOLO_NONLOCAL_COCO_BACKEND=..`` ``auto`` (default), ``pycocotools`` or ``faster-coco-eval``
    ``YOLO_NONLOCAL_COCO_MAX_DETS=N`` detections per image and class that COCOeval keeps (default 100)

An evaluation that fails (never expected) logs a warning and reports NaN: it never stops a training run.
"""

from __future__ import annotations

import importlib.abc
import json
import math
import os
import sys
import threading
import time
from typing import Any, Callable

import numpy as np

__all__ = ["install", "uninstall", "is_installed", "coco_columns", "tiny_enabled", "ENV_TINY", "ENV_ENABLE",
           "ENV_BACKEND", "ENV_MAX_DETS", "PREFIX"]

ENV_TINY = "YOLO_NONLOCAL_TINY"
ENV_ENABLE = "YOLO_NONLOCAL_COCO"
ENV_BACKEND = "YOLO_NONLOCAL_COCO_BACKEND"
ENV_MAX_DETS = "YOLO_NONLOCAL_COCO_MAX_DETS"
PREFIX = "coco/"
_VALIDATOR_MODULE = "ultralytics.models.yolo.detect.val"
_TRAINER_MODULE = "ultralytics.engine.trainer"
_CALLBACKS_MODULE = "ultralytics.utils.callbacks.base"
_MARK = "_yolo_nonlocal_coco"
_STATE = "_yolo_nonlocal_coco_state"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

_lock = threading.RLock()
_installed = False
_originals: list[tuple[type, str, Any]] = []  # (class, attribute, original) for uninstall()


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    return True if value in _TRUE else False if value in _FALSE else default


def tiny_enabled() -> bool:
    """Whether the tiny-object ranges are switched on (``YOLO_NONLOCAL_TINY=1``)."""
    return _env_flag(ENV_TINY, False)


def coco_columns(tiny: bool | None = None) -> list[str]:
    """The ``coco/*`` keys a validation adds (``results.csv`` columns), in order."""
    from yolo_nonlocal.metrics.coco import STAT_KEYS, TINY_STAT_KEYS

    tiny = tiny_enabled() if tiny is None else tiny
    return [PREFIX + k for k in STAT_KEYS + (TINY_STAT_KEYS if tiny else ())]


# ----------------------------------------------------------------------------------------------------------------------
# Post-import hook: patch a module when (or if already) it is imported, without importing it ourselves
# ----------------------------------------------------------------------------------------------------------------------


class _CallbackLoader(importlib.abc.Loader):
    """Delegates to the real loader, then runs the callbacks on the freshly executed module."""

    def __init__(self, loader: Any, callbacks: list[Callable[[Any], None]]):
        self._loader = loader
        self._callbacks = callbacks

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        for cb in self._callbacks:
            cb(module)

    def __getattr__(self, name: str):
        return getattr(self._loader, name)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """A meta-path finder that only wraps the loader of the modules it waits for."""

    def __init__(self) -> None:
        self.pending: dict[str, list[Callable[[Any], None]]] = {}

    def find_spec(self, fullname, path=None, target=None):
        callbacks = self.pending.get(fullname)
        if not callbacks:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        del self.pending[fullname]
        spec.loader = _CallbackLoader(spec.loader, callbacks)
        return spec


_finder = _PostImportFinder()


def _loaded(name: str):
    """The module ``name`` if it is fully imported (not absent, not half-way through its own import)."""
    module = sys.modules.get(name)
    if module is None or getattr(getattr(module, "__spec__", None), "_initializing", False):
        return None
    return module


def _when_imported(name: str, callback: Callable[[Any], None]) -> None:
    """Call ``callback(module)`` now if ``name`` is fully imported, else right after it is.

    A module half-way through its own import (``install()`` runs inside Ultralytics' import chain) cannot be
    patched now nor hooked any more: the default callbacks below catch that case before any run starts.
    """
    module = _loaded(name)
    if module is not None:
        callback(module)
        return
    if name in sys.modules:
        return
    _finder.pending.setdefault(name, []).append(callback)
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


def _wrap(cls: type, name: str, make: Callable[[Callable], Callable]) -> None:
    original = cls.__dict__.get(name)
    if original is None or getattr(original, _MARK, False):
        return
    wrapper = make(original)
    setattr(wrapper, _MARK, True)
    wrapper.__wrapped__ = original
    wrapper.__name__ = getattr(original, "__name__", name)
    wrapper.__qualname__ = getattr(original, "__qualname__", name)
    wrapper.__doc__ = getattr(original, "__doc__", None)
    setattr(cls, name, wrapper)
    _originals.append((cls, name, original))


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
        st.enabled = (getattr(self.args, "task", None) == "detect" and _env_flag(ENV_ENABLE, True)
                      and hasattr(getattr(self.dataloader, "dataset", None), "im_files")
                      and all(getattr(getattr(cls, m, None), _MARK, False) for m in ("update_metrics", "get_stats")))
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


def _patch_validator(module) -> None:
    cls = getattr(module, "DetectionValidator", None)
    if cls is None:
        return
    with _lock:
        _wrap(cls, "init_metrics", _init_metrics)
        _wrap(cls, "update_metrics", _update_metrics)
        _wrap(cls, "gather_stats", _gather_stats)
        _wrap(cls, "get_stats", _get_stats)
        _wrap(cls, "print_results", _print_results)


# ----------------------------------------------------------------------------------------------------------------------
# The trainer side: stable results.csv columns
# ----------------------------------------------------------------------------------------------------------------------


def _save_metrics(original):
    def save_metrics(self, metrics, *args, **kwargs):
        validator = getattr(self, "validator", None)
        st = validator.__dict__.get(_STATE) if validator is not None else None
        wanted = (getattr(getattr(validator, "args", None), "task", None) == "detect"
                  and _env_flag(ENV_ENABLE, True) and (st is None or st.enabled))
        if wanted and isinstance(metrics, dict):
            columns = coco_columns()
            if any(c not in metrics for c in columns):  # an epoch without validation: placeholders, as Ultralytics
                rest = [(k, v) for k, v in metrics.items() if k not in columns]
                at = max((i + 1 for i, (k, _) in enumerate(rest) if k.startswith("metrics/")), default=len(rest))
                fill = [(c, metrics.get(c, 0.0)) for c in columns]
                metrics = dict(rest[:at] + fill + rest[at:])
        return original(self, metrics, *args, **kwargs)

    return save_metrics


def _patch_trainer(module) -> None:
    cls = getattr(module, "BaseTrainer", None)
    if cls is None:
        return
    with _lock:
        _wrap(cls, "save_metrics", _save_metrics)


# ----------------------------------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------------------------------


def _patch_loaded(*_args) -> None:
    """Patch whichever of the two classes is loaded and not patched yet (cheap when both are)."""
    if not _installed:
        return
    for name, patch in ((_VALIDATOR_MODULE, _patch_validator), (_TRAINER_MODULE, _patch_trainer)):
        module = _loaded(name)
        if module is not None:
            patch(module)


def _add_default_callbacks(module) -> None:
    """Run ``_patch_loaded`` when any training or validation starts, before the patched methods are needed."""
    callbacks = getattr(module, "default_callbacks", None)
    if not isinstance(callbacks, dict):
        return
    for event in ("on_pretrain_routine_start", "on_val_start"):
        hooks = callbacks.setdefault(event, [])
        if _patch_loaded not in hooks:
            hooks.append(_patch_loaded)


def install() -> None:
    """Add the COCO metrics to every Ultralytics detection validation of this process (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
        _when_imported(_VALIDATOR_MODULE, _patch_validator)
        _when_imported(_TRAINER_MODULE, _patch_trainer)
        _when_imported(_CALLBACKS_MODULE, _add_default_callbacks)


def is_installed() -> bool:
    """Whether ``install()`` ran in this process (the patches apply as soon as Ultralytics' modules load)."""
    return _installed


def uninstall() -> None:
    """Undo ``install()``: restore the original methods and drop pending hooks (for tests and notebooks)."""
    global _installed
    with _lock:
        while _originals:
            cls, name, original = _originals.pop()
            setattr(cls, name, original)
        for name in (_VALIDATOR_MODULE, _TRAINER_MODULE, _CALLBACKS_MODULE):
            _finder.pending.pop(name, None)
        base = sys.modules.get(_CALLBACKS_MODULE)
        for hooks in getattr(base, "default_callbacks", {}).values():
            while _patch_loaded in hooks:
                hooks.remove(_patch_loaded)
        if _finder in sys.meta_path and not _finder.pending:
            sys.meta_path.remove(_finder)
        _installed = False
