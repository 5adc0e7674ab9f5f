"""Block rows of Ultralytics model YAMLs: validation, input channels, and the ``parse_model`` wrapper.

Ultralytics' ``parse_model`` resolves a row's module name with ``globals()[name]`` in ``ultralytics.nn.tasks``
and calls a module it does not know as ``m(*args)``, without the input channels. The wrapper installed by
:func:`patch` (one per block family of :mod:`~yolo_nonlocal.integrations.ultralytics.blocks`):

1. checks every block row first; a bad row raises :class:`NonLocalRowError` naming its index, section and
   text. Quoted values are read as Ultralytics reads them (``'True'`` -> True, ``'2'`` -> 2);
2. fills in the input channels, so one row ``[-1, 1, NonLocal, []]`` or ``[-1, 1, NonLocal, [reduction, mode,
   sub_sample]]`` is right at every scale. Fast path: the string ``"c2"``, which parse_model resolves to its
   local ``c2`` (the previous layer's output channels at the top of each row, on every supported release);
   otherwise a probe (the model built once on the meta device with ``nn.BatchNorm2d`` in the block rows,
   which parse_model gives its input channels). The model's ``yaml`` keeps the row as written;
3. reads the module-zoo style ``[-1, 1, NonLocal, [512]]`` (channels first) for what it is: a first
   argument too large for a reduction is accepted as the channel count when it equals the row's input
   channels, as written or after the YAML's width scaling; otherwise the row is refused with a message
   that says how to write it. It is never silently read as a reduction of 512;
4. names a misspelt module (``Nonlocal``, ``NonLocal3d``) with a did-you-mean instead of a bare ``KeyError``;
5. applies ``nonlocal_init_gamma`` and ``nonlocal_init_attention``
   (:mod:`~yolo_nonlocal.integrations.ultralytics.options`) to the blocks built.
"""

from __future__ import annotations

import ast
import copy
import difflib
import math
from dataclasses import dataclass
from typing import Any

from yolo_nonlocal.integrations import import_hooks
from yolo_nonlocal.integrations.ultralytics import blocks

__all__ = ["NonLocalRowError", "UnknownModuleError", "RowPlan", "plan_rows", "validate_nonlocal_rows", "patch",
           "unpatch", "add_names", "remove_names", "KEY"]

KEY = "yolo_nonlocal.rows.parse_model"
NAMES_KEY = "yolo_nonlocal.rows.names"
_FORCE_PROBE = False  # tests set this to exercise the probe path on releases that have the fast path


class NonLocalRowError(ValueError):
    """A block row of a model YAML is malformed; the message names the row and says how to fix it."""


class UnknownModuleError(NonLocalRowError, KeyError):
    """A row names a module Ultralytics does not know, close to one it does (a ``KeyError`` as Ultralytics')."""

    def __str__(self) -> str:  # KeyError would show the repr of the message
        return str(self.args[0]) if self.args else ""


@dataclass
class RowPlan:
    """A validated block row: global index, family, its arguments read as Ultralytics reads them."""

    index: int
    spec: blocks.BlockSpec
    args: list
    where: str
    zoo_channels: int | None = None  # a first argument that can only be a channel count (checked later)


def _describe(i: int, n_backbone: int, row: Any) -> str:
    section = "backbone" if i < n_backbone else "head"
    name = row[2] if isinstance(row, (list, tuple)) and len(row) > 2 else "block"
    return f"{name} row {i} ({section}): {row!r}"


def _literal(value: Any) -> Any:
    """A string argument as parse_model reads it (``ast.literal_eval``), else unchanged."""
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def _check_arg(where: str, k: int, arg: blocks.ArgSpec, value: Any) -> None:
    label = f"{arg.name} (args[{k}])"
    if arg.kind == "int" or (arg.kind == "int_or_none" and value is not None):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise NonLocalRowError(f"{where}: {label} must be a positive int such as {arg.example or 2}, got {value!r}")
    elif arg.kind == "choice":
        allowed = blocks.choices(arg)
        if value not in allowed:
            raise NonLocalRowError(f"{where}: unknown {label} {value!r}; expected one of {', '.join(allowed)}")
    elif arg.kind == "bool":
        if not isinstance(value, bool):
            raise NonLocalRowError(f"{where}: {label} must be true or false, got {value!r}")


