"""How the blocks of an Ultralytics model start and how fast they learn: two top-level model-YAML keys.

Why
    With W_z's BatchNorm weight (gamma) at 0 a fresh block is the exact identity (Wang et al. 2018, sec. 4.1),
    but theta, phi and g then get exactly zero gradient until gamma has moved, and at a detector's learning
    rate gamma barely moves (issue 10). Two options let a block start switched on and learn faster, from the
    stock ``yolo`` command (a YAML key, nothing else on the command line) and from Python:

    ``nonlocal_init_gamma: <float>``  the initial gamma of every NonLocal block the YAML builds (default 0.0,
                                      the exact identity). Applied when the model is *built*; weights loaded
                                      afterwards win (resume, val, predict of a trained model, a Non-local
                                      ``pretrained=`` checkpoint), so a trained block is never reset. With
                                      ``pretrained=<stock yolov8n.pt>`` the blocks (absent from the
                                      checkpoint) keep this value.
    ``nonlocal_lr_mult: <float>``     learning-rate multiplier of every NonLocal parameter in Ultralytics
                                      training (default 1.0: Ultralytics' own optimizer, untouched).
    ``nonlocal_init_attention: random|uniform``  how the attention maps of the NonLocal blocks start
                                      (``NonLocal(init_attention=)``; default random, the paper's code;
                                      uniform: phi zero, every query starts with a uniform map; blocks
                                      of the other modes keep theirs). Applied when the model is built,
                                      like ``nonlocal_init_gamma``.

    Both keys stay in the model's ``yaml`` dict, so a checkpoint carries them and ``resume`` rebuilds the same
    optimizer. Python: :func:`configure` sets them on a model (``YOLO`` object, ``DetectionModel`` or YAML
    dict) without editing a file; :func:`read_options` reads them back.

How the multiplier works
    :func:`patch_trainer` (installed by ``yolo_nonlocal.register()``) wraps ``BaseTrainer.build_optimizer``:
    Ultralytics builds its groups (decay / no-decay / bias, MuSGD's muon groups), then every group that holds
    block parameters is split in two, the block part getting the same options (weight decay, betas,
    momentum, ``param_group`` name) with ``lr = initial_lr = group lr * nonlocal_lr_mult``. The new groups are appended after Ultralytics' own, so index-based code
    (the bias warm-up of releases before 8.4.x names groups) keeps addressing the same groups; ``LambdaLR``
    scales every group from its own ``initial_lr`` and the warm-up ramps each group to ``initial_lr * lf``,
    so block groups keep the multiplier through warm-up and schedule. With the multiplier at 1.0 nothing is
    split (checkpoints of earlier runs resume with their optimizer state).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "INIT_GAMMA_KEY",
    "LR_MULT_KEY",
    "DEFAULT_INIT_GAMMA",
    "DEFAULT_LR_MULT",
    "BlockOptions",
    "NonLocalOptionError",
    "read_options",
    "configure",
    "apply_init_gamma",
    "apply_init_attention",
    "INIT_ATTENTION_KEY",
    "DEFAULT_INIT_ATTENTION",
    "block_modules",
    "split_param_groups",
    "patch_trainer",
    "unpatch_trainer",
]

INIT_GAMMA_KEY = "nonlocal_init_gamma"
LR_MULT_KEY = "nonlocal_lr_mult"
INIT_ATTENTION_KEY = "nonlocal_init_attention"
DEFAULT_INIT_ATTENTION = "random"
DEFAULT_INIT_GAMMA = 0.0
DEFAULT_LR_MULT = 1.0


class NonLocalOptionError(ValueError):
    """A ``nonlocal_*`` model-YAML key (or a :func:`configure` argument) has a bad value; the message names it."""


@dataclass(frozen=True)
class BlockOptions:
    """The block options of one model: initial gamma of W_z's BN and the learning-rate multiplier."""

    init_gamma: float = DEFAULT_INIT_GAMMA
    lr_mult: float = DEFAULT_LR_MULT
    init_attention: str = DEFAULT_INIT_ATTENTION


def _number(key: str, value: Any, *, positive: bool) -> float:
    """``value`` as a finite float (numeric strings accepted, as Ultralytics reads YAML args), or a clear error."""
    hint = "a positive number such as 5" if positive else "a finite number such as 1.0 (0 keeps the exact identity)"
    v = value
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            raise NonLocalOptionError(f"yolo-nonlocal: model YAML key {key!r} must be {hint}, got {value!r}") from None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (positive and not v > 0):
        raise NonLocalOptionError(f"yolo-nonlocal: model YAML key {key!r} must be {hint}, got {value!r}")
    return float(v)


def read_options(d: dict | None) -> BlockOptions:
    """The validated block options of a model-YAML dict (defaults where a key is absent or null)."""
    d = d or {}
    gamma, mult, attention = d.get(INIT_GAMMA_KEY), d.get(LR_MULT_KEY), d.get(INIT_ATTENTION_KEY)
    return BlockOptions(
        init_gamma=DEFAULT_INIT_GAMMA if gamma is None else _number(INIT_GAMMA_KEY, gamma, positive=False),
        lr_mult=DEFAULT_LR_MULT if mult is None else _number(LR_MULT_KEY, mult, positive=True),
        init_attention=DEFAULT_INIT_ATTENTION if attention is None else _attention(attention),
    )


