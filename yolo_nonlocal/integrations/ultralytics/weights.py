"""Pretrained transfer into Non-local models: remap the layer indices that inserted blocks shift.

A YOLO model's state dict is keyed by layer index (``model.12.cv1.conv.weight``). Inserting a NonLocal
row after SPPF shifts every later index by one, so Ultralytics' ``BaseModel.load`` (which keeps only the
keys whose name and shape match) silently drops most of a stock checkpoint: ``YOLO("yolov8n-nl.yaml")
.load("yolov8n.pt")`` kept 162 of 355 tensors (ultralytics 8.4.190), the whole neck and head were lost.

:func:`remap_source` pairs the layers of the two models with the blocks taken out (the k-th non-block
layer of the source with the k-th of the destination, checked by type) and presents the source to
``BaseModel.load`` with its layers at the destination's indices. Every tensor of a stock checkpoint then
lands; the blocks keep their initialisation (with the default ``nonlocal_init_gamma`` 0 the identity:
zero BN weight in W_z), so before any training the Non-local model predicts exactly what the stock model
predicts. A source that has blocks itself (a Non-local checkpoint into a model with blocks at other places)
has them matched by position too.

Used by ``YOLO(...).load(...)``, ``yolo train ... pretrained=stock.pt`` and every other path that ends in
``BaseModel.load``; :func:`patch` wraps that method (idempotent, through ``yolo_nonlocal.register()``).
After Ultralytics' own load, :func:`transfer_report` counts what really landed (Ultralytics may rebuild the
class head first) and one log line says what was dropped and why. Architectures that do not pair up
(another family, another head) are left to Ultralytics' own name-and-shape matching.
"""

from __future__ import annotations

import copy
import logging

from torch import nn

__all__ = ["remap_source", "layer_map", "transfer_report", "format_report", "patch", "unpatch", "install"]

LOGGER = logging.getLogger("yolo_nonlocal")


def _is_block(m: nn.Module) -> bool:
    """A block layer (NonLocal or a sibling), or a repeat of blocks (a row with repeats > 1)."""
    from yolo_nonlocal.integrations.ultralytics.blocks import block_types

    types = block_types()
    if isinstance(m, types):
        return True
    return isinstance(m, nn.Sequential) and len(m) > 0 and all(isinstance(x, types) for x in m)


def _slots(layers: list[nn.Module]) -> tuple[list[int], dict[tuple[int, int], int]]:
    """Indices of the non-block layers, and the blocks keyed by (non-block layers before them, order)."""
    core, blocks, run = [], {}, 0
    for j, m in enumerate(layers):
        if _is_block(m):
            blocks[(len(core), run)] = j
            run += 1
        else:
            core.append(j)
            run = 0
    return core, blocks


def layer_map(src_layers: list[nn.Module], dst_layers: list[nn.Module]) -> dict[int, int] | None:
    """Destination index of every source layer that has a counterpart, or None if the models do not pair up.

    Returns None as well when nothing needs remapping (same layout, or no blocks on either side).
    """
    src_core, src_blocks = _slots(src_layers)
    dst_core, dst_blocks = _slots(dst_layers)
    if not src_blocks and not dst_blocks:
        return None
    if [type(m) for m in src_layers] == [type(m) for m in dst_layers]:
        return None  # same layout: Ultralytics' own key matching is right
    if len(src_core) != len(dst_core):
        return None
    if any(type(src_layers[k]) is not type(dst_layers[j]) for k, j in zip(src_core, dst_core)):
        return None
    mapping = dict(zip(src_core, dst_core))
    mapping.update({k: dst_blocks[slot] for slot, k in src_blocks.items() if slot in dst_blocks})
    return mapping


def remap_source(src: nn.Module, dst: nn.Module) -> tuple[nn.Module, dict[int, int]] | None:
    """A view of ``src`` whose layers sit at ``dst``'s indices (no tensor is copied), and the index map.

    The view is a shallow copy of the source model whose ``model`` is a new ``nn.Sequential`` holding the
    source's own layer objects, with ``nn.Identity`` (no tensors) where the destination has a block the
    source lacks. None when no remapping applies.
    """
    src_seq, dst_seq = getattr(src, "model", None), getattr(dst, "model", None)
    if not isinstance(src_seq, nn.Sequential) or not isinstance(dst_seq, nn.Sequential):
        return None
    mapping = layer_map(list(src_seq), list(dst_seq))
    if mapping is None:
        return None
    inverse = {j: k for k, j in mapping.items()}
    layers = [src_seq[inverse[j]] if j in inverse else nn.Identity() for j in range(len(dst_seq))]
    view = copy.copy(src)
    view._modules = dict(src._modules)
    view._modules["model"] = nn.Sequential(*layers)
    return view, mapping


def _log(msg: str) -> None:
    try:
        from ultralytics.utils import LOGGER as ULOGGER

        ULOGGER.info(msg)
    except Exception:
        LOGGER.info(msg)