def plan_rows(d: dict) -> list[RowPlan]:
    """Check every block row of a model dict; return them in order (backbone, then head).

    Raises :class:`NonLocalRowError` naming the row for anything malformed.
    """
    backbone, head = list(d.get("backbone") or []), list(d.get("head") or [])
    plans = []
    for i, row in enumerate(backbone + head):
        spec = blocks.spec_for(row[2]) if isinstance(row, (list, tuple)) and len(row) >= 3 else None
        if spec is None:
            continue
        where = _describe(i, len(backbone), row)
        if len(row) != 4:
            raise NonLocalRowError(f"{where}: a row is [from, repeats, module, args]; got {len(row)} fields")
        f, n, _, args = row
        if i == 0:
            raise NonLocalRowError(f"{where}: a {spec.family} block cannot be the first layer; put it after a convolution")
        if isinstance(f, bool) or f != -1:
            raise NonLocalRowError(
                f"{where}: 'from' must be -1 (a {spec.family} block refines the output of the layer just before it), "
                f"got {f!r}; move the row right after the layer it should refine"
            )
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise NonLocalRowError(f"{where}: repeats must be a positive int, got {n!r}")
        if args is None:
            args = []
        if not isinstance(args, (list, tuple)):
            raise NonLocalRowError(f"{where}: args must be a list {_names(spec)}, got {args!r}")
        args = [_literal(a) for a in args]
        zoo = None
        first_int = bool(args) and isinstance(args[0], int) and not isinstance(args[0], bool)
        if first_int and (args[0] > spec.max_reduction or (len(args) == len(spec.args) + 1 and _fits(spec, args[1:]))):
            zoo, args = args[0], args[1:]  # channels first, as module zoos write; checked against the channels
        if len(args) > len(spec.args):
            raise NonLocalRowError(
                f"{where}: at most {len(spec.args)} args {_names(spec)} are allowed, got {len(args)}: {list(args)!r}; "
                "the input channels are filled in automatically, do not write them"
            )
        for k, (arg, value) in enumerate(zip(spec.args, args)):
            _check_arg(where, k + (zoo is not None), arg, value)
        plans.append(RowPlan(i, spec, list(args), where, zoo))
    return plans


def _fits(spec: blocks.BlockSpec, args: list) -> bool:
    """Whether ``args`` are valid row arguments of ``spec`` (used to recognise a channels-first row)."""
    try:
        for k, (arg, value) in enumerate(zip(spec.args, args)):
            _check_arg("", k, arg, value)
    except NonLocalRowError:
        return False
    return True


def _names(spec: blocks.BlockSpec) -> str:
    return "[" + ", ".join(a.name for a in spec.args) + "]"


def validate_nonlocal_rows(d: dict) -> list[int]:
    """Global indices of the block rows of a model dict, after checking them (see :func:`plan_rows`)."""
    return [p.index for p in plan_rows(d)]


def _split_rows(d: dict, rows: list) -> dict:
    """A shallow copy of ``d`` whose backbone/head are ``rows`` split back at the original boundary."""
    nb = len(d.get("backbone") or [])
    out = dict(d)
    out["backbone"], out["head"] = rows[:nb], rows[nb:]
    return out


def _probe_channels(orig_parse_model, d: dict, ch, indices: list[int]) -> dict[int, int]:
    """Input channels of each block row, by building the model with ``nn.BatchNorm2d`` in their place.

    parse_model gives BatchNorm2d the channels of its input (it has done so since YOLOv5), so this works
    whatever parse_model's internals look like; the probe is built on the meta device (no memory, no init).
    """
    import torch

    d = copy.deepcopy(d)  # parse_model edits args lists in place (Detect rows grow): keep the caller's intact
    rows = [list(r) for r in (d.get("backbone") or []) + (d.get("head") or [])]
    for i in indices:
        rows[i] = [rows[i][0], 1, "nn.BatchNorm2d", []]
    probe = _split_rows(d, rows)
    try:
        with torch.device("meta"):
            seq, _ = orig_parse_model(probe, ch, verbose=False)
    except Exception:
        seq, _ = orig_parse_model(probe, ch, verbose=False)
    return {i: int(seq[i].num_features) for i in indices}


