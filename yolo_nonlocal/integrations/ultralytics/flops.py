"""True GFLOPs for Ultralytics model summaries: add the attention matmuls its FLOP counter misses.

Ultralytics counts FLOPs with thop, which hooks conv, BN and a few other layer types. The pairwise products
of a Non-local block (theta^T phi and the weighted sum of g, batched matmuls or a fused attention kernel)
are invisible to it, although they can dominate: at YOLOv8s P3 (80 x 80 at 640 px, 64 bottleneck channels)
one block costs 6400^2 x 128 MACs = 10.5 GFLOPs per image, about a third of the whole model. Recent
Ultralytics also extrapolates thop's count from small proxy images, which is exact only for costs linear
in the pixel count; the attention cost is quadratic, so it is computed here at the real size instead.

:func:`attention_gflops` finds each block's spatial size at a given image size (one forward pass at a
small stride-aligned proxy records each block's down-sampling factor) and sums
``NonLocal.attention_macs`` (x2, Ultralytics reports GFLOPs = 2 x MACs). :func:`install` wraps
``ultralytics.utils.torch_utils.get_flops``, which ``model.info()``, the training summary and the loggers
all call, so every summary includes them.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

__all__ = ["attention_gflops", "block_spatial_sizes", "patch", "unpatch", "install"]


def _blocks(model: nn.Module) -> list[nn.Module]:
    from yolo_nonlocal.nonlocal_block import NonLocal

    return [m for m in model.modules() if isinstance(m, NonLocal)]


def _unwrap(model: nn.Module) -> nn.Module:
    while hasattr(model, "module") and isinstance(model.module, nn.Module):  # DP / DDP / EMA wrappers
        model = model.module
    return getattr(model, "_orig_mod", model)  # torch.compile


def block_spatial_sizes(model: nn.Module, imgsz: int | tuple | list = 640) -> list[tuple[nn.Module, tuple]]:
    """Each NonLocal block of ``model`` with its input's spatial size for an ``imgsz`` image.

    A forward pass at a small proxy (a multiple of the model's largest stride) records the input size of
    every block; its ratio to the proxy is the block's down-sampling factor f, and a block sees
    ceil(imgsz / f) per side at the real size (as stride-2 convolutions with padding 1 give). The model's
    train/eval flags are restored afterwards and no gradient or running statistic is touched.
    """
    model = _unwrap(model)
    blocks = _blocks(model)
    if not blocks:
        return []
    h, w = (imgsz, imgsz) if isinstance(imgsz, (int, float)) else (imgsz[0], imgsz[-1])
    p = next(model.parameters())
    stride = int(max(int(model.stride.max()), 32)) if hasattr(model, "stride") else 32
    proxy = 2 * stride
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    ch = first_conv.in_channels if first_conv is not None else 3
    seen: dict[int, tuple] = {}
    def record(module, inputs):  # a pre-hook that returns None leaves the inputs alone
        seen.setdefault(id(module), tuple(inputs[0].shape[2:]))

    hooks = [b.register_forward_pre_hook(record) for b in blocks]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, ch, proxy, proxy, device=p.device, dtype=p.dtype))
    finally:
        for hk in hooks:
            hk.remove()
        for m, mode in modes.items():
            m.training = mode
    out = []
    for b in blocks:
        if id(b) not in seen:
            continue
        size = seen[id(b)]
        if len(size) == 2:
            fy, fx = proxy / size[0], proxy / size[1]
            out.append((b, (math.ceil(h / fy), math.ceil(w / fx))))
        else:  # 1-D / 3-D blocks inside a 2-D detector are unusual: count them at the size they saw
            out.append((b, size))
    return out


def attention_gflops(model: nn.Module, imgsz: int | tuple | list = 640) -> float:
    """GFLOPs (2 x MACs, Ultralytics' convention) of the NonLocal pairwise products for one ``imgsz`` image."""
    return sum(2 * b.attention_macs(size) for b, size in block_spatial_sizes(model, imgsz)) / 1e9


@contextlib.contextmanager
def _hidden_attention():
    """Run NonLocal blocks with torch-function dispatch off, so no counter sees their pairwise products.

    Recent ultralytics-thop counts functional matmuls and SDPA too, but on small proxy images whose result
    it extrapolates (exact only where the extrapolation model holds), older releases not at all; hiding the
    products from it and adding :func:`attention_gflops` at the real size gives one exact count with both.
    Module hooks (the block's own convolutions and BN) still fire and are counted as usual.
    """
    from yolo_nonlocal.nonlocal_block import NonLocal

    disable = getattr(torch._C, "DisableTorchFunction", None)
    if disable is None:
        yield
        return
    original = NonLocal.__dict__["forward"]

    def forward(self, x):
        with disable():
            return original(self, x)

    NonLocal.forward = forward
    try:
        yield
    finally:
        NonLocal.forward = original


def _make_get_flops(orig):
    def get_flops(model, imgsz=640, *args, **kwargs):
        try:
            has_blocks = bool(_blocks(_unwrap(model)))
        except Exception:
            has_blocks = False
        if not has_blocks:
            return orig(model, imgsz, *args, **kwargs)
        with _hidden_attention():
            flops = orig(model, imgsz, *args, **kwargs)
        if not flops:  # thop missing or failed: Ultralytics shows no GFLOPs, and neither do we
            return flops
        try:
            return flops + attention_gflops(model, imgsz)
        except Exception:
            return flops

    return get_flops


KEY = "yolo_nonlocal.flops.get_flops"


def patch(torch_utils) -> None:
    """Wrap ``torch_utils.get_flops`` (``ultralytics.utils.torch_utils``) to add :func:`attention_gflops`."""
    from yolo_nonlocal.integrations import import_hooks

    import_hooks.wrap(torch_utils, "get_flops", _make_get_flops, key=KEY)


def unpatch(torch_utils) -> None:
    from yolo_nonlocal.integrations import import_hooks

    import_hooks.unwrap(torch_utils, "get_flops", key=KEY)


def install() -> None:
    """Wrap Ultralytics' ``get_flops`` now (imports Ultralytics; :func:`yolo_nonlocal.register` does this too)."""
    from ultralytics.utils import torch_utils

    patch(torch_utils)
