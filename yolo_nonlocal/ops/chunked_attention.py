"""Softmax attention in query chunks with a recomputing backward: GEMM speed, memory linear in N.

    out = softmax(s * q k^T) v        q: (B, N, d), k: (B, N', d), v: (B, N', c)

The explicit form holds N x N' logits (7.5 GB at a 160x160 map). This computes the same function a chunk of queries at a time with
ordinary matrix products, keeps only each row's log-sum-exp for backward, and recomputes each chunk's
probabilities there (FlashAttention's backward, tiled over queries only):

    P = exp(s q k^T - L),  dP = dout v^T,  dS = P * (dP - rowsum(dout * out)),
    dq = s dS k,  dk = s dS^T q,  dv = P^T dout.

Peak extra memory is a few chunks of ``chunk x N'`` floats. Computation runs in float32 (float64 stays
float64) with autocast off.

The default chunk holds 2^18 logits (1 MiB of float32, an L2 cache): ``benchmarks/block.py --kernels``
measured a 6400 x 6400 x 32 forward at 101 ms with it against 244 ms with 64 MiB chunks (1 thread, torch
2.14.1), the logits of a chunk staying in cache between the two products and the softmax. The fused flash
kernel (backend ``sdpa``, 75 ms there) is faster still on the CPU, and ``auto`` takes it; this backend stays
selectable, for comparison and for builds whose fused kernel is missing or slower. With several threads
its small per-chunk GEMMs are threaded by MKL and scale badly (``--kernels --threads 2``).
"""

from __future__ import annotations

import torch

__all__ = ["DEFAULT_CHUNK_ELEMENTS", "chunked_softmax_attention", "compute_dtype"]

# elements of one chunk's logits (256 Ki floats = 1 MiB, an L2 cache; measured in the module doc)
DEFAULT_CHUNK_ELEMENTS = 1 << 18


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the CPU products and sums run in: float32 for half types, float64 kept (parity tests)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _chunks(n: int, n_keys: int, chunk_elements: int):
    step = max(1, min(n, chunk_elements // max(n_keys, 1)))
    return [(i, min(i + step, n)) for i in range(0, n, step)]


class _ChunkedSoftmaxAttention(torch.autograd.Function):
    """q arrives pre-scaled; each chunk uses the fused softmax kernels the explicit form uses."""

    @staticmethod
    def forward(ctx, q, k, v, chunk_elements: int):
        out = torch.empty(q.shape[0], q.shape[1], v.shape[2], dtype=q.dtype, device=q.device)
        kt = k.transpose(1, 2)
        for i, j in _chunks(q.shape[1], k.shape[1], chunk_elements):
            torch.bmm(torch.bmm(q[:, i:j], kt).softmax(dim=-1), v, out=out[:, i:j])
        ctx.save_for_backward(q, k, v)
        ctx.chunk_elements = chunk_elements
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v = ctx.saved_tensors
        dout = dout.contiguous()
        dq, dk, dv = torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)
        kt, vt = k.transpose(1, 2), v.transpose(1, 2)
        for i, j in _chunks(q.shape[1], k.shape[1], ctx.chunk_elements):
            qc, doc = q[:, i:j], dout[:, i:j]
            p = torch.bmm(qc, kt).softmax(dim=-1)  # recomputed probabilities
            dv.baddbmm_(p.transpose(1, 2), doc)
            ds = torch._softmax_backward_data(torch.bmm(doc, vt), p, -1, p.dtype)  # P * (dP - rowsum(P dP))
            torch.bmm(ds, k, out=dq[:, i:j])
            dk.baddbmm_(ds.transpose(1, 2), qc)
        return dq, dk, dv, None


def chunked_softmax_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS
) -> torch.Tensor:
    """softmax(scale * q k^T) v for q (B, N, d), k (B, N', d), v (B, N', c); returns (B, N, c) in v's dtype."""
    if isinstance(chunk_elements, bool) or not isinstance(chunk_elements, int) or chunk_elements < 1:
        raise ValueError(f"chunked_softmax_attention: chunk_elements must be a positive int, got {chunk_elements!r}")
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise ValueError(f"chunked_softmax_attention expects 3-D (B, N, C) tensors, got {q.shape}, {k.shape}, {v.shape}")
    if k.shape[:2] != v.shape[:2] or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2]:
        raise ValueError(f"chunked_softmax_attention: incompatible shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    dtype = v.dtype
    with torch.autocast(device_type=q.device.type, enabled=False):
        cdt = compute_dtype(q.dtype)
        qc, kc, vc = (t.to(cdt).contiguous() for t in (q * scale, k, v))
        return _ChunkedSoftmaxAttention.apply(qc, kc, vc, int(chunk_elements)).to(dtype)