def _scaled_channels(c: int, d: dict) -> int:
    """The channel count a base-module row writing ``c`` gets at the YAML's scale (width, max_channels).

    The YAML convention: ``c`` is capped at the scale's max_channels, multiplied by its width and rounded up
    to a multiple of 8.
    """
    scales, scale = d.get("scales"), d.get("scale")
    if scales:
        if not scale:
            scale = next(iter(scales))
        _, width, max_channels = scales[scale]
    else:
        width, max_channels = d.get("width_multiple", 1.0), math.inf
    return int(math.ceil(min(c, max_channels) * width / 8) * 8)


def _check_zoo(plan: RowPlan, c1: int, d: dict) -> None:
    """Accept a channels-first argument equal to the input channels (as written or scaled), else refuse."""
    a = plan.zoo_channels
    if a is None or a == c1 or _scaled_channels(a, d) == c1:
        return
    spec = plan.spec
    first = spec.args[0]
    raise NonLocalRowError(
        f"{plan.where}: args[0]={a} is not a plausible {first.name} (at most {spec.max_reduction}; {a} would leave "
        f"{c1 // a} bottleneck channel(s) of the {c1} input channels), nor this row's channel count ({c1} at this "
        f"scale). Write {spec.usage()} without the channels, which are filled in automatically: for example "
        f"[-1, 1, {spec.family}, []] or [-1, 1, {spec.family}, [{first.example}]]; the module-zoo style with the "
        f"channels first is accepted when they equal the previous layer's ({c1} here, or its unscaled value)"
    )


def _unknown_names(tasks, d: dict) -> None:
    """Refuse a row whose module is unknown to Ultralytics but close to a known one, with a did-you-mean."""
    import torch

    known = {k for k, v in vars(tasks).items() if isinstance(v, type) and issubclass(v, torch.nn.Module)}
    ours = set(blocks.yaml_names())
    backbone = list(d.get("backbone") or [])
    for i, row in enumerate(backbone + list(d.get("head") or [])):
        if not (isinstance(row, (list, tuple)) and len(row) >= 3 and isinstance(row[2], str)):
            continue
        name = row[2]
        if name in vars(tasks) or name.startswith(("nn.", "torchvision.")):
            continue
        where = f"row {i} ({'backbone' if i < len(backbone) else 'head'}): {list(row)!r}"
        if name in ("NonLocal1d", "NonLocal3d"):
            raise UnknownModuleError(
                f"{where}: {name} is the block for {'sequences (B, C, L)' if name.endswith('1d') else 'video clips (B, C, T, H, W)'}; "
                "detection YAMLs use NonLocal (images, B, C, H, W): write [-1, 1, NonLocal, []]"
            )
        folded = {k.lower(): k for k in known}
        close = [folded[name.lower()]] if name.lower() in folded else []
        close += [c for c in difflib.get_close_matches(name, sorted(ours) + sorted(known - ours), n=3, cutoff=0.75)
                  if c not in close]
        if close:
            raise UnknownModuleError(
                f"{where}: Ultralytics has no module {name!r}; did you mean {' or '.join(repr(c) for c in close)}? "
                "(module names are case-sensitive)"
            )
        version = _ultralytics_version()
        if version is not None and version < (8, 4, 0):
            raise UnknownModuleError(
                f"{where}: Ultralytics {'.'.join(map(str, version))} has no module {name!r}; the YOLO26 YAMLs (and "
                "their modules) need ultralytics>=8.4.0 (YOLOv8 and YOLO11 YAMLs work from 8.3.0): "
                "pip install -U 'ultralytics>=8.4.0'"
            )


def _check_release(d: dict) -> None:
    """Refuse a YOLO26 YAML (``end2end: true``) on a release without YOLO26 modules, saying which it needs."""
    from yolo_nonlocal.integrations.ultralytics import registration

    version = _ultralytics_version()
    needed = registration.version_tuple(registration.MIN_ULTRALYTICS_YOLO26)
    if d.get("end2end") and version is not None and version < needed:
        raise registration.UnsupportedUltralyticsError(
            f"yolo-nonlocal: this is a YOLO26 YAML (end2end: true), whose modules need "
            f"ultralytics>={registration.MIN_ULTRALYTICS_YOLO26}; Ultralytics {'.'.join(map(str, version))} is "
            f"installed (supported: {registration.supported_releases()}). Upgrade with: "
            f"pip install -U 'ultralytics>={registration.MIN_ULTRALYTICS_YOLO26}'"
        )


