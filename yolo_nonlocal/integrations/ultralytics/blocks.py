"""The table of blocks a model YAML may name: NonLocal and its siblings, each with its row arguments.

One entry per block family says which YAML module names build it, where its class lives (imported lazily,
skipped when that module is not part of the installation), and what its row arguments are, in order, after
the input channels that :mod:`yolo_nonlocal.integrations.ultralytics.rows` fills in. Everything that
treats blocks alike (rows, names in ``ultralytics.nn.tasks``, weight remapping, FLOPs, the learning-rate
multiplier, the weights-only allow-list) reads this table, so a sibling block is registered by adding a row.

Importing this module imports neither torch nor Ultralytics; :func:`available` imports the block modules.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

__all__ = ["ArgSpec", "BlockSpec", "SPECS", "available", "spec_for", "block_types", "yaml_names", "is_block"]


@dataclass(frozen=True)
class ArgSpec:
    """One positional row argument: its name, kind (``int``, ``choice``, ``bool``, ``int_or_none``) and choices."""

    name: str
    kind: str
    choices: str | None = None  # "module:ATTRIBUTE" naming a tuple of allowed strings, for kind "choice"
    example: Any = None


@dataclass(frozen=True)
class BlockSpec:
    """A block family: YAML names, class locations (``module:Class`` per name) and row arguments."""

    names: tuple[str, ...]
    classes: tuple[str, ...]  # "module:Class" for each name, same order
    args: tuple[ArgSpec, ...]
    # a first argument above this is not a plausible reduction: it is read as the channel count a module
    # zoo writes first ([-1, 1, NonLocal, [512]]) when it matches the input channels, else refused
    max_reduction: int = 16
    extra_classes: tuple[str, ...] = ()  # further classes of the family (not YAML names): NonLocal1d/3d

    @property
    def family(self) -> str:
        return self.names[0]

    def usage(self) -> str:
        return f"[-1, 1, {self.family}, [" + ", ".join(a.name for a in self.args) + "]]"


SPECS: tuple[BlockSpec, ...] = (
    BlockSpec(
        names=("NonLocal", "NonLocal2d"),
        classes=("yolo_nonlocal.nonlocal_block:NonLocal", "yolo_nonlocal.nonlocal_block:NonLocal2d"),
        args=(
            ArgSpec("reduction", "int", example=2),
            ArgSpec("mode", "choice", "yolo_nonlocal.nonlocal_block:MODES", example="embedded_gaussian"),
            ArgSpec("sub_sample", "bool", example=False),
        ),
        max_reduction=16,
        extra_classes=("yolo_nonlocal.nonlocal_block:NonLocal1d", "yolo_nonlocal.nonlocal_block:NonLocal3d"),
    ),
    BlockSpec(  # GCNet's global-context block (Cao et al. 2019); reduction 16 is the paper's
        names=("ContextBlock",),
        classes=("yolo_nonlocal.context_block:ContextBlock",),
        args=(
            ArgSpec("reduction", "int", example=16),
            ArgSpec("fusion", "choice", "yolo_nonlocal.context_block:FUSIONS", example="add"),
            ArgSpec("pooling", "choice", "yolo_nonlocal.context_block:POOLINGS", example="att"),
        ),
        max_reduction=64,
    ),
    BlockSpec(  # the same-place local control with matched parameters
        names=("LocalBlock",),
        classes=("yolo_nonlocal.local_block:LocalBlock",),
        args=(
            ArgSpec("reduction", "int", example=2),
            ArgSpec("mode", "choice", "yolo_nonlocal.nonlocal_block:MODES", example="embedded_gaussian"),
            ArgSpec("hidden", "int_or_none", example=None),
            ArgSpec("kernel_size", "int", example=3),
        ),
        max_reduction=16,
    ),
)


def _resolve(path: str):
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def _importable(spec: BlockSpec) -> bool:
    """Whether the family's classes import. NonLocal must; a sibling that does not is skipped (warned once)."""
    try:
        return all(callable(_resolve(c)) for c in spec.classes)
    except Exception as e:
        if spec is SPECS[0]:
            raise
        module = spec.classes[0].partition(":")[0]
        if not (isinstance(e, ModuleNotFoundError) and e.name == module):  # present but broken: say so
            import warnings

            warnings.warn(f"yolo-nonlocal: {spec.family} rows are unavailable ({module}: {type(e).__name__}: {e})",
                          RuntimeWarning, stacklevel=2)
        return False


_AVAILABLE: list[BlockSpec] | None = None


def available() -> list[BlockSpec]:
    """The block families whose modules are installed (NonLocal always is); computed once per process."""
    global _AVAILABLE
    if _AVAILABLE is None:
        _AVAILABLE = [s for s in SPECS if _importable(s)]
    return _AVAILABLE


def yaml_names() -> dict[str, type]:
    """Every YAML module name of the installed blocks, with its class."""
    return {name: _resolve(path) for s in available() for name, path in zip(s.names, s.classes)}


def spec_for(name: Any) -> BlockSpec | None:
    """The family a YAML module name belongs to (only installed ones), or None."""
    if not isinstance(name, str):
        return None
    for s in available():
        if name in s.names:
            return s
    return None


_TYPES: tuple[type, ...] | None = None


def block_types() -> tuple[type, ...]:
    """Every block class of the installed families (isinstance checks; the weights-only allow-list)."""
    global _TYPES
    if _TYPES is not None:
        return _TYPES
    out = []
    for s in available():
        for path in s.classes + s.extra_classes:
            cls = _resolve(path)
            if cls not in out:
                out.append(cls)
    _TYPES = tuple(out)
    return _TYPES


def choices(arg: ArgSpec) -> tuple[str, ...]:
    return tuple(_resolve(arg.choices)) if arg.choices else ()


def is_block(module) -> bool:
    """Whether ``module`` is one of the installed blocks."""
    return isinstance(module, block_types())
