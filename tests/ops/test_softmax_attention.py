"""The attention backends against ``softmax(s q k^T) v`` written out in float64, values and gradients.

The reference shares no code with the kernels: it subtracts each row's maximum, exponentiates, divides by
the row sum and multiplies by v, all in float64 einsums. Every backend (and the CPU fused path's query
split into heads, with and without padding rows) must match it to float64 rounding, keep float64 inputs in
float64, run in float32 under autocast, be deterministic, and export (ONNX, TorchScript) as the fused op.
"""

from __future__ import annotations

import io

import pytest
import torch

from yolo_nonlocal.ops.chunked_attention import DEFAULT_CHUNK_ELEMENTS, chunked_softmax_attention, compute_dtype
from yolo_nonlocal.ops.softmax_attention import (
    BACKENDS,
    CPU_EXPLICIT_MAX_LOGITS,
    MIN_QUERIES_PER_HEAD,
    explicit_attention,
    query_heads,
    sdpa_attention,
    select_backend,
    softmax_attention,
)

RUN = {
    "sdpa": lambda q, k, v, s: softmax_attention(q, k, v, s, "sdpa"),
    "explicit": lambda q, k, v, s: softmax_attention(q, k, v, s, "explicit"),
    "chunked": lambda q, k, v, s: softmax_attention(q, k, v, s, "chunked"),
    "chunked, 3 queries a chunk": lambda q, k, v, s: chunked_softmax_attention(q, k, v, s, chunk_elements=3 * k.shape[1]),
    "sdpa, 2 heads": lambda q, k, v, s: sdpa_attention(q, k, v, s, heads=2),
    "sdpa, 3 heads (padded)": lambda q, k, v, s: sdpa_attention(q, k, v, s, heads=3),
    "sdpa, 1 head": lambda q, k, v, s: sdpa_attention(q, k, v, s, heads=1),
}

# (N, N', d, c): equal head sizes (embedded Gaussian), c < d (Gaussian mode), c > d, a sub-sampled key set
SHAPES = [(37, 37, 5, 5), (37, 23, 6, 3), (20, 20, 3, 7), (64, 16, 4, 4)]


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(scale q k^T) v from the definition, float64."""
    q, k, v = q.double(), k.double(), v.double()
    logits = scale * torch.einsum("bid,bjd->bij", q, k)
    e = torch.exp(logits - logits.amax(dim=-1, keepdim=True))
    return torch.einsum("bij,bjc->bic", e / e.sum(dim=-1, keepdim=True), v)


def _inputs(n, n_keys, d, c, dtype=torch.float64, batch=2, std=1.0, grad=True, seed=0, strided=True):
    """q, k, v as the block makes them: channels-last views of (B, C, N) maps (strided, not contiguous)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for length, ch in ((n, d), (n_keys, d), (n_keys, c)):
        t = (torch.randn(batch, ch, length, generator=gen, dtype=torch.float64) * std).to(dtype)
        t = t.transpose(1, 2) if strided else t.transpose(1, 2).contiguous()
        out.append(t.detach().requires_grad_(grad))
    return out


# ---------------------------------------------------------------------------------------- float64 parity
@pytest.mark.parametrize("name", list(RUN))
@pytest.mark.parametrize("n,n_keys,d,c", SHAPES)
def test_float64_parity_values_and_gradients(name, n, n_keys, d, c):
    q, k, v = _inputs(n, n_keys, d, c)
    out = RUN[name](q, k, v, 0.7)
    ref = reference(q, k, v, 0.7)
    assert out.dtype == torch.float64 and out.shape == (2, n, c)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grads = torch.autograd.grad((out * w).sum(), (q, k, v))
    ref_grads = torch.autograd.grad((ref * w).sum(), (q, k, v))
    for got, want, what in zip(grads, ref_grads, "qkv"):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11, msg=lambda m: f"d{what}: {m}")


@pytest.mark.parametrize("backend", ["sdpa", "explicit", "chunked"])
def test_float32_parity_at_large_logits(backend):
    """Logits of size ~100 (std 10 activations): the row maximum must be subtracted, no overflow in float32."""
    q, k, v = _inputs(50, 40, 8, 8, dtype=torch.float32, std=10.0)
    out = softmax_attention(q, k, v, 8 ** -0.5, backend)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), reference(q, k, v, 8 ** -0.5), rtol=1e-4, atol=1e-4)