def _ultralytics_version() -> tuple[int, ...] | None:
    import sys

    from yolo_nonlocal.integrations.ultralytics import registration

    version = getattr(sys.modules.get("ultralytics"), "__version__", None)
    return registration.version_tuple(version) if version else None


def _attribute_error(orig, pristine: dict, ch, plans: list[RowPlan], nb: int, original_rows: list, error):
    """After a block refused its arguments while the model was built, raise an error naming its row."""
    from yolo_nonlocal.nonlocal_block import NonLocalConfigError

    try:
        chans = _probe_channels(orig, pristine, ch, [p.index for p in plans])
    except Exception:
        return
    names = blocks.yaml_names()
    for p in plans:
        if p.index not in chans:
            continue
        try:
            names[original_rows[p.index][2]](chans[p.index], *p.args, device="meta")
        except NonLocalConfigError as row_error:
            raise NonLocalRowError(
                f"{p.where} cannot be built with its {chans[p.index]} input channels at this scale: {row_error}"
            ) from error


def _make_parse_model(tasks):
    def make(orig):
        code = getattr(orig, "__code__", None)
        # parse_model resolves a string arg naming one of its locals to that local; `c2` is the previous
        # layer's output channels at the top of each row (verified on every supported release)
        use_local_c2 = code is not None and {"c2", "ch", "args"} <= set(code.co_varnames)

        def parse_model(d, ch, verbose=True, *a, **kw):
            if not isinstance(d, dict):
                return orig(d, ch, verbose, *a, **kw)
            from yolo_nonlocal.integrations.ultralytics import options
            from yolo_nonlocal.nonlocal_block import NonLocalConfigError

            import_hooks.flush()  # patches of modules half-imported at register() time (every DDP rank builds)
            opts = options.read_options(d)  # a bad nonlocal_* key is refused before anything is built
            _unknown_names(tasks, d)
            plans = plan_rows(d)
            if not plans:
                return orig(d, ch, verbose, *a, **kw)
            _check_release(d)
            pristine = copy.deepcopy(d)  # for the probe: parse_model edits args lists in place
            nb = len(d.get("backbone") or [])
            original_rows = (pristine.get("backbone") or []) + (pristine.get("head") or [])
            rows = [list(r) for r in (d.get("backbone") or []) + (d.get("head") or [])]
            probe = _FORCE_PROBE or not use_local_c2 or any(p.zoo_channels is not None for p in plans)
            channels = _probe_channels(orig, pristine, ch, [p.index for p in plans]) if probe else None
            for p in plans:
                if channels is not None:
                    _check_zoo(p, channels[p.index], pristine)
                rows[p.index][3] = ["c2" if channels is None else channels[p.index], *p.args]
            try:
                built = orig(_split_rows(d, rows), ch, verbose, *a, **kw)
            except NonLocalConfigError as e:  # a block refused its arguments (e.g. reduction > channels)
                _attribute_error(orig, pristine, ch, plans, nb, original_rows, e)
                raise
            if opts.init_gamma != options.DEFAULT_INIT_GAMMA:
                options.apply_init_gamma(built[0], opts.init_gamma)
            if opts.init_attention != options.DEFAULT_INIT_ATTENTION:
                options.apply_init_attention(built[0], opts.init_attention)
            return built

        return parse_model

    return make


def patch(tasks) -> None:
    """Wrap ``tasks.parse_model`` (idempotent; re-applied after a reload)."""
    import_hooks.wrap(tasks, "parse_model", _make_parse_model(tasks), key=KEY)


def unpatch(tasks) -> None:
    import_hooks.unwrap(tasks, "parse_model", key=KEY)


def add_names(tasks) -> None:
    """Put every installed block class in ``tasks``' namespace under its YAML names."""
    for name, cls in blocks.yaml_names().items():
        setattr(tasks, name, cls)


def remove_names(tasks) -> None:
    for name, cls in blocks.yaml_names().items():
        if vars(tasks).get(name) is cls:
            delattr(tasks, name)
