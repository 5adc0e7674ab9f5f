"""Theoretical receptive fields of a built Ultralytics detector's output cells, from its own layers.

Why: the positive-control task (:mod:`yolo_nonlocal.data.synthetic`, ``kind=farcue``) must place its cue
where no output cell of the baseline can see it. That is a statement about the network's structure, so it
is computed from the model itself, not quoted: the layer graph (each layer's ``f`` from-indices), every
convolution and pooling as it is *applied* in a forward pass (kernel, stride, padding, dilation; SPPF
applies its one MaxPool2d three times, which a walk over modules would miss), nearest upsampling and
Concat. Attention-like layers (Ultralytics' C2PSA / PSABlock / Attention, yolo12's A2C2f area attention,
this package's NonLocal and GlobalContext) mix positions globally: their outputs are reported as global.

How (one image axis at a time; the models here use square kernels, so both axes agree): a feature map is
represented by, for each of its cells, the interval ``[lo, hi]`` of input pixels it can depend on. A
convolution or pooling with kernel k, stride s, padding p and dilation d gives output cell i the union of
the intervals of input cells ``i*s - p + t*d`` (t = 0..k-1, those inside the map: padding carries no image
content); nearest upsampling by f gives cell i the interval of cell ``i // f``; Concat and residual sums
take the union. Inside one top-level layer, the applied operations are recorded with forward hooks during
one forward pass of a small dummy image; when all of them have stride 1 they are composed in sequence,
which is exact when one path runs through every kernel larger than 1 (Conv, C2f, C3k2, C3k, Bottleneck,
SPPF, the Detect branches: all chains) and an upper bound otherwise (any path is a sub-sequence). A layer
with a strided operation must hold exactly one operation larger than 1x1, else it is refused.

Terms used in the reports:

* ``anchor``: a cell's point in input pixels, ``(i + 0.5) * stride`` (Ultralytics' grid-cell offset 0.5);
  the box a YOLOv8/YOLO11 cell predicts always contains its anchor (DFL distances are >= 0).
* ``size``: the RF's extent ``hi - lo + 1`` in pixels of an interior cell (maximum over cells).
* ``reach``: the farthest pixel edge of the RF from the anchor, ``max(anchor - lo, hi + 1 - anchor)``,
  maximum over interior cells (so it holds for every alignment of the grid, e.g. after letterbox padding).
* ``input``: the Detect input (the P3/P4/P5 feature cell); ``head``: the class and box outputs, after the
  Detect branch's own convolutions, what a detection is actually computed from.
* ``conv-only``: the same with every attention-like layer replaced by its local operations only (its
  1x1 projections and positional-encoding convolutions): the reach the model has without its global
  mixing. For a model with such a layer the real RF is the whole image.

:func:`assert_cue_out_of_reach` is the check the generator runs. Which cells can affect the detection of a
target of width w spanning ``[x0, x1)``? (1) A detection that counts at IoU >= 0.5 comes from a cell whose
anchor lies within ``[x0 - 2w, x1 + 2w]``: IoU >= 0.5 forces the predicted box to be at most 2w wide and to
overlap the target, and a YOLOv8/YOLO11 box contains its anchor (its DFL distances are >= 0). (2) NMS can
remove such a box only in favour of a same-class box with IoU above the NMS threshold tau with it, at most
2w / tau wide and overlapping it: its anchor lies within ``2w + 2w / tau`` of the target. With tau >= 0.5
(Ultralytics uses 0.7) that is ``[x0 - 6w, x1 + 6w]``, the span :func:`eligible_anchor_span` returns. If the
cue lies farther than ``reach`` from that span, no cell that can produce or suppress a detection of the
target sees the cue; the boxes and class scores of those cells are functions of cue-free pixels. What is
not covered: chains of NMS suppressions through successively larger boxes (a box suppressing the box that
would have suppressed another), and the per-image caps on detections (Ultralytics' max_det 300, COCO's 100
per class) that far cells could fill. Neither occurs with a handful of confident boxes per strip, and
benchmarks/small_objects.py measures it directly: the share of near-target detections that change at all
when only the cue is repainted (0 for a model that cannot see the cue).

Imports torch and Ultralytics lazily (only :func:`model_fields`, :func:`receptive_fields` and
:func:`empirical_field` need them).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

__all__ = [
    "ATTENTION_CLASSES",
    "IntervalMap",
    "LevelField",
    "CueInReachError",
    "receptive_fields",
    "cell_intervals",
    "model_fields",
    "baseline_reach",
    "guaranteed_reach",
    "eligible_anchor_span",
    "horizontal_gap",
    "assert_cue_out_of_reach",
    "assert_cue_in_reach",
    "empirical_field",
]

#: Class names of layers that mix every position with every other one (the RF of their output is global).
ATTENTION_CLASSES = frozenset(
    {
        "Attention", "AAttn", "PSA", "PSABlock", "C2PSA", "C2fPSA", "A2C2f", "ABlock", "AIFI",
        "TransformerLayer", "TransformerBlock", "MultiheadAttention", "NonLocal", "NonLocal1d", "NonLocal2d",
        "GlobalContext", "ContextBlock", "GCBlock",
    }
)  # fmt: skip
_POINTWISE = {
    "BatchNorm2d", "SiLU", "ReLU", "LeakyReLU", "Identity", "Dropout", "Hardswish", "Sigmoid", "GELU",
    "Softmax", "SyncBatchNorm", "GroupNorm", "LayerNorm", "DFL", "Concat",
}  # fmt: skip
_DEFAULT_LENGTH = 4096  # a strip long enough for interior P5 cells of every stock n/s model
_DUMMY = 64  # the dummy forward pass that records the applied operations (a multiple of 32)


class CueInReachError(ValueError):
    """The cue of a positive-control image lies where a cell that can detect a target sees it."""


@dataclass
class IntervalMap:
    """Per cell of one axis of a feature map: the input-pixel interval ``[lo[i], hi[i]]`` it depends on."""

    lo: np.ndarray
    hi: np.ndarray
    stride: float
    global_: bool = False
    global_layers: tuple[int, ...] = ()

    @classmethod
    def image(cls, length: int) -> "IntervalMap":
        idx = np.arange(int(length), dtype=np.int64)
        return cls(idx.copy(), idx.copy(), 1.0)

    def __len__(self) -> int:
        return int(self.lo.size)

    def window(self, k: int, s: int, p: int, d: int) -> "IntervalMap":
        """The map after a convolution/pooling (kernel k, stride s, padding p, dilation d) along this axis."""
        n = len(self)
        n_out = (n + 2 * p - d * (k - 1) - 1) // s + 1
        if n_out < 1:
            raise ValueError(f"a kernel {k} (dilation {d}, padding {p}) does not fit a map of {n} cells")
        i = np.arange(n_out)[:, None] * s - p + np.arange(k)[None, :] * d  # (n_out, k) input cells
        valid = (i >= 0) & (i < n)
        ic = np.clip(i, 0, n - 1)
        big = np.iinfo(np.int64).max
        lo = np.where(valid, self.lo[ic], big).min(axis=1)
        hi = np.where(valid, self.hi[ic], -1).max(axis=1)
        if np.any(~valid.any(axis=1)):
            raise ValueError("an output cell sees only padding; this layer geometry is not supported")
        return IntervalMap(lo, hi, self.stride * s, self.global_, self.global_layers)

    def upsample(self, factor: int) -> "IntervalMap":
        idx = np.arange(len(self) * int(factor)) // int(factor)
        return IntervalMap(self.lo[idx], self.hi[idx], self.stride / factor, self.global_, self.global_layers)

    def union(self, other: "IntervalMap") -> "IntervalMap":
        if len(self) != len(other) or self.stride != other.stride:
            raise ValueError(f"cannot join maps of {len(self)} and {len(other)} cells (strides {self.stride}, {other.stride})")
        return IntervalMap(
            np.minimum(self.lo, other.lo), np.maximum(self.hi, other.hi), self.stride,
            self.global_ or other.global_, tuple(sorted(set(self.global_layers) | set(other.global_layers))),
        )  # fmt: skip

    def made_global(self, length: int, layer: int) -> "IntervalMap":
        lo = np.zeros_like(self.lo)
        hi = np.full_like(self.hi, int(length) - 1)
        return IntervalMap(lo, hi, self.stride, True, tuple(sorted({*self.global_layers, layer})))

    def anchors(self) -> np.ndarray:
        return (np.arange(len(self)) + 0.5) * self.stride

    def interior(self, length: int) -> np.ndarray:
        """Cells whose RF touches neither image border (their RF is the unclipped, translation-free one)."""
        return (self.lo > 0) & (self.hi < int(length) - 1)

    def size_and_reach(self, length: int) -> tuple[int, float]:
        """(RF size, reach) in pixels, maxima over interior cells; for a global map, the image length."""
        a = self.anchors()
        inner = self.interior(length)
        if self.global_ or not inner.any():
            return int(length), float(max(a.max(), length - a.min()))
        lo, hi, a = self.lo[inner], self.hi[inner], a[inner]
        return int((hi - lo + 1).max()), float(np.maximum(a - lo, hi + 1 - a).max())


@dataclass(frozen=True)
class LevelField:
    """The receptive field of one Detect level's cells (pixels of the network input, one axis)."""

    level: str  # "P3", "P4", ...
    stride: int
    layer: int  # the layer feeding this Detect input
    input_size: int
    input_reach: float
    head_size: int
    head_reach: float
    conv_input_size: int  # the same with attention-like layers reduced to their local operations
    conv_input_reach: float
    conv_head_size: int
    conv_head_reach: float
    global_layers: tuple[int, ...] = field(default_factory=tuple)

    @property
    def is_global(self) -> bool:
        return bool(self.global_layers)