def test_float64_is_not_rounded_to_float32():
    """The CPU paths used to call .float(), rounding float64 inputs to float32 (errors ~1e-7, not ~1e-16)."""
    q, k, v = _inputs(30, 30, 4, 4, grad=False)
    ref = reference(q, k, v, 1.3)
    for backend in ("sdpa", "explicit", "chunked"):
        err = (softmax_attention(q, k, v, 1.3, backend) - ref).abs().max().item()
        assert err < 1e-13, f"{backend}: float64 error {err:.3g}"
    assert compute_dtype(torch.float64) == torch.float64
    assert compute_dtype(torch.float16) == compute_dtype(torch.bfloat16) == compute_dtype(torch.float32) == torch.float32


# ---------------------------------------------------------------------------------------- mixed precision
@pytest.mark.parametrize("backend", ["sdpa", "explicit", "chunked", "auto"])
@pytest.mark.parametrize("amp", [torch.bfloat16, torch.float16])
def test_autocast_keeps_float32(backend, amp):
    """Under CPU autocast the products still run in float32: the float32 result, bit for bit, and no overflow.

    Unscaled (scale 1) logits of std-30 activations reach ~1e4: beyond fp16's range as products, and
    rounded by ~1% in bf16, which a saturated softmax turns into a different output (an error of ~90 on
    outputs of size ~90 with bf16 products, against 0.008 in float32).
    """
    q, k, v = _inputs(40, 40, 16, 16, dtype=torch.float32, std=30.0)
    with torch.autocast("cpu", dtype=amp):
        out = softmax_attention(q, k, v, 1.0, backend)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert torch.equal(out, softmax_attention(q, k, v, 1.0, backend))
    torch.testing.assert_close(out.double(), reference(q, k, v, 1.0), rtol=0, atol=0.05)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("backend", ["sdpa", "explicit", "chunked"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_computed_in_float32(backend, dtype):
    """Half-precision inputs give a half output whose only error is the final rounding (sums in float32)."""
    q, k, v = _inputs(40, 30, 8, 8, dtype=dtype, std=3.0, grad=False)
    out = softmax_attention(q, k, v, 8 ** -0.5, backend)
    assert out.dtype == dtype
    ref = reference(q, k, v, 8 ** -0.5)  # exact for the rounded inputs
    torch.testing.assert_close(out.double(), ref.to(dtype).double(), rtol=0, atol=2 * torch.finfo(dtype).eps * ref.abs().max().item())


# ---------------------------------------------------------------------------------------- the CPU fused path
@pytest.mark.parametrize("heads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_kernel_runs_not_the_math_fallback(heads, dtype):
    """With only the flash kernel allowed, SDPA raises instead of falling back: expanded keys, padding included."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = _inputs(37, 23, 6, 3, dtype=dtype)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        out = sdpa_attention(q, k, v, 0.5, heads=heads)
        out.sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (q, k, v))


@pytest.mark.parametrize("heads", [1, 4])
def test_fused_path_never_holds_the_logits(heads, largest_tensor):
    n = 2048
    q, k, v = _inputs(n, n, 8, 8, dtype=torch.float32, batch=1)
    with largest_tensor() as rec:
        sdpa_attention(q, k, v, 0.3, heads=heads).sum().backward()
    assert rec.largest < n * n // 16, f"a tensor of {rec.largest} elements for {n} x {n} logits"
    with largest_tensor() as rec:  # the recorder can fail: the explicit form does hold them
        explicit_attention(q, k, v, 0.3)
    assert rec.largest >= n * n


def test_query_heads():
    assert query_heads(1, 6400, 1) == 1
    assert query_heads(1, 6400, 2) == 2
    assert query_heads(8, 6400, 2) == 1  # 8 images already share 2 threads evenly
    assert query_heads(3, 6400, 2) == 2  # 6 (image, head) pairs: 3 a thread, not 2 and 1
    assert query_heads(2, 6400, 16) == 8
    assert query_heads(1, 6400, 16) == 6400 // MIN_QUERIES_PER_HEAD  # at least 768 queries a head
    assert query_heads(1, MIN_QUERIES_PER_HEAD * 2 - 1, 16) == 1
    for bad in ((0, 10, 1), (1, 0, 1), (1, 10, 0)):
        with pytest.raises(ValueError, match="must be positive"):
            query_heads(*bad)


def test_default_heads_split_only_for_backward():
    """With 2 threads and one image, a pass that needs gradients splits the queries, inference does not."""
    n = 2 * MIN_QUERIES_PER_HEAD
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        q, k, v = _inputs(n, n, 4, 4, dtype=torch.float32, batch=1)
        with torch.no_grad():
            inference = sdpa_attention(q, k, v, 0.5)
            one, two = sdpa_attention(q, k, v, 0.5, heads=1), sdpa_attention(q, k, v, 0.5, heads=2)
        training = sdpa_attention(q, k, v, 0.5)
        assert torch.equal(inference, one)
        assert torch.equal(training.detach(), two)
        assert training.requires_grad
    finally:
        torch.set_num_threads(threads)


def test_bad_heads_and_shapes():
    q, k, v = _inputs(10, 8, 4, 4, grad=False)
    for bad in (0, 11, 2.0, True):
        with pytest.raises(ValueError, match="heads must be an int from 1 to the 10 queries"):
            sdpa_attention(q, k, v, 1.0, heads=bad)
    with pytest.raises(ValueError, match="incompatible shapes"):
        softmax_attention(q, k[:, :, :3], v, 1.0, "sdpa")
    with pytest.raises(ValueError, match="incompatible shapes"):
        softmax_attention(q, k, v[:, :5], 1.0, "explicit")
    with pytest.raises(ValueError, match="3-D"):
        softmax_attention(q[0], k[0], v[0], 1.0, "chunked")
    with pytest.raises(ValueError, match="unknown attention backend 'cuda'"):
        softmax_attention(q, k, v, 1.0, "cuda")
    with pytest.raises(ValueError, match="chunk_elements must be a positive int"):
        chunked_softmax_attention(q, k, v, 1.0, chunk_elements=0)


# ---------------------------------------------------------------------------------------- dispatch
def test_auto_on_the_cpu():
    side = int(CPU_EXPLICIT_MAX_LOGITS ** 0.5)
    small = torch.empty(8, side, 4)  # the threshold is per image: the batch does not move it
    assert select_backend(small, small) == "explicit"
    assert select_backend(torch.empty(1, side + 1, 4), torch.empty(1, side + 1, 4)) == "sdpa"
    assert select_backend(torch.empty(1, 6400, 4), torch.empty(1, 6400, 4)) == "sdpa"  # P3 at 640 px
    assert select_backend(torch.empty(1, 6400, 4), torch.empty(1, 6400, 4), "chunked") == "chunked"
    assert set(BACKENDS) == {"auto", "sdpa", "explicit", "chunked"}
    assert DEFAULT_CHUNK_ELEMENTS == 1 << 18


class _Attend(torch.nn.Module):
    def forward(self, q, k, v):
        return softmax_attention(q, k, v, 0.5, "auto")


def test_tracing_takes_the_fused_op_and_round_trips(tmp_path):
    """Under tracing ``auto`` is the fused op even for small maps (where eager CPU takes explicit)."""
    q, k, v = _inputs(12, 9, 4, 3, dtype=torch.float32, batch=1, grad=False, strided=False)
    traced = torch.jit.trace(_Attend(), (q, k, v))
    assert "scaled_dot_product_attention" in str(traced.graph)
    assert "aten::softmax" not in str(traced.graph) and "aten::bmm" not in str(traced.graph)
    traced.save(str(tmp_path / "attend.pt"))
    loaded = torch.jit.load(str(tmp_path / "attend.pt"))
    q2, k2, v2 = _inputs(12, 9, 4, 3, dtype=torch.float32, batch=1, grad=False, seed=3, strided=False)
    torch.testing.assert_close(loaded(q2, k2, v2).double(), reference(q2, k2, v2, 0.5), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("d,c", [(4, 4), (6, 3), (3, 6)])
def test_onnx_export_matches_reference(d, c):
    ort = pytest.importorskip("onnxruntime")
    q, k, v = _inputs(15, 11, d, c, dtype=torch.float32, batch=1, grad=False, strided=False)
    buf = io.BytesIO()
    torch.onnx.export(_Attend(), (q, k, v), buf, opset_version=17, dynamo=False, input_names=["q", "k", "v"])
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"q": q.numpy(), "k": k.numpy(), "v": v.numpy()})
    torch.testing.assert_close(torch.from_numpy(out).double(), reference(q, k, v, 0.5), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("name", ["sdpa, 2 heads", "sdpa, 3 heads (padded)", "explicit", "chunked, 3 queries a chunk"])
def test_deterministic(name):
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        results = []
        for _ in range(2):
            q, k, v = _inputs(40, 33, 6, 6, dtype=torch.float32)
            out = RUN[name](q, k, v, 0.4)
            grads = torch.autograd.grad(out.square().sum(), (q, k, v))
            results.append((out.detach(), *grads))
    finally:
        torch.use_deterministic_algorithms(was)
    assert all(torch.equal(a, b) for a, b in zip(*results))
