"""``register()`` / ``unregister()``: every patch the package makes to Ultralytics, as one table.

Ultralytics has no plugin mechanism: ``parse_model`` resolves a YAML module name with ``globals()[name]`` in
``ultralytics.nn.tasks``. Like an OpenTelemetry instrumentor, :func:`register` installs a fixed set of
reversible patches, each bound to the Ultralytics module it changes, through the package's one post-import
hook mechanism (:mod:`yolo_nonlocal.integrations.import_hooks`): a patch applies now where its module is
loaded, the moment it is imported where not, and again after ``importlib.reload`` re-executes it.
:func:`unregister` takes every patch off. Both are idempotent.

The patches (:data:`PATCHES`), by concept:

- ``rows``: the block classes of :mod:`~yolo_nonlocal.integrations.ultralytics.blocks` enter ``tasks``'
  namespace; ``parse_model`` checks block rows and fills in their input channels
  (:mod:`~yolo_nonlocal.integrations.ultralytics.rows`);
- ``yamls``: the shipped YAMLs resolve by bare name from any folder (:mod:`~.yamls`);
- ``weights``: pretrained weights are remapped around the blocks, and the log says what landed (:mod:`~.weights`);
- ``checkpoints``: weights-only loading (``ULTRALYTICS_SAFE_LOAD=1``) and the ONNX opset guard (:mod:`~.checkpoints`);
- ``flops``: model summaries count the attention (:mod:`~.flops`);
- ``options``: ``nonlocal_lr_mult`` param groups in training (:mod:`~.options`);
- ``metrics``: COCO small-object metrics in every detection validation (:mod:`~.metrics`).

The start-up hook of :mod:`yolo_nonlocal._startup` calls :func:`register` as soon as ``ultralytics.nn.tasks``
is imported, in every process (the ``yolo`` command, notebooks, DDP workers).

Supported Ultralytics: :data:`MIN_ULTRALYTICS` (8.3.0) or newer for YOLOv8 and YOLO11 YAMLs, 8.4.0 or newer
for YOLO26 YAMLs (:data:`MIN_ULTRALYTICS_YOLO26`); an older release is refused by :func:`register` with
:class:`UnsupportedUltralyticsError`. Checked by ``tests/integrations/ultralytics/test_ultralytics_oldest.py``.
"""

from __future__ import annotations

import sys

from yolo_nonlocal.integrations import import_hooks
from yolo_nonlocal.integrations.import_hooks import Patch
from yolo_nonlocal.integrations.ultralytics import checkpoints, rows, yamls
from yolo_nonlocal.integrations.ultralytics.rows import NonLocalRowError, UnknownModuleError, validate_nonlocal_rows
from yolo_nonlocal.integrations.ultralytics.yamls import find_model_yaml, model_yaml_dir

__all__ = [
    "register",
    "unregister",
    "is_registered",
    "check_version",
    "version_tuple",
    "supported_releases",
    "model_yaml_dir",
    "find_model_yaml",
    "validate_nonlocal_rows",
    "NonLocalRowError",
    "UnknownModuleError",
    "UnsupportedUltralyticsError",
    "NONLOCAL_NAMES",
    "MIN_ULTRALYTICS",
    "MIN_ULTRALYTICS_YOLO26",
    "PATCHES",
]

NONLOCAL_NAMES = ("NonLocal", "NonLocal2d")  # YAML module names of the NonLocal family (see blocks.SPECS)
MIN_ULTRALYTICS = "8.3.0"  # YOLOv8 and YOLO11 YAMLs
MIN_ULTRALYTICS_YOLO26 = "8.4.0"  # YOLO26 modules appeared in 8.4
TASKS = "ultralytics.nn.tasks"
AUTOREGISTER_KEY = "yolo_nonlocal.autoregister"  # the start-up hook's (yolo_nonlocal._startup)


class UnsupportedUltralyticsError(RuntimeError):
    """The installed Ultralytics is older than the oldest release the integration supports."""


def supported_releases() -> str:
    """The supported Ultralytics releases, in words."""
    return (f"ultralytics>={MIN_ULTRALYTICS} for the YOLOv8 and YOLO11 YAMLs, >={MIN_ULTRALYTICS_YOLO26} for the "
            "YOLO26 YAMLs")


def version_tuple(version: str) -> tuple[int, ...]:
    """(8, 4, 190) for "8.4.190"; the leading numeric parts only ("8.4.0rc1" -> (8, 4, 0))."""
    out = []
    for part in str(version).split("."):
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        out.append(int(digits))
        if len(digits) != len(part):
            break
    return tuple(out)


def _installed_version() -> str | None:
    module = sys.modules.get("ultralytics")
    version = getattr(module, "__version__", None)
    if version:
        return str(version)
    try:
        from importlib.metadata import version as dist_version

        return dist_version("ultralytics")
    except Exception:
        return None