def _attention(value: Any) -> str:
    from yolo_nonlocal.nonlocal_block import INIT_ATTENTIONS

    if value not in INIT_ATTENTIONS:
        raise NonLocalOptionError(
            f"yolo-nonlocal: model YAML key {INIT_ATTENTION_KEY!r} must be one of {', '.join(INIT_ATTENTIONS)}, got {value!r}"
        )
    return value


def block_modules(model) -> list:
    """The blocks of a model (NonLocal and the sibling families of the block table), in module order."""
    from yolo_nonlocal.integrations.ultralytics.blocks import block_types

    types = block_types()
    return [m for m in model.modules() if isinstance(m, types)]


def _gamma_bn(block):
    """The BatchNorm whose weight is the block's gamma (W_z's for NonLocal, the last for LocalBlock), or None."""
    for name in ("w_z", "cv3"):
        seq = getattr(block, name, None)
        if seq is not None and len(seq) > 1 and hasattr(seq[1], "running_var"):
            return seq[1]
    return None


def apply_init_gamma(model, init_gamma: float) -> int:
    """Start every block of ``model`` at ``init_gamma``; returns the number of blocks changed.

    For blocks whose gamma is a BatchNorm weight (NonLocal, LocalBlock) only that weight is set, touching no
    random state; other blocks (GCNet's ContextBlock, whose ``init_gamma`` scales a random init) are
    re-initialised with ``reset_parameters()``. Each block's ``init_gamma`` attribute records the value.
    """
    import torch

    init_gamma = _number(INIT_GAMMA_KEY, init_gamma, positive=False)
    n = 0
    for block in block_modules(model):
        bn = _gamma_bn(block)
        block.init_gamma = init_gamma
        if bn is not None:
            with torch.no_grad():
                bn.weight.fill_(init_gamma)
        elif hasattr(block, "reset_parameters"):
            block.reset_parameters()
        else:
            continue
        n += 1
    return n


def apply_init_attention(model, init_attention: str) -> int:
    """Start the attention maps of every ``embedded_gaussian`` NonLocal block of ``model`` as ``init_attention``
    (re-initialising phi); returns the number of blocks changed. Blocks of the other modes (whose pairwise
    function has no softmax over theta and phi to make uniform) and of other families (GCNet's
    query-independent ContextBlock, the LocalBlock control) keep their own init."""
    from yolo_nonlocal.nonlocal_block import UNIFORM_ATTENTION_MODES, NonLocal

    init_attention = _attention(init_attention)
    blocks = [b for b in block_modules(model) if isinstance(b, NonLocal) and b.mode in UNIFORM_ATTENTION_MODES]
    for b in blocks:
        b.init_attention = init_attention
        b.reset_attention()
    return len(blocks)


def _untrained(block) -> bool:
    """Whether a block still holds its initialisation, so that re-initialising it loses nothing learned."""
    import torch

    bn = _gamma_bn(block)
    if bn is not None:
        g0 = float(getattr(block, "init_gamma", 0.0))
        return bool(torch.all(bn.weight == g0)) and bool(torch.all(bn.bias == 0))
    if float(getattr(block, "init_gamma", 0.0)) == 0.0:  # zero-initialised output layers (ContextBlock)
        outs = [getattr(block, n, None) for n in ("transform_add", "transform_mul")]
        return all(bool(torch.all(t[-1].weight == 0)) for t in outs if t is not None)
    return False  # a random init scaled by init_gamma cannot be told from a trained one


