"""Ultralytics integration: the stock ``yolo`` command understands ``NonLocal`` rows in model YAMLs.

Ultralytics has no plugin mechanism: ``ultralytics.nn.tasks.parse_model`` resolves a YAML module name with
``globals()[name]`` and calls a module it does not know as ``m(*args)``, without the input channels.
:func:`register` (run automatically by the start-up hook of :mod:`yolo_nonlocal._startup` whenever
``ultralytics.nn.tasks`` is imported, so also in DDP workers; callable by hand, idempotent) makes the stock
pipeline work end to end:

1. ``NonLocal`` (and ``NonLocal2d``) enter ``ultralytics.nn.tasks``' namespace.
2. ``parse_model`` is wrapped: the ``NonLocal`` rows of a YAML are validated first (a bad row raises an
   error that names its index, section and text) and their input channels are filled in, so one YAML row
   ``[-1, 1, NonLocal, []]`` or ``[-1, 1, NonLocal, [reduction, mode, sub_sample]]`` is right at every
   scale (n/s/m/l/x). The model's ``yaml`` keeps the row as written, so checkpoints stay portable.
3. Model YAMLs shipped in ``model_yamls/`` resolve by bare name from any folder (``yolov8n-nl.yaml``,
   ``yolo11s-nl.yaml``, ``yolov8n-nl-p2.yaml``...): Ultralytics' own lookup (with the scale letter
   stripped) is tried first, then the top level of :func:`model_yaml_dir`.
4. Pretrained weights of the stock model land in the Non-local model (``YOLO("yolov8n-nl.yaml")
   .load("yolov8n.pt")``, ``yolo train ... pretrained=yolov8n.pt``): layer indices shifted by the inserted
   blocks are remapped (:mod:`yolo_nonlocal.integrations.ultralytics.weights`).
5. Model summaries report true GFLOPs: the attention matmuls that Ultralytics' conv/BN FLOP counter
   misses are added (:mod:`yolo_nonlocal.integrations.ultralytics.flops`).
6. Checkpoints load under ``ULTRALYTICS_SAFE_LOAD=1``: the block classes join torch's weights-only
   allow-list. ONNX export with an opset below 14 is refused up front with a clear message.
7. The COCO small-object metrics callbacks of :mod:`yolo_nonlocal.integrations.ultralytics.metrics` are installed when
   that module is present.

Supported Ultralytics: 8.3.0 or newer for YOLOv8 and YOLO11 YAMLs, 8.4.0 or newer for YOLO26 YAMLs
(checked by ``tests/integrations/ultralytics/test_ultralytics_oldest.py`` against the oldest wheel).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "register",
    "is_registered",
    "model_yaml_dir",
    "find_model_yaml",
    "validate_nonlocal_rows",
    "NonLocalRowError",
    "NONLOCAL_NAMES",
    "MIN_ULTRALYTICS",
]

NONLOCAL_NAMES = ("NonLocal", "NonLocal2d")  # YAML module names handled here
MIN_ULTRALYTICS = "8.3.0"  # YOLO26 YAMLs need 8.4.0
_FLAG = "_yolo_nonlocal_registered"  # set on ultralytics.nn.tasks once register() has run
_WRAPPED = "__yolo_nonlocal_wrapped__"  # set on every wrapper installed here


class NonLocalRowError(ValueError):
    """A ``NonLocal`` row of a model YAML is malformed; the message names the row and says how to fix it."""


# ----------------------------------------------------------------------------------------------- YAMLs
def model_yaml_dir() -> Path:
    """Folder of the model YAMLs shipped with the package.

    In a wheel it is ``yolo_nonlocal/model_yamls`` (force-included); in an editable (development) install
    the package folder has none and the YAMLs are at the repository top level, next to the package.
    """
    import yolo_nonlocal

    candidates = []
    try:
        from importlib.resources import files

        candidates.append(Path(str(files("yolo_nonlocal") / "model_yamls")))
    except Exception:  # namespace-package oddities of some editable installs
        pass
    here = Path(yolo_nonlocal.__file__).resolve().parent
    candidates += [here / "model_yamls", here.parent / "model_yamls"]
    for c in candidates:
        if c.is_dir() and any(c.glob("*.yaml")):
            return c
    raise FileNotFoundError(
        "yolo-nonlocal: the model YAML folder is missing (looked in "
        + ", ".join(str(c) for c in candidates)
        + "); reinstall the package (pip install --force-reinstall yolo-nonlocal)"
    )


def find_model_yaml(name: str | Path) -> Path | None:
    """The shipped YAML for a bare file name (``yolov8-nl.yaml``), or None.

    Only bare names are looked up, and only at the top level of :func:`model_yaml_dir`: its subfolders
    hold YOLOv5/YOLOv7 YAMLs that Ultralytics cannot build.
    """
    name = str(name)
    p = Path(name)
    if p.name != name or p.suffix not in {".yaml", ".yml"}:
        return None
    try:
        candidate = model_yaml_dir() / p.name
    except FileNotFoundError:
        return None
    return candidate if candidate.is_file() else None


# -------------------------------------------------------------------------------------------- YAML rows
def _describe(i: int, n_backbone: int, row: Any) -> str:
    section = "backbone" if i < n_backbone else "head"
    return f"NonLocal row {i} ({section}): {row!r}"


def validate_nonlocal_rows(d: dict) -> list[int]:
    """Check every ``NonLocal`` row of a model dict; return their global indices (backbone, then head).

    A row is ``[-1, n, NonLocal, []]`` or ``[-1, n, NonLocal, [reduction, mode, sub_sample]]`` (any prefix
    of the three). Raises :class:`NonLocalRowError` naming the row for anything else.
    """
    from yolo_nonlocal.nonlocal_block import MODES

    backbone, head = list(d.get("backbone") or []), list(d.get("head") or [])
    found = []
    for i, row in enumerate(backbone + head):
        if not (isinstance(row, (list, tuple)) and len(row) >= 3 and row[2] in NONLOCAL_NAMES):
            continue
        where = _describe(i, len(backbone), row)
        if len(row) != 4:
            raise NonLocalRowError(f"{where}: a row is [from, repeats, module, args]; got {len(row)} fields")
        f, n, _, args = row
        if i == 0:
            raise NonLocalRowError(f"{where}: a NonLocal block cannot be the first layer; put it after a convolution")
        if isinstance(f, bool) or f != -1:
            raise NonLocalRowError(
                f"{where}: 'from' must be -1 (a NonLocal block refines the output of the layer just before it), "
                f"got {f!r}; move the row right after the layer it should refine"
            )
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise NonLocalRowError(f"{where}: repeats must be a positive int, got {n!r}")
        if args is None:
            args = []
        if not isinstance(args, (list, tuple)):
            raise NonLocalRowError(f"{where}: args must be a list [reduction, mode, sub_sample], got {args!r}")
        if len(args) > 3:
            raise NonLocalRowError(
                f"{where}: at most 3 args [reduction, mode, sub_sample] are allowed, got {len(args)}: {list(args)!r}; "
                "the input channels are filled in automatically, do not write them"
            )
        if len(args) > 0 and (isinstance(args[0], bool) or not isinstance(args[0], int) or args[0] < 1):
            raise NonLocalRowError(f"{where}: reduction (args[0]) must be a positive int such as 2, got {args[0]!r}")
        if len(args) > 1 and args[1] not in MODES:
            raise NonLocalRowError(f"{where}: unknown mode (args[1]) {args[1]!r}; expected one of {', '.join(MODES)}")
        if len(args) > 2 and not isinstance(args[2], bool):
            raise NonLocalRowError(f"{where}: sub_sample (args[2]) must be true or false, got {args[2]!r}")
        found.append(i)
    return found


def _split_rows(d: dict, rows: list) -> dict:
    """A shallow copy of ``d`` whose backbone/head are ``rows`` split back at the original boundary."""
    nb = len(d.get("backbone") or [])
    out = dict(d)
    out["backbone"], out["head"] = rows[:nb], rows[nb:]
    return out


def _probe_channels(orig_parse_model, d: dict, ch, nl_rows: list[int]) -> dict[int, int]:
    """Input channels of each NonLocal row, by building the model with ``nn.BatchNorm2d`` in their place.

    parse_model gives BatchNorm2d the channels of its input (it has done so since YOLOv5), so this works
    whatever parse_model's internals look like; the probe is built on the meta device (no memory, no init).
    """
    import copy

    import torch

    d = copy.deepcopy(d)  # parse_model edits args lists in place (Detect rows grow): keep the caller's intact
    rows = [list(r) for r in (d.get("backbone") or []) + (d.get("head") or [])]
    for i in nl_rows:
        rows[i] = [rows[i][0], 1, "nn.BatchNorm2d", []]
    probe = _split_rows(d, rows)
    try:
        with torch.device("meta"):
            seq, _ = orig_parse_model(probe, ch, verbose=False)
    except Exception:
        seq, _ = orig_parse_model(probe, ch, verbose=False)
    return {i: int(seq[i].num_features) for i in nl_rows}


def _wrap_parse_model(tasks) -> None:
    orig = tasks.parse_model
    if getattr(orig, _WRAPPED, False):
        return
    # Fast path: parse_model resolves a string arg that names one of its locals to that local's value; at the
    # top of each row its local `c2` is the previous layer's output channels (ch[-1]). Verified on every
    # supported release; if a release renames it, the BatchNorm2d probe below is used instead.
    code = getattr(orig, "__code__", None)
    use_local_c2 = code is not None and {"c2", "ch", "args"} <= set(code.co_varnames)

    @functools.wraps(orig)
    def parse_model(d, ch, verbose=True, *a, **kw):
        if not isinstance(d, dict):
            return orig(d, ch, verbose, *a, **kw)
        from yolo_nonlocal.integrations import import_hooks
        from yolo_nonlocal.integrations.ultralytics import options

        import_hooks.flush()  # patches of modules that were half-imported at register() time (every DDP rank builds)
        opts = options.read_options(d)  # a bad nonlocal_* key is refused before anything is built
        nl_rows = validate_nonlocal_rows(d)
        if not nl_rows:
            return orig(d, ch, verbose, *a, **kw)
        import copy

        pristine = copy.deepcopy(d)  # for the probe: parse_model edits args lists in place
        nb = len(d.get("backbone") or [])
        original = (pristine.get("backbone") or []) + (pristine.get("head") or [])
        rows = [list(r) for r in (d.get("backbone") or []) + (d.get("head") or [])]
        channels = None if (use_local_c2 and not _FORCE_PROBE) else _probe_channels(orig, pristine, ch, nl_rows)
        for i in nl_rows:
            args = list(rows[i][3] or [])
            rows[i][3] = ["c2" if channels is None else channels[i], *args]
        try:
            built = orig(_split_rows(d, rows), ch, verbose, *a, **kw)
            if opts.init_gamma != options.DEFAULT_INIT_GAMMA:
                options.apply_init_gamma(built[0], opts.init_gamma)
            return built
        except ValueError as e:
            if not str(e).startswith("NonLocal"):
                raise
            # A block refused its arguments (e.g. a reduction larger than its channels): say which row.
            try:
                chans = _probe_channels(orig, pristine, ch, nl_rows)
            except Exception:
                chans = {}
            import torch

            from yolo_nonlocal.nonlocal_block import NonLocal

            for i in nl_rows:
                if i in chans:
                    try:
                        with torch.device("meta"):
                            NonLocal(chans[i], *(original[i][3] or []))
                    except ValueError as row_error:
                        raise NonLocalRowError(
                            f"{_describe(i, nb, original[i])} cannot be built with its {chans[i]} input channels "
                            f"at this scale: {row_error}"
                        ) from e
            raise

    setattr(parse_model, _WRAPPED, True)
    parse_model.__yolo_nonlocal_original__ = orig
    tasks.parse_model = parse_model


_FORCE_PROBE = False  # tests set this to exercise the probe path on releases that have the fast path


# ---------------------------------------------------------------------------------------- YAML lookup
def _wrap_check_yaml(tasks) -> None:
    """Make ``yaml_model_load`` (which calls ``check_yaml`` from tasks' namespace) find the shipped YAMLs."""
    orig = getattr(tasks, "check_yaml", None)
    if orig is None or getattr(orig, _WRAPPED, False):
        return

    @functools.wraps(orig)
    def check_yaml(file, suffix=(".yaml", ".yml"), hard=True, *a, **kw):
        found = orig(file, suffix, False, *a, **kw)
        if found:
            return found
        ours = find_model_yaml(file)
        if ours is not None:
            return str(ours)
        return orig(file, suffix, hard, *a, **kw)

    setattr(check_yaml, _WRAPPED, True)
    tasks.check_yaml = check_yaml


# --------------------------------------------------------------------------------- checkpoints, export
def _allow_safe_load() -> None:
    """Let ``torch.load(weights_only=True)`` (Ultralytics' ULTRALYTICS_SAFE_LOAD=1 path) rebuild the blocks."""
    import torch

    from yolo_nonlocal import nonlocal_block as nb

    add = getattr(getattr(torch, "serialization", None), "add_safe_globals", None)
    if add is not None:  # torch >= 2.4
        add([nb.NonLocal, nb.NonLocal1d, nb.NonLocal2d, nb.NonLocal3d])


# formats whose exporters go through torch.onnx.export with the `opset` argument
_ONNX_FORMATS = {"onnx", "engine", "mnn", "ncnn", "rknn", "paddle", "litert", "tflite", "tfjs", "saved_model", "pb",
                 "imx", "ascend", "xilinx", "axelera"}


def _export_guard(exporter) -> None:
    """``on_export_start`` callback: refuse an ONNX opset below the block's minimum before anything is traced."""
    from yolo_nonlocal.nonlocal_block import ONNX_MIN_OPSET, NonLocal

    args = getattr(exporter, "args", None)
    opset = getattr(args, "opset", None)
    fmt = str(getattr(args, "format", "")).lower()
    model = getattr(exporter, "model", None)
    if not opset or fmt not in _ONNX_FORMATS or model is None:
        return
    if int(opset) < ONNX_MIN_OPSET and any(isinstance(m, NonLocal) for m in model.modules()):
        raise ValueError(
            f"yolo-nonlocal: this model has NonLocal blocks, whose attention exports to ONNX from opset "
            f"{ONNX_MIN_OPSET} on; opset={opset} was asked. Export with opset={ONNX_MIN_OPSET} or newer "
            f"(or leave opset unset to let Ultralytics choose)."
        )


def _install_export_guard() -> None:
    from ultralytics.utils.callbacks import base

    hooks = base.default_callbacks.setdefault("on_export_start", [])
    if not any(getattr(h, _WRAPPED, False) for h in hooks):
        setattr(_export_guard, _WRAPPED, True)
        hooks.append(_export_guard)


def _install_metrics() -> None:
    """Install the COCO-metrics callbacks of yolo_nonlocal.integrations.ultralytics.metrics if that module exists."""
    try:
        from yolo_nonlocal.integrations.ultralytics import metrics as ultralytics_metrics
    except ModuleNotFoundError as e:
        if e.name in {"yolo_nonlocal.integrations.ultralytics.metrics"}:
            return  # not part of this installation
        raise
    except ImportError as e:
        if "ultralytics_metrics" in str(e):
            return
        raise
    ultralytics_metrics.install()


# ------------------------------------------------------------------------------------------ register
def is_registered() -> bool:
    """Whether :func:`register` has run in this process (without importing Ultralytics)."""
    tasks = sys.modules.get("ultralytics.nn.tasks")
    return bool(tasks is not None and getattr(tasks, _FLAG, False))


def register() -> None:
    """Teach Ultralytics about ``NonLocal`` (idempotent; see the module docstring for what it does).

    Runs automatically in every process of an environment where yolo-nonlocal is installed, as soon as
    ``ultralytics.nn.tasks`` is imported; call it by hand where the start-up hook is disabled.
    """
    import importlib

    tasks = importlib.import_module("ultralytics.nn.tasks")
    if getattr(tasks, _FLAG, False):
        return
    _install_metrics()  # first: idempotent, imports nothing of Ultralytics, and must not depend on the steps below
    from yolo_nonlocal import nonlocal_block as nb

    tasks.NonLocal = nb.NonLocal
    tasks.NonLocal2d = nb.NonLocal2d
    _wrap_parse_model(tasks)
    _wrap_check_yaml(tasks)
    _allow_safe_load()

    from yolo_nonlocal.integrations.ultralytics import flops as ultralytics_flops, weights as ultralytics_weights

    ultralytics_weights.install(tasks)
    ultralytics_flops.install()
    from yolo_nonlocal.integrations.ultralytics import options

    options.install()
    _install_export_guard()
    setattr(tasks, _FLAG, True)
