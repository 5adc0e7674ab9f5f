"""The arguments of a ``NonLocal`` row in a patched YOLOv5/YOLOv7 tree, with the model YAML's block options.

The patched ``parse_model`` (:mod:`.source_edit`) calls :func:`row_args` for every ``NonLocal`` row:

    args = row_args(ch[f], args, d)      # d: the model-YAML dict parse_model was given

It returns ``[c1, *args]`` (the input channels, then the row's own ``[reduction, mode, sub_sample, ...]``), so
rows need no channel count at any width multiple. Where the YAML has the top-level keys of the Ultralytics
integration (:mod:`yolo_nonlocal.integrations.ultralytics.options`, one grammar for both):

    nonlocal_init_gamma: <float>            NonLocal(init_gamma=...): W_z's BatchNorm weight at build time
    nonlocal_init_attention: random|uniform NonLocal(init_attention=...), embedded_gaussian rows only (the
                                            other modes keep their own, as in the Ultralytics integration)

the list goes on positionally up to those parameters (those trees call ``m(*args)``, without keywords); the
positions come from :class:`~yolo_nonlocal.nonlocal_block.NonLocal`'s signature, so they follow it.
``nonlocal_lr_mult`` is refused: it acts through Ultralytics' trainer, and the trees' ``train.py`` builds
its own optimizer, so the key would be silently ignored. A YAML without the keys builds exactly as before:
every block the exact identity (gamma 0, the paper's init).

Weights loaded after the build win, as in Ultralytics: a checkpoint (``--weights`` of a Non-local model,
``--resume``, ``attempt_load``) carries its trained blocks; with a stock checkpoint the blocks, absent
from it, keep the YAML's values.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

from yolo_nonlocal.integrations.ultralytics.options import (
    INIT_ATTENTION_KEY,
    INIT_GAMMA_KEY,
    LR_MULT_KEY,
    NonLocalOptionError,
    read_options,
)

__all__ = ["row_args"]


def row_args(c1: int, args: Sequence[Any], d: dict | None) -> list:
    """The positional arguments of ``NonLocal`` for one row: ``[c1, *args]``, extended to ``init_gamma`` /
    ``init_attention`` where the model-YAML dict ``d`` sets ``nonlocal_init_gamma`` /
    ``nonlocal_init_attention``. Raises :class:`NonLocalOptionError` for a bad key value, for
    ``nonlocal_lr_mult``, or for a row that also gives those parameters itself."""
    from yolo_nonlocal.nonlocal_block import UNIFORM_ATTENTION_MODES, NonLocal

    d = d or {}
    args = list(args)
    if d.get(LR_MULT_KEY) is not None:
        raise NonLocalOptionError(
            f"yolo-nonlocal: model YAML key {LR_MULT_KEY!r} works in Ultralytics training only (it splits the "
            "optimizer's parameter groups there); YOLOv5/YOLOv7 train.py builds its own optimizer and would "
            "ignore it: remove the key from this YAML"
        )
    options = read_options(d)  # validates the values, with the Ultralytics integration's messages
    wanted: dict[str, Any] = {}
    if d.get(INIT_GAMMA_KEY) is not None:
        wanted["init_gamma"] = options.init_gamma
    if d.get(INIT_ATTENTION_KEY) is not None:
        wanted["init_attention"] = options.init_attention
    if not wanted:
        return [c1, *args]
    signature = inspect.signature(NonLocal)
    names = list(signature.parameters)
    try:
        bound = signature.bind(c1, *args, **wanted)
    except TypeError as e:
        raise NonLocalOptionError(
            f"yolo-nonlocal: NonLocal row args {args!r} with the model YAML's {', '.join(wanted)} ({e}): a row "
            f"gives at most [reduction, mode, sub_sample, ...] up to {names[names.index('init_gamma') - 1]}, and "
            f"the YAML keys {INIT_GAMMA_KEY} / {INIT_ATTENTION_KEY} set the rest"
        ) from None
    bound.apply_defaults()
    if bound.arguments["mode"] not in UNIFORM_ATTENTION_MODES:
        wanted.pop("init_attention", None)  # the other modes keep their own start, as apply_init_attention does
        if not wanted:
            return [c1, *args]
    last = max(names.index(k) for k in wanted)
    return [bound.arguments[n] for n in names[: last + 1]]