# ------------------------------------------------------------------------------------------------------
# recording what a layer applies
# ------------------------------------------------------------------------------------------------------


def _pair(v: Any, axis: int) -> int:
    return int(v[axis] if isinstance(v, (tuple, list)) else v)


def _op_of(module, axis: int) -> tuple | None:
    """('win', k, s, p, d) / ('win-ceil', k, s, p, d) (a pooling in ceil mode) / ('up', f) for a spatial op, None
    for a pointwise one; raises for unknown ops. A ceil-mode op is refused only where its geometry is used
    (:func:`_apply_ops`): inside an attention layer (NonLocal's ``sub_sample`` pool) it is on the global path."""
    import torch.nn as nn

    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        if isinstance(module, nn.Conv2d) and isinstance(module.padding, str):
            raise ValueError(f"{type(module).__name__} with padding={module.padding!r} is not supported")
        d = _pair(getattr(module, "dilation", 1), axis)
        op = "win-ceil" if getattr(module, "ceil_mode", False) else "win"
        return (op, _pair(module.kernel_size, axis), _pair(module.stride, axis), _pair(module.padding, axis), d)
    if isinstance(module, nn.Upsample):
        if module.mode != "nearest" or module.scale_factor is None:
            raise ValueError(f"Upsample(mode={module.mode!r}, scale_factor={module.scale_factor}) is not supported")
        f = module.scale_factor
        f = f[axis] if isinstance(f, (tuple, list)) else f
        if float(f) != int(f):
            raise ValueError(f"Upsample scale_factor={f} is not an integer")
        return ("up", int(f))
    if isinstance(module, nn.Linear) or type(module).__name__ in _POINTWISE:
        return None
    if len(list(module.children())) == 0:
        raise ValueError(
            f"cannot bound the receptive field of a {type(module).__name__} layer; "
            "add a rule to yolo_nonlocal.data.receptive_field"
        )
    return None  # a container: its children are recorded


