"""Single-head softmax attention, ``softmax(s q k^T) v``, on the fastest measured path for the device and size.

    q: (B, N, d)   k: (B, N', d)   v: (B, N', c)   ->   (B, N, c)

Backends (``backend=``):

- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` on contiguous (B, 1, N, C) tensors, so the
  fused (flash / memory-efficient) kernels run instead of the math fallback that strided views get; memory
  linear in N. GPUs, ONNX export and tracing always take it. ``c != d`` (gaussian mode) pads v with zeros.
- ``explicit``: float32 ``bmm`` + softmax + ``bmm``; holds the B x N x N' logits.
- ``chunked``: query-chunked products with a recomputing backward (:mod:`.chunked_attention`).
- ``auto``: as above on GPUs and in export; on the CPU, ``explicit`` while the logits stay under
  :data:`CPU_EXPLICIT_MAX_LOGITS` elements, ``chunked`` above (``benchmarks/block.py`` measured where).
"""

from __future__ import annotations

import importlib
from typing import Optional

import torch
import torch.nn.functional as F

from yolo_nonlocal.ops.chunked_attention import chunked_softmax_attention

__all__ = ["BACKENDS", "ONNX_MIN_OPSET", "CPU_EXPLICIT_MAX_LOGITS", "select_backend", "softmax_attention"]

BACKENDS = ("auto", "sdpa", "explicit", "chunked")
ONNX_MIN_OPSET = 14  # torch exports scaled_dot_product_attention from opset 14 on

# The CPU's fused SDPA kernel is slower than matrix products (benchmarks/block.py), so ``auto`` on the CPU
# takes the explicit product while its B x N x N' float32 logits stay under this many elements (64 Mi floats,
# 256 MiB), and the query-chunked product with a recomputing backward above it, whose memory is linear in N.
CPU_EXPLICIT_MAX_LOGITS = 1 << 26


def _onnx_export_opset() -> Optional[int]:
    """The opset of the ONNX export under way (TorchScript-based exporter), or None if unknown."""
    for where in ("torch.onnx._internal.torchscript_exporter._globals", "torch.onnx._globals"):  # torch >= 2.9, older
        try:
            return int(importlib.import_module(where).GLOBALS.export_onnx_opset_version)
        except Exception:  # private API: absent in this torch release
            continue
    return None


def select_backend(q: torch.Tensor, k: torch.Tensor, backend: str = "auto") -> str:
    """The backend ``auto`` resolves to for these queries and keys (any other value is returned as is)."""
    if backend != "auto":
        return backend
    if torch.onnx.is_in_onnx_export() or torch.jit.is_scripting() or torch.jit.is_tracing():
        return "sdpa"
    if q.device.type != "cpu":
        return "sdpa"
    return "explicit" if q.shape[0] * q.shape[1] * k.shape[1] <= CPU_EXPLICIT_MAX_LOGITS else "chunked"


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, backend: str = "auto") -> torch.Tensor:
    """``softmax(scale * q k^T) v`` in v's dtype; the sums run in float32 off the fused path (autocast-safe)."""
    backend = select_backend(q, k, backend)
    if backend == "sdpa":
        if torch.onnx.is_in_onnx_export():
            opset = _onnx_export_opset()
            if opset is not None and opset < ONNX_MIN_OPSET:
                raise ValueError(
                    f"NonLocal's fused attention (scaled_dot_product_attention) exports to ONNX from opset "
                    f"{ONNX_MIN_OPSET} on; opset {opset} was asked: export with opset={ONNX_MIN_OPSET} or newer"
                )
        c = v.shape[-1]
        if c != q.shape[-1]:  # gaussian mode: the fused kernels need equal head sizes, so pad g with zeros
            v = F.pad(v, (0, q.shape[-1] - c))
        # (B, 1, N, C) contiguous: one head in the layout the fused kernels take; the strided views
        # that flatten(2).transpose(1, 2) gives would silently fall back to the N x N' math kernel
        q, k, v = (t.contiguous()[:, None] for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, scale=scale)
        return y[:, 0, :, :c]
    if backend == "chunked":
        return chunked_softmax_attention(q, k, v, scale)
    if backend != "explicit":
        raise ValueError(f"unknown attention backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    with torch.autocast(device_type=q.device.type, enabled=False):
        # the scale goes on q (N x d), not on the N x N' logits: one pass less over them
        logits = torch.bmm(q.float() * scale, k.float().transpose(1, 2))
        return torch.bmm(logits.softmax(dim=-1), v.float()).to(v.dtype)
