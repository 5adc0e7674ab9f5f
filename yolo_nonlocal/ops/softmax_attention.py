"""Single-head softmax attention, ``softmax(s q k^T) v``, on the fastest measured path for the device and size.

    q: (B, N, d)   k: (B, N', d)   v: (B, N', c)   ->   (B, N, c)

Backends (``backend=``):

- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` on contiguous (B, H, N/H, C) tensors, so
  the fused (flash) kernels run instead of the math fallback that strided views get; memory linear in N.
  GPUs, ONNX export and tracing always take it. Unequal head sizes (``c != d``, gaussian mode) are padded
  with zeros, which changes no dot product. On the CPU (eager) it runs in float32 (float64 stays float64)
  with autocast off, as the other CPU backends do, and splits the queries into H "heads" that share the
  keys when a backward pass will follow and there are more threads than images (see :func:`query_heads`).
- ``explicit``: ``bmm`` + softmax + ``bmm`` in float32 (float64 stays float64); holds the N x N' logits.
- ``chunked``: query-chunked products with a recomputing backward (:mod:`.chunked_attention`).
- ``auto``: ``sdpa`` on GPUs and in export; on the CPU ``explicit`` while one image's logits fit
  :data:`CPU_EXPLICIT_MAX_LOGITS` elements (they stay in L2), ``sdpa`` above.

Why (``python benchmarks/block.py --kernels``, torch 2.14.1, 1 thread, AMD EPYC; see docs/speed.md): the
CPU flash kernel (torch >= 2.1 for fp32) streams 256-query x 512-key tiles of logits through the cache
once, where the explicit form writes B x N x N' float32 logits to memory and reads them back three times
(softmax's max, sum and scale passes, then the product with v). At the YOLOv8n P3 map of a 640 px image
(N = N' = 6400, d = c = 32: 5.2 GFLOPs, 164 MB of logits) the forward pass takes 75 ms fused against
273-320 ms explicit and 244 ms chunked (99 ms with L2-sized chunks); forward+backward 285 ms against
685 ms and 1049 ms. Below about 400 x 400 logits per image the explicit form is 5-30% faster (its
logits fit L2 and the fused kernel's per-tile bookkeeping dominates): P5 at 640 px, 400 x 400 x 128,
takes 1.01 ms explicit and 1.06 ms fused; 1600 x 1600 x 32 takes 5.9 ms explicit and 4.7 ms fused.
"""

from __future__ import annotations

import importlib
import math
from typing import Optional

import torch
import torch.nn.functional as F

from yolo_nonlocal.ops.chunked_attention import chunked_softmax_attention, compute_dtype

__all__ = [
    "BACKENDS", "ONNX_MIN_OPSET", "CPU_EXPLICIT_MAX_LOGITS", "MIN_QUERIES_PER_HEAD",
    "query_heads", "sdpa_attention", "explicit_attention", "select_backend", "softmax_attention",
]

BACKENDS = ("auto", "sdpa", "explicit", "chunked")
ONNX_MIN_OPSET = 14  # torch exports scaled_dot_product_attention from opset 14 on

# ``auto`` on the CPU takes the explicit product while one image's N x N' float32 logits stay under this many
# elements (2^18 = 1 MiB, an L2 cache), the fused kernel above: benchmarks/block.py --kernels measured 400 x 400
# (P5 at 640 px) 5% faster explicit, 1600 x 400 (P3 at 320 px with sub_sample) 4x faster fused (module doc).
CPU_EXPLICIT_MAX_LOGITS = 1 << 18

# The CPU flash kernel's backward runs one thread per (image, head) pair, and with a single pair it calls
# MKL's multi-threaded GEMM on 256 x 512 tiles, which was 10x slower than one thread (2965 CPU ms against
# 285 ms for a 6400 x 6400 x 32 forward+backward with 2 threads; benchmarks/block.py --kernels). Splitting
# the queries into heads restores one tile loop per thread; a head keeps at least this many queries so that
# the kernel keeps its largest tile (256 queries, taken from 768 queries a head on).
MIN_QUERIES_PER_HEAD = 768


def _onnx_export_opset() -> Optional[int]:
    """The opset of the ONNX export under way (TorchScript-based exporter), or None if unknown."""
    for where in ("torch.onnx._internal.torchscript_exporter._globals", "torch.onnx._globals"):  # torch >= 2.9, older
        try:
            return int(importlib.import_module(where).GLOBALS.export_onnx_opset_version)
        except Exception:  # private API: absent in this torch release
            continue
    return None


def _exporting() -> bool:
    return torch.onnx.is_in_onnx_export() or torch.jit.is_scripting() or torch.jit.is_tracing()