def _layer(key: str) -> int | None:
    parts = key.split(".")
    return int(parts[1]) if len(parts) > 2 and parts[0] == "model" and parts[1].isdigit() else None


def transfer_report(src: nn.Module, dst: nn.Module, mapping: dict[int, int] | None) -> dict:
    """What of ``src``'s state dict is now in ``dst`` (call after loading), and why the rest is not.

    Returns ``{"total", "landed", "moved", "dropped": {reason: [detail, ...]}, "fresh_block_tensors"}``: a
    source tensor has landed when the destination tensor it maps to holds exactly its values. Counted after
    Ultralytics' own load, so its rebuild of the class head and its name-based class remap are included.
    """
    import torch

    src_sd, dst_sd = src.state_dict(), dst.state_dict()
    dst_layers = list(getattr(dst, "model", []))
    src_layers = list(getattr(src, "model", []))
    landed, written = 0, set()
    dropped: dict[str, list[str]] = {}
    for k, v in src_sd.items():
        li = _layer(k)
        dk = k
        src_block = li is not None and li < len(src_layers) and _is_block(src_layers[li])
        if mapping is not None and li is not None:
            if li not in mapping:
                why = "a block at a place where this model has none" if src_block else "a layer without counterpart here"
                dropped.setdefault(why, []).append(k)
                continue
            parts = k.split(".")
            parts[1] = str(mapping[li])
            dk = ".".join(parts)
        w = dst_sd.get(dk)
        if w is None:
            why = "a block at a place where this model has none" if src_block else "not in this model"
            dropped.setdefault(why, []).append(k)
        elif w.shape != v.shape:
            dropped.setdefault("shape differs (e.g. another class count)", []).append(
                f"{k} {tuple(v.shape)} -> {tuple(w.shape)}")
        elif torch.equal(w, v.to(w.dtype)):
            landed += 1
            written.add(dk)
        else:
            dropped.setdefault("not loaded by Ultralytics (this model keeps its own values)", []).append(k)
    fresh = [k for k in dst_sd if k not in written and (li := _layer(k)) is not None and li < len(dst_layers)
             and _is_block(dst_layers[li])]
    moved = sum(1 for k, j in (mapping or {}).items() if k != j)
    return {"total": len(src_sd), "landed": landed, "moved": moved, "dropped": dropped, "fresh_block_tensors": fresh}


def format_report(report: dict) -> str:
    """One log line for :func:`transfer_report`'s result."""
    parts = [f"yolo-nonlocal: pretrained weights: {report['landed']}/{report['total']} checkpoint tensors landed"]
    if report["moved"]:
        parts[0] += f" ({report['moved']} layer indices remapped around the blocks)"
    n_dropped = sum(len(v) for v in report["dropped"].values())
    if n_dropped:
        why = "; ".join(f"{len(v)} {reason}, e.g. {v[0]}" for reason, v in report["dropped"].items())
        parts.append(f"{n_dropped} dropped: {why}")
    if report["fresh_block_tensors"]:
        parts.append(f"{len(report['fresh_block_tensors'])} block tensors of this model were not in the checkpoint "
                     "and keep their initialisation")
    return "; ".join(parts)


def _has_blocks(model: nn.Module) -> bool:
    seq = getattr(model, "model", None)
    return isinstance(seq, nn.Sequential) and any(_is_block(m) for m in seq)


def _make_load(orig):
    def load(self, weights, *args, **kwargs):
        verbose = kwargs.get("verbose", args[0] if args else True)
        src, remapped = None, None
        try:
            src = (weights.get("ema") or weights["model"]) if isinstance(weights, dict) else weights
            src = src if isinstance(src, nn.Module) else None
            remapped = remap_source(src, self) if src is not None else None
        except Exception:  # never let the remap stand between the user and Ultralytics' own loading
            src, remapped = None, None
        mapping = remapped[1] if remapped is not None else None
        result = orig(self, remapped[0] if remapped is not None else weights, *args, **kwargs)
        if verbose and src is not None and (mapping is not None or _has_blocks(src) or _has_blocks(self)):
            try:
                _log(format_report(transfer_report(src, self, mapping)))
            except Exception:
                pass
        return result

    return load


KEY = "yolo_nonlocal.weights.load"


def patch(tasks) -> None:
    """Wrap ``tasks.BaseModel.load`` so pretrained weights are remapped around the blocks (idempotent)."""
    from yolo_nonlocal.integrations import import_hooks

    base = getattr(tasks, "BaseModel", None)
    if base is not None:
        import_hooks.wrap(base, "load", _make_load, key=KEY)


def unpatch(tasks) -> None:
    from yolo_nonlocal.integrations import import_hooks

    base = getattr(tasks, "BaseModel", None)
    if base is not None:
        import_hooks.unwrap(base, "load", key=KEY)


install = patch  # the name of earlier releases