def _is_attention(module) -> bool:
    return any(type(m).__name__ in ATTENTION_CLASSES for m in module.modules())


def _apply_ops(m: IntervalMap, ops: Sequence[tuple], where: str) -> IntervalMap:
    """Compose the recorded ops of one layer (see the module docstring for when this is exact)."""
    if any(o[0] == "win-ceil" for o in ops):
        raise ValueError(f"{where}: a pooling with ceil_mode=True outside an attention layer is not supported")
    spatial = [o for o in ops if not (o[0] == "win" and o[1] == 1 and o[2] == 1)]
    strided = [o for o in spatial if (o[0] == "win" and o[2] != 1) or o[0] == "up"]
    if strided and len(spatial) > 1:
        kinds = ", ".join(str(o) for o in spatial)
        raise ValueError(f"{where}: a strided or upsampling layer with several spatial ops ({kinds}) is not supported")
    out = m
    for o in spatial:
        n = len(out)
        out = out.window(*o[1:]) if o[0] == "win" else out.upsample(o[1])
        if not strided and len(out) != n:
            raise ValueError(f"{where}: a stride-1 op changed the map size ({n} -> {len(out)} cells)")
    return out


@functools.lru_cache(maxsize=16)
def _recorded(spec: str, axis: int) -> tuple[list, dict, list, str]:
    """(layers as (index, from, class, is_attention, ops), Detect branch ops per level, strides, name)."""
    import os

    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    return _record(YOLO(spec).model, axis) + (spec,)