def check_version(version: str | None = None) -> str:
    """Return the Ultralytics version, or raise :class:`UnsupportedUltralyticsError` saying what is supported."""
    version = version or _installed_version()
    if version is None:
        raise UnsupportedUltralyticsError(f"yolo-nonlocal: Ultralytics is not installed; install {supported_releases()}")
    if version_tuple(version) < version_tuple(MIN_ULTRALYTICS):
        raise UnsupportedUltralyticsError(
            f"yolo-nonlocal: Ultralytics {version} is older than the oldest supported release; supported: "
            f"{supported_releases()}. Upgrade with: pip install -U 'ultralytics>={MIN_ULTRALYTICS}'"
        )
    return version


def _flush_callbacks(base) -> None:
    """A default callback at the start of every training / validation: apply deferred patches (belt and braces)."""
    hooks = getattr(base, "default_callbacks", None)
    if not isinstance(hooks, dict):
        return
    for event in ("on_pretrain_routine_start", "on_val_start"):
        callbacks = hooks.setdefault(event, [])
        if _flush not in callbacks:
            callbacks.append(_flush)


def _remove_flush_callbacks(base) -> None:
    for callbacks in getattr(base, "default_callbacks", {}).values():
        while _flush in callbacks:
            callbacks.remove(_flush)


def _flush(*_args) -> None:
    import_hooks.flush()


def _patch_flops(torch_utils) -> None:
    from yolo_nonlocal.integrations.ultralytics import flops

    flops.patch(torch_utils)


def _unpatch_flops(torch_utils) -> None:
    from yolo_nonlocal.integrations.ultralytics import flops

    flops.unpatch(torch_utils)


def _patch_weights(tasks) -> None:
    from yolo_nonlocal.integrations.ultralytics import weights

    weights.patch(tasks)


def _unpatch_weights(tasks) -> None:
    from yolo_nonlocal.integrations.ultralytics import weights

    weights.unpatch(tasks)


def _patch_options(trainer) -> None:
    from yolo_nonlocal.integrations.ultralytics import options

    options.patch_trainer(trainer)


def _unpatch_options(trainer) -> None:
    from yolo_nonlocal.integrations.ultralytics import options

    options.unpatch_trainer(trainer)


def _metrics_patches() -> tuple[Patch, ...]:
    from yolo_nonlocal.integrations.ultralytics import metrics

    return metrics.PATCHES


_CALLBACKS = "ultralytics.utils.callbacks.base"

# (module, key, apply, revert), applied in this order; each apply is idempotent and re-run after a reload
_OWN_PATCHES: tuple[Patch, ...] = (
    Patch(TASKS, rows.NAMES_KEY, rows.add_names, rows.remove_names),
    Patch(TASKS, rows.KEY, rows.patch, rows.unpatch),
    Patch(TASKS, yamls.KEY, yamls.patch, yamls.unpatch),
    Patch(TASKS, "yolo_nonlocal.checkpoints.safe_load", checkpoints.allow_safe_load, checkpoints.disallow_safe_load),
    Patch(TASKS, "yolo_nonlocal.weights.load", _patch_weights, _unpatch_weights),
    Patch("ultralytics.utils.torch_utils", "yolo_nonlocal.flops.get_flops", _patch_flops, _unpatch_flops),
    Patch(_CALLBACKS, "yolo_nonlocal.checkpoints.export_guard", checkpoints.add_export_guard,
          checkpoints.remove_export_guard),
    Patch(_CALLBACKS, "yolo_nonlocal.import_hooks.flush", _flush_callbacks, _remove_flush_callbacks),
    Patch("ultralytics.engine.trainer", "yolo_nonlocal.options.build_optimizer", _patch_options, _unpatch_options),
)


def _all_patches() -> tuple[Patch, ...]:
    return _OWN_PATCHES + _metrics_patches()


PATCHES = _OWN_PATCHES  # the metrics module adds its own (metrics.PATCHES); register() installs both


def is_registered() -> bool:
    """Whether :func:`register` is in effect in this process (imports nothing of Ultralytics)."""
    if not all(import_hooks.has_hook(p.module, p.key) for p in _OWN_PATCHES):
        return False
    tasks = sys.modules.get(TASKS)
    return tasks is None or import_hooks.wrapper_key(vars(tasks).get("parse_model")) == rows.KEY


def register() -> None:
    """Teach Ultralytics about the blocks (idempotent): install every patch of :data:`PATCHES` and metrics'.

    Runs automatically in every process of an environment where yolo-nonlocal is installed, as soon as
    ``ultralytics.nn.tasks`` is imported; call it by hand where the start-up hook is disabled
    (``YOLO_NONLOCAL_NO_AUTOREGISTER=1``) or after :func:`unregister`. Raises
    :class:`UnsupportedUltralyticsError` on a release older than :data:`MIN_ULTRALYTICS`.
    """
    import importlib

    check_version()
    import_hooks.install_patches(_all_patches())
    if TASKS not in sys.modules:
        importlib.import_module(TASKS)  # the hooks above apply as its body finishes


def unregister() -> None:
    """Undo :func:`register`: every patch comes off, and the start-up hook stops re-registering (idempotent).

    Models already built keep working (their block objects are ordinary modules); YAMLs with block rows
    fail to build until :func:`register` is called again.
    """
    import_hooks.remove_hook(TASKS, AUTOREGISTER_KEY)
    import_hooks.uninstall_patches(_all_patches())