def _check_shapes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise ValueError(f"softmax attention expects 3-D (B, N, C) tensors, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape[:2] != v.shape[:2] or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2]:
        raise ValueError(
            f"softmax attention: incompatible shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}; "
            "expected q (B, N, d), k (B, N', d), v (B, N', c)"
        )


def query_heads(batch: int, n: int, threads: int) -> int:
    """How many heads to split ``n`` queries into so that the CPU flash backward uses ``threads`` threads.

    The kernel's backward gives each (image, head) pair to one thread; ``batch * heads`` is made a multiple
    of ``threads`` (even shares), with at least :data:`MIN_QUERIES_PER_HEAD` queries a head. 1 when one
    thread, or enough images, already keep every thread busy.
    """
    if batch < 1 or n < 1 or threads < 1:
        raise ValueError(f"query_heads: batch, n and threads must be positive, got {batch}, {n}, {threads}")
    heads = threads // math.gcd(batch, threads)
    return max(1, min(heads, n // MIN_QUERIES_PER_HEAD))


def _equal_head_sizes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """Zero-pad q and k, or v, to one head size (the fused kernels need it); zeros change no dot product."""
    d, c = q.shape[-1], v.shape[-1]
    if c < d:
        v = F.pad(v, (0, d - c))
    elif d < c:
        q, k = F.pad(q, (0, c - d)), F.pad(k, (0, c - d))
    return q, k, v


def _sdpa_graph(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """The form GPUs, ONNX export and tracing see: (B, 1, N, C) contiguous, in the inputs' dtype."""
    if torch.onnx.is_in_onnx_export():
        opset = _onnx_export_opset()
        if opset is not None and opset < ONNX_MIN_OPSET:
            raise ValueError(
                f"NonLocal's fused attention (scaled_dot_product_attention) exports to ONNX from opset "
                f"{ONNX_MIN_OPSET} on; opset {opset} was asked: export with opset={ONNX_MIN_OPSET} or newer"
            )
    c = v.shape[-1]
    q, k, v = _equal_head_sizes(q, k, v)
    # (B, 1, N, C) contiguous: one head in the layout the fused kernels take; the strided views
    # that flatten(2).transpose(1, 2) gives would silently fall back to the N x N' math kernel
    q, k, v = (t.contiguous()[:, None] for t in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, scale=scale)
    return y[:, 0, :, :c]


def sdpa_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, heads: Optional[int] = None
) -> torch.Tensor:
    """``softmax(scale * q k^T) v`` through the fused kernel, in v's dtype.

    On the CPU (eager) the product runs in float32 (float64 stays float64) with autocast off, and the
    queries are split into ``heads`` (default :func:`query_heads` when a backward pass will follow) heads
    that share the keys: zero-padded to a multiple of ``heads``, the padding rows sliced off again. Other
    devices, ONNX export and tracing get one head in the inputs' dtype.
    """
    _check_shapes(q, k, v)
    if _exporting() or q.device.type != "cpu":
        return _sdpa_graph(q, k, v, scale)
    b, n, c, dtype = q.shape[0], q.shape[1], v.shape[-1], v.dtype
    if heads is None:
        backward = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
        heads = query_heads(b, n, torch.get_num_threads()) if backward else 1
    elif isinstance(heads, bool) or not isinstance(heads, int) or not 1 <= heads <= n:
        raise ValueError(f"sdpa_attention: heads must be an int from 1 to the {n} queries, got {heads!r}")
    cdt = compute_dtype(q.dtype)
    with torch.autocast(device_type="cpu", enabled=False):
        q, k, v = _equal_head_sizes(q.to(cdt), k.to(cdt), v.to(cdt))
        per_head = -(-n // heads)
        if per_head * heads != n:
            q = F.pad(q, (0, 0, 0, per_head * heads - n))
        # (B, H, N/H, C): contiguous rows (the flash kernel needs a unit last stride, or the math kernel runs);
        # k and v are the same for every head, expanded without a copy
        q = q.contiguous().view(b, heads, per_head, q.shape[-1])
        k, v = (t.contiguous()[:, None].expand(-1, heads, -1, -1) for t in (k, v))
        y = F.scaled_dot_product_attention(q, k, v, scale=scale)
        y = y.reshape(b, heads * per_head, -1)[:, :n, :c]
    return y.to(dtype)


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """``softmax(scale * q k^T) v`` with the N x N' logits in memory, float32 (float64 stays), autocast off."""
    _check_shapes(q, k, v)
    cdt = compute_dtype(q.dtype)
    with torch.autocast(device_type=q.device.type, enabled=False):
        # the scale goes on q (N x d), not on the N x N' logits: one pass less over them
        logits = torch.bmm(q.to(cdt) * scale, k.to(cdt).transpose(1, 2))
        return torch.bmm(logits.softmax(dim=-1), v.to(cdt)).to(v.dtype)


def select_backend(q: torch.Tensor, k: torch.Tensor, backend: str = "auto") -> str:
    """The backend ``auto`` resolves to for these queries and keys (any other value is returned as is)."""
    if backend != "auto":
        return backend
    if _exporting() or q.device.type != "cpu":
        return "sdpa"
    return "explicit" if q.shape[1] * k.shape[1] <= CPU_EXPLICIT_MAX_LOGITS else "sdpa"


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, backend: str = "auto") -> torch.Tensor:
    """``softmax(scale * q k^T) v`` in v's dtype; on the CPU the sums run in float32 (autocast-safe)."""
    backend = select_backend(q, k, backend)
    if backend == "sdpa":
        return sdpa_attention(q, k, v, scale)
    if backend == "chunked":
        return chunked_softmax_attention(q, k, v, scale)
    if backend == "explicit":
        return explicit_attention(q, k, v, scale)
    raise ValueError(f"unknown attention backend {backend!r}; expected one of {', '.join(BACKENDS)}")