def _record(model, axis: int) -> tuple[list, dict, list]:
    import torch

    layers = list(model.model)
    detect = layers[-1]
    if not hasattr(detect, "cv2") or not hasattr(detect, "cv3"):
        raise ValueError(f"the last layer is a {type(detect).__name__}, not a Detect head with cv2/cv3 branches")
    context: list = [None]
    ops: dict = {}
    handles = []

    def leaf_hook(mod, _inp, _out):
        op = _op_of(mod, axis)
        if op is not None and context[0] is not None:
            ops.setdefault(context[0], []).append(op)

    def set_ctx(key):
        def hook(_mod, _inp):
            context[0] = key

        return hook

    def clear_ctx(key):
        def hook(_mod, _inp, _out):
            if context[0] == key:
                context[0] = None

        return hook

    for i, layer in enumerate(layers[:-1]):
        handles.append(layer.register_forward_pre_hook(set_ctx(("layer", i))))
    handles.append(detect.register_forward_pre_hook(set_ctx(("detect",))))
    branches = {}
    for name in ("cv2", "cv3", "one2one_cv2", "one2one_cv3"):
        mods = getattr(detect, name, None)
        if mods is None:
            continue
        for lvl, branch in enumerate(mods):
            key = ("head", name, lvl)
            branches.setdefault(lvl, []).append(key)
            handles.append(branch.register_forward_pre_hook(set_ctx(key)))
            handles.append(branch.register_forward_hook(clear_ctx(key)))
    for mod in model.modules():
        if len(list(mod.children())) == 0 or isinstance(mod, (torch.nn.Upsample,)):
            handles.append(mod.register_forward_hook(leaf_hook))
        else:
            _op_of(mod, axis)
    was_training = model.training
    try:
        model.eval()
        p = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(1, 3, _DUMMY, _DUMMY, dtype=p.dtype, device=p.device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    table = [
        (i, layer.f, type(layer).__name__, _is_attention(layer), ops.get(("layer", i), []))
        for i, layer in enumerate(layers[:-1])
    ]
    head = {lvl: [ops.get(k, []) for k in keys] for lvl, keys in branches.items()}
    return table, head, [int(s) for s in getattr(detect, "stride", [])], list(detect.f)


def _propagate(table: list, length: int, conv_only: bool) -> list[IntervalMap]:
    outs: list[IntervalMap] = []
    image = IntervalMap.image(length)
    for i, f, cls, attention, ops in table:
        froms = [f] if isinstance(f, int) else list(f)
        srcs = [image if (j == -1 and i == 0) else outs[j] if j >= 0 else outs[i + j] for j in froms]
        where = f"layer {i} ({cls})"
        if cls == "Concat" or (len(srcs) > 1 and not ops):
            m = srcs[0]
            for s in srcs[1:]:
                m = m.union(s)
        elif len(srcs) != 1:
            raise ValueError(f"{where}: a layer with several inputs and its own ops is not supported")
        else:
            if attention:  # the local ops only: a sub-sampling pool inside an attention layer is on its global path
                ops = [o for o in ops if o[0] == "win" and o[2] == 1]
            m = _apply_ops(srcs[0], ops, where)
            if attention and not conv_only:
                m = m.made_global(length, i)
        outs.append(m)
    return outs


def _detection_model(obj: Any):
    """The DetectionModel of a YOLO wrapper or of itself (its ``.model`` is the layer list ending in Detect)."""
    m = obj
    if hasattr(m, "model") and hasattr(m.model, "model") and not hasattr(m.model, "f"):
        m = m.model  # YOLO -> DetectionModel
    layers = getattr(m, "model", None)
    if layers is None or not hasattr(layers, "__getitem__") or not hasattr(layers[-1], "f"):
        raise TypeError(f"expected a YOLO, a DetectionModel or a model spec, got {type(obj).__name__}")
    return m


def _source(model_or_spec: Any, axis: int) -> tuple[list, dict, list, list]:
    if isinstance(model_or_spec, str):
        table, head, strides, froms, _ = _recorded(model_or_spec, axis)
        return table, head, strides, froms
    return _record(_detection_model(model_or_spec), axis)


def _level_maps(source: tuple, length: int, conv_only: bool) -> list[tuple[int, IntervalMap, IntervalMap]]:
    """Per Detect level: (feeding layer, the Detect input's map, the map after the Detect branches)."""
    table, head, strides, froms = source
    outs = _propagate(table, length, conv_only)
    levels = []
    for lvl, j in enumerate(froms):
        j = j if j >= 0 else len(table) + j
        m = outs[j]
        stride = int(round(m.stride))
        if strides and strides[lvl] not in (0, stride):
            raise ValueError(f"Detect input {lvl}: computed stride {stride}, the model says {strides[lvl]}")
        branch = [_apply_ops(m, ops, f"Detect level {lvl}") for ops in head.get(lvl, [[]])]
        h = branch[0]
        for o in branch[1:]:
            h = h.union(o)
        levels.append((j, m, h))
    return levels


def receptive_fields(model_or_spec: Any = "yolov8n.yaml", *, axis: int = 1, length: int = _DEFAULT_LENGTH) -> list[LevelField]:
    """The receptive field of every Detect level of a model (a built ``DetectionModel``, a ``YOLO`` or a spec
    such as ``"yolov8n.yaml"``) along ``axis`` (1 = image width, 0 = height), measured on a strip of
    ``length`` pixels (long enough that interior cells exist; the default suits every stock n/s model)."""
    if length % 32 or length < 256:
        raise ValueError(f"length={length} must be a multiple of 32 and >= 256")
    if axis not in (0, 1):
        raise ValueError(f"axis={axis} must be 0 (height) or 1 (width)")
    source = _source(model_or_spec, axis)
    full = _level_maps(source, length, conv_only=False)
    local = _level_maps(source, length, conv_only=True)
    fields = []
    for (j, m_full, h_full), (_, m_local, h_local) in zip(full, local):
        stride = int(round(m_full.stride))
        fields.append(
            LevelField(
                f"P{int(round(np.log2(stride)))}", stride, j, *m_full.size_and_reach(length),
                *h_full.size_and_reach(length), *m_local.size_and_reach(length), *h_local.size_and_reach(length),
                m_full.global_layers,
            )
        )  # fmt: skip
    return fields


def cell_intervals(model_or_spec: Any = "yolov8n.yaml", width: int = 1024, *, level: int = 0, head: bool = False,
                   axis: int = 1, conv_only: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For an input ``width`` pixels long along ``axis``: every cell's anchor and RF ``[lo, hi]`` (inclusive
    pixel indices, clipped at the borders) at Detect level ``level`` (``head=True``: after its branches)."""
    if width % 32 or width < 64:
        raise ValueError(f"width={width} must be a multiple of 32 and >= 64")
    levels = _level_maps(_source(model_or_spec, axis), width, conv_only)
    if not 0 <= level < len(levels):
        raise ValueError(f"level={level}: the Detect head has {len(levels)} inputs")
    _, m, h = levels[level]
    m = h if head else m
    return m.anchors(), m.lo.copy(), m.hi.copy()


def model_fields(spec: str = "yolov8n.yaml") -> list[LevelField]:
    """:func:`receptive_fields` of a model spec along the width (cached per spec)."""
    return receptive_fields(spec)


def baseline_reach(spec: str = "yolov8n.yaml") -> float:
    """The largest reach, in pixels, of any output cell (class and box outputs) of a conv-only model.

    Refuses a model with a global layer: nothing is out of its reach.
    """
    fields = model_fields(spec)
    glob = sorted({g for f in fields for g in f.global_layers})
    if glob:
        raise ValueError(f"{spec} has attention-like layers {glob} whose receptive field is the whole image")
    return max(f.head_reach for f in fields)


def guaranteed_reach(spec: str = "yolov8n.yaml", *, length: int = _DEFAULT_LENGTH) -> float:
    """The distance, in pixels, that every interior Detect-input cell of every level sees on both sides of its
    anchor (the minimum over cells and levels of ``min(anchor - lo, hi + 1 - anchor)``): content closer than
    this to a cell's anchor is always inside its RF. Used by the near-cue variant."""
    best = float("inf")
    for _, m, _ in _level_maps(_source(spec, 1), length, conv_only=False):
        inner = m.interior(length)
        if m.global_ or not inner.any():
            continue
        a = m.anchors()[inner]
        best = min(best, float(np.minimum(a - m.lo[inner], m.hi[inner] + 1 - a).min()))
    if best == float("inf"):
        raise ValueError(f"{spec}: no level has interior cells at length {length}")
    return best


def eligible_anchor_span(x0: float, x1: float, nms_iou: float = 0.5) -> tuple[float, float]:
    """Anchors (along x) of every cell whose box can reach IoU >= 0.5 with a target spanning ``[x0, x1)``, or
    suppress such a box in NMS at an IoU threshold >= ``nms_iou`` (see the module docstring): ``2w + 2w/nms_iou``
    on each side, 6w at the default."""
    w = float(x1) - float(x0)
    if w <= 0:
        raise ValueError(f"empty target span [{x0}, {x1})")
    if not 0 < nms_iou <= 1:
        raise ValueError(f"nms_iou={nms_iou} must be within (0, 1]")
    margin = 2 * w + 2 * w / nms_iou
    return float(x0) - margin, float(x1) + margin


def horizontal_gap(span: tuple[float, float], cue: tuple[float, float]) -> float:
    """The distance between an anchor span and a cue's pixels ``[c0, c1)`` along x (<= 0 if they overlap)."""
    a0, a1 = span
    c0, c1 = cue
    return max(float(c0) - a1, a0 - float(c1))


def assert_cue_out_of_reach(targets: Sequence[tuple[float, float]], cue: tuple[float, float], reach: float) -> float:
    """Raise :class:`CueInReachError` unless every target's eligible anchor span is more than ``reach`` from the
    cue's columns ``[c0, c1)``; returns the smallest gap minus ``reach`` (the margin)."""
    if not targets:
        return float("inf")
    margin = min(horizontal_gap(eligible_anchor_span(*t), cue) for t in targets) - float(reach)
    if margin < 0:
        raise CueInReachError(
            f"the cue at x in [{cue[0]}, {cue[1]}) is within {reach:.0f} px (the baseline's largest receptive-field "
            f"reach) of an anchor that can detect a target (short by {-margin:.0f} px)"
        )
    return margin


def assert_cue_in_reach(targets: Sequence[tuple[float, float]], cue: tuple[float, float], reach: float) -> None:
    """Raise :class:`CueInReachError` unless the whole cue lies within ``reach`` of each target's centre."""
    for x0, x1 in targets:
        c = (x0 + x1) / 2
        far = max(abs(cue[0] - c), abs(cue[1] - c))
        if far > reach:
            raise CueInReachError(f"a target at x={c:.0f} does not see the cue [{cue[0]}, {cue[1]}) within {reach:.0f} px")


def empirical_field(model_or_spec: Any = "yolov8n.yaml", *, level: int = 0, head: bool = False, width: int = 2048,
                    height: int = 64, seed: int = 0, cell: int | None = None) -> tuple[int, int, int]:
    """The columns where the gradient of one central output cell w.r.t. the input is non-zero.

    A randomly initialised copy of the model in float64 (eval mode, so BatchNorm is a fixed affine map; every
    MaxPool2d replaced by an AvgPool2d of the same geometry, because a max passes gradient to one input only
    and would hide the structural dependency), one random input of ``height x width``, and the summed output
    channels of cell ``cell`` (default: the middle one) of the middle row of Detect input ``level``
    (``head=True``: of that level's class and box outputs). Returns ``(cell index, first column, last column)``;
    the analytic RF must contain these.
    """
    import copy
    import os

    import torch
    from torch import nn

    if width % 32 or height % 32:
        raise ValueError(f"width={width} and height={height} must be multiples of 32")
    if isinstance(model_or_spec, str):
        os.environ.setdefault("YOLO_OFFLINE", "1")
        from ultralytics import YOLO

        model = YOLO(model_or_spec).model
    else:
        model = copy.deepcopy(_detection_model(model_or_spec))
    torch.manual_seed(seed)
    for name, mod in list(model.named_modules()):
        for cname, child in list(mod.named_children()):
            if isinstance(child, nn.MaxPool2d):
                setattr(mod, cname, nn.AvgPool2d(child.kernel_size, child.stride, child.padding, count_include_pad=False))
    for mod in model.modules():  # a fresh random function: no zero-initialised branch hides a dependency
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.1, 0.1)
    model = model.double().eval()
    detect = model.model[-1]
    captured: dict = {}

    class _Stop(Exception):
        pass

    def grab(_mod, inputs):
        captured["x"] = inputs[0]
        raise _Stop

    handle = detect.register_forward_pre_hook(grab)
    x = torch.randn(1, 3, height, width, dtype=torch.float64, requires_grad=True)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    feats = captured["x"]
    if level < 0 or level >= len(feats):
        raise ValueError(f"level={level}: the Detect head has {len(feats)} inputs")
    f = feats[level]
    if head:
        outs = [getattr(detect, n)[level](f) for n in ("cv2", "cv3", "one2one_cv2", "one2one_cv3") if hasattr(detect, n)]
        f = torch.cat(outs, 1)
    row, col = f.shape[2] // 2, (f.shape[3] // 2 if cell is None else int(cell))
    if not 0 <= col < f.shape[3]:
        raise ValueError(f"cell={cell} is outside the {f.shape[3]} cells of level {level}")
    f[0, :, row, col].sum().backward()
    cols = torch.nonzero(x.grad[0].abs().sum(dim=(0, 1)) > 0).flatten()
    return int(col), int(cols.min()), int(cols.max())