def configure(target, *, init_gamma: float | None = None, lr_mult: float | None = None,
              init_attention: str | None = None, force: bool = False):
    """Set the block options on a model without editing its YAML file; returns ``target`` (a dict: a copy).

    ``target`` is an Ultralytics ``YOLO`` object, a ``DetectionModel`` (anything with a ``yaml`` dict) or a
    model-YAML dict. The keys go into the model's ``yaml`` (so training, its checkpoint and ``resume`` see
    them); on a built model ``init_gamma`` is also applied to the blocks at once. A block that has already
    moved from its initial gamma (a trained checkpoint) is not overwritten unless ``force=True``:
    ``NonLocalOptionError`` says so instead.

    >>> model = YOLO("yolov8n-nl.yaml")
    >>> configure(model, init_gamma=1.0, lr_mult=5)
    >>> model.train(data="my.yaml", pretrained="yolov8n.pt")  # blocks start at gamma 1, learn at 5x lr0
    """
    values = {}
    if init_gamma is not None:
        values[INIT_GAMMA_KEY] = _number(INIT_GAMMA_KEY, init_gamma, positive=False)
    if lr_mult is not None:
        values[LR_MULT_KEY] = _number(LR_MULT_KEY, lr_mult, positive=True)
    if init_attention is not None:
        values[INIT_ATTENTION_KEY] = _attention(init_attention)
    if isinstance(target, dict):
        out = dict(target)
        out.update(values)
        return out
    model = getattr(target, "model", None) if not hasattr(target, "yaml") else target
    if model is None or not isinstance(getattr(model, "yaml", None), dict):
        raise TypeError(
            f"configure: expected an Ultralytics YOLO object, a DetectionModel or a model-YAML dict, got "
            f"{type(target).__name__}"
        )
    if INIT_GAMMA_KEY in values or INIT_ATTENTION_KEY in values:
        trained = [b for b in block_modules(model) if not _untrained(b)]
        if trained and not force:
            key = INIT_GAMMA_KEY if INIT_GAMMA_KEY in values else INIT_ATTENTION_KEY
            value = f"{values[key]:g}" if key == INIT_GAMMA_KEY else values[key]
            raise NonLocalOptionError(
                f"yolo-nonlocal: {len(trained)} block(s) of this model have trained weights (gamma moved from its "
                f"initial value); {key}={value} would overwrite them. Configure a "
                "model built from a YAML (optionally with a stock checkpoint loaded), or pass force=True"
            )
        if INIT_ATTENTION_KEY in values:
            apply_init_attention(model, values[INIT_ATTENTION_KEY])
    if INIT_GAMMA_KEY in values:
        apply_init_gamma(model, values[INIT_GAMMA_KEY])
    model.yaml.update(values)
    return target


# ------------------------------------------------------------------------------------- the optimizer side
def split_param_groups(optimizer, block_params: set[int], lr_mult: float) -> int:
    """Move the block parameters of each param group into a new group with ``lr * lr_mult``; return the count.

    The new group copies every option of its parent (weight decay, momentum/betas, Ultralytics'
    ``param_group`` name) and is appended after all existing groups.
    """
    lr_mult = _number(LR_MULT_KEY, lr_mult, positive=True)
    new = []
    for group in optimizer.param_groups:
        mine = [p for p in group["params"] if id(p) in block_params]
        if not mine:
            continue
        group["params"] = [p for p in group["params"] if id(p) not in block_params]
        extra = {k: v for k, v in group.items() if k != "params"}
        extra["lr"] = group["lr"] * lr_mult
        if "initial_lr" in group:
            extra["initial_lr"] = group["initial_lr"] * lr_mult
        extra["nonlocal_lr_mult"] = lr_mult
        new.append({"params": mine, **extra})
    for g in new:
        g.setdefault("initial_lr", g["lr"])
        optimizer.add_param_group(g)
    return sum(len(g["params"]) for g in new)


def _unwrap(model):
    return getattr(model, "module", model)  # DDP / DataParallel


def _log(msg: str) -> None:
    try:
        from ultralytics.utils import LOGGER

        LOGGER.info(msg)
    except Exception:
        pass


def _build_optimizer(original):
    def build_optimizer(self, model, *args, **kwargs):
        optimizer = original(self, model, *args, **kwargs)
        try:
            net = _unwrap(model)
            opts = read_options(getattr(net, "yaml", None))
        except NonLocalOptionError:
            raise
        except Exception:
            return optimizer
        blocks = block_modules(net)
        if not blocks:
            return optimizer
        params = {id(p) for b in blocks for p in b.parameters() if p.requires_grad}
        moved = split_param_groups(optimizer, params, opts.lr_mult) if opts.lr_mult != 1.0 else 0
        lrs = sorted({g["lr"] for g in optimizer.param_groups if any(id(p) in params for p in g["params"])})
        gammas = sorted({round(float(_gamma_bn(b).weight.detach().mean()), 6) for b in blocks if _gamma_bn(b) is not None})
        _log(
            f"yolo-nonlocal: {len(blocks)} block(s); block lr = {', '.join(f'{x:.6g}' for x in lrs)} "
            f"({LR_MULT_KEY}={opts.lr_mult:g}, {moved} parameter tensors in their own param groups); "
            f"{INIT_GAMMA_KEY}={opts.init_gamma:g} (mean gamma now {', '.join(f'{g:g}' for g in gammas)})"
        )
        return optimizer

    return build_optimizer


KEY = "yolo_nonlocal.options.build_optimizer"


def patch_trainer(module) -> None:
    """Wrap ``module.BaseTrainer.build_optimizer`` (idempotent; re-applied after a reload re-creates the class)."""
    from yolo_nonlocal.integrations import import_hooks

    cls = getattr(module, "BaseTrainer", None)
    if cls is not None:
        import_hooks.wrap(cls, "build_optimizer", _build_optimizer, key=KEY)


def unpatch_trainer(module) -> None:
    """Take the wrapper of :func:`patch_trainer` off again."""
    from yolo_nonlocal.integrations import import_hooks

    cls = getattr(module, "BaseTrainer", None)
    if cls is not None:
        import_hooks.unwrap(cls, "build_optimizer", key=KEY)
