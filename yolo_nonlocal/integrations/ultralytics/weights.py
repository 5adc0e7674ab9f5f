"""Pretrained transfer into Non-local models: remap the layer indices that inserted blocks shift.

A YOLO model's state dict is keyed by layer index (``model.12.cv1.conv.weight``). Inserting a NonLocal
row after SPPF shifts every later index by one, so Ultralytics' ``BaseModel.load`` (which keeps only the
keys whose name and shape match) silently drops most of a stock checkpoint: ``YOLO("yolov8n-nl.yaml")
.load("yolov8n.pt")`` kept 162 of 367 tensors, the whole neck and head were lost.

:func:`remap_source` pairs the layers of the two models with the blocks taken out (the k-th non-block
layer of the source with the k-th of the destination, checked by type) and presents the source to
``BaseModel.load`` with its layers at the destination's indices. Every tensor of a stock checkpoint then
lands; the blocks keep their identity initialisation (zero BN weight in W_z), so before any training the
Non-local model predicts exactly what the stock model predicts. A source that has blocks itself (a
Non-local checkpoint into a model with blocks at other places) has them matched by position too.

Used by ``YOLO(...).load(...)``, ``yolo train ... pretrained=stock.pt`` and every other path that ends in
``BaseModel.load``; :func:`install` wraps that method (idempotent). Architectures that do not pair up
(another family, another head) are left to Ultralytics' own name-and-shape matching.
"""

from __future__ import annotations

import copy
import functools
import logging

from torch import nn

__all__ = ["remap_source", "layer_map", "install"]

_WRAPPED = "__yolo_nonlocal_wrapped__"
LOGGER = logging.getLogger("yolo_nonlocal")


def _is_block(m: nn.Module) -> bool:
    from yolo_nonlocal.nonlocal_block import NonLocal

    if isinstance(m, NonLocal):
        return True
    return isinstance(m, nn.Sequential) and len(m) > 0 and all(isinstance(x, NonLocal) for x in m)


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


def install(tasks) -> None:
    """Wrap ``tasks.BaseModel.load`` so pretrained weights are remapped around NonLocal blocks (idempotent)."""
    base = tasks.BaseModel
    orig = base.load
    if getattr(orig, _WRAPPED, False):
        return

    @functools.wraps(orig)
    def load(self, weights, *args, **kwargs):
        try:
            src = (weights.get("ema") or weights["model"]) if isinstance(weights, dict) else weights
            remapped = remap_source(src, self) if isinstance(src, nn.Module) else None
        except Exception:  # never let the remap stand between the user and Ultralytics' own loading
            remapped = None
        if remapped is not None:
            view, mapping = remapped
            src_sd = view.state_dict()
            dst_sd = self.state_dict()
            fits = sum(1 for k, v in src_sd.items() if k in dst_sd and dst_sd[k].shape == v.shape)
            moved = sum(1 for k, j in mapping.items() if k != j)
            if kwargs.get("verbose", args[0] if args else True):
                _log(
                    f"yolo-nonlocal: remapped {moved} shifted layer indices of the pretrained weights around the "
                    f"NonLocal blocks; {fits}/{len(src_sd)} checkpoint tensors fit this model "
                    f"(blocks without a counterpart keep their identity initialisation)"
                )
            weights = view
        return orig(self, weights, *args, **kwargs)

    setattr(load, _WRAPPED, True)
    base.load = load
