"""The NonLocal block against a float64 reference written straight from the paper's formula.

    y_i = 1 / C(x) * sum_j f(x_i, x_j) g(x_j),    z = W_z y + x     (Wang et al., arXiv 1711.07971)

The reference below builds every pairwise term explicitly (the concatenation mode even builds the
[theta_i; phi_j] vectors), loops over nothing clever, and shares no code with the implementation: it
only reads the block's parameters.
"""

from __future__ import annotations

import io
import itertools
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from yolo_nonlocal import MODES, NonLocal, NonLocal1d, NonLocal2d, NonLocal3d
from yolo_nonlocal.nonlocal_block import NonLocalConfigError

SIZES = {1: (2, 6, 13), 2: (2, 6, 5, 7), 3: (2, 6, 3, 5, 7)}  # odd, non-square spatial sizes


# ---------------------------------------------------------------------------------------- reference
def _conv1x1(conv: torch.nn.Module, t: torch.Tensor) -> torch.Tensor:
    """A 1x1(x1) convolution as the per-position linear map it is: (B, C, *S) -> (B, O, *S), float64."""
    w = conv.weight.detach().double().flatten(1)  # (O, C)
    out = torch.einsum("oc,bc...->bo...", w, t)
    if conv.bias is not None:
        out = out + conv.bias.detach().double().view(1, -1, *([1] * (t.dim() - 2)))
    return out


def _maxpool_ceil(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Max over 2-wide windows of the spatial axes (not time for clips), odd sizes keeping their last slice."""
    axes = {1: [2], 2: [2, 3], 3: [3, 4]}[dim]
    for ax in axes:
        if t.shape[ax] % 2:
            pad_shape = list(t.shape)
            pad_shape[ax] = 1
            t = torch.cat([t, torch.full(pad_shape, -math.inf, dtype=t.dtype)], dim=ax)
        new_shape = list(t.shape[:ax]) + [t.shape[ax] // 2, 2] + list(t.shape[ax + 1 :])
        t = t.reshape(new_shape).amax(dim=ax + 1)
    return t


def reference_nonlocal(block: NonLocal, x: torch.Tensor) -> torch.Tensor:
    """z = W_z y + x with y_i = 1/C(x) sum_j f(x_i, x_j) g(x_j), in float64, BN in inference form."""
    x = x.detach().double()
    b, dim = x.shape[0], block.dim
    g = _conv1x1(block.g, x)
    if block.mode == "gaussian":
        th, ph = x, x
    else:
        th, ph = _conv1x1(block.theta, x), _conv1x1(block.phi, x)
    if block.sub_sample:
        g, ph = _maxpool_ceil(g, dim), _maxpool_ceil(ph, dim)
    th, ph, g = th.flatten(2), ph.flatten(2), g.flatten(2)  # (B, d, N), (B, d, N'), (B, C', N')
    n_keys = ph.shape[-1]
    if block.mode in ("embedded_gaussian", "gaussian"):
        logits = block.scale * torch.einsum("bdi,bdj->bij", th, ph)
        # exp(l_ij) / sum_j exp(l_ij); the row maximum cancels out and keeps float64's exp finite
        f = torch.exp(logits - logits.amax(dim=-1, keepdim=True))
        c = f.sum(dim=-1, keepdim=True)
    elif block.mode == "dot_product":
        f = torch.einsum("bdi,bdj->bij", th, ph)
        c = torch.full_like(f[..., :1], n_keys)
    else:  # concatenation: ReLU(w^T [theta_i; phi_j]) built from the concatenated vectors themselves
        n = th.shape[-1]
        cat = torch.cat(
            [th[:, :, :, None].expand(-1, -1, n, n_keys), ph[:, :, None, :].expand(-1, -1, n, n_keys)], dim=1
        )  # (B, 2C', N, N')
        w = block.concat_project.weight.detach().double().flatten()
        f = torch.relu(torch.einsum("k,bkij->bij", w, cat))
        c = torch.full_like(f[..., :1], n_keys)
    y = torch.einsum("bij,bcj->bci", f / c, g).reshape(b, block.inter_channels, *x.shape[2:])
    wy = _conv1x1(block.w_z[0], y)
    bn = block.w_z[1]
    shape = (1, -1) + (1,) * dim
    wy = (wy - bn.running_mean.double().view(shape)) / torch.sqrt(bn.running_var.double().view(shape) + bn.eps)
    wy = wy * bn.weight.detach().double().view(shape) + bn.bias.detach().double().view(shape)
    return wy + x


def _randomise(block: NonLocal, seed: int = 0) -> NonLocal:
    """Non-zero W_z BN and random running statistics, so that the non-local path shows in the output."""
    gen = torch.Generator().manual_seed(seed)
    bn = block.w_z[1]
    with torch.no_grad():
        bn.weight.copy_(torch.rand(bn.weight.shape, generator=gen) + 0.5)
        bn.bias.copy_(torch.randn(bn.bias.shape, generator=gen) * 0.1)
        bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=gen) * 0.1)
        bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=gen) + 0.5)
    return block.eval()


# ---------------------------------------------------------------------------------------- parity
CASES = [
    (mode, sub, dim, backend)
    for mode, sub, dim in itertools.product(MODES, (False, True), (1, 2, 3))
    for backend in (("sdpa", "explicit") if mode in ("embedded_gaussian", "gaussian") else ("auto",))
]


@pytest.mark.parametrize("mode,sub_sample,dim,backend", CASES)
def test_parity_with_formula(mode, sub_sample, dim, backend):
    torch.manual_seed(0)
    block = _randomise(NonLocal(6, reduction=2, mode=mode, sub_sample=sub_sample, dim=dim, backend=backend))
    x = torch.randn(SIZES[dim])
    out = block(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    ref = reference_nonlocal(block, x)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    # the non-local path must matter, or this parity would only check the residual
    assert (ref - x.double()).abs().max() > 1e-2


@pytest.mark.parametrize("mode", MODES)
def test_parity_unscaled_and_custom_bottleneck(mode):
    kwargs = {"scale": 1.0} if mode in ("embedded_gaussian", "gaussian") else {}
    block = _randomise(NonLocal(8, mode=mode, inter_channels=3, **kwargs), seed=1)
    assert block.inter_channels == 3
    x = torch.randn(1, 8, 6, 9) * 0.5
    torch.testing.assert_close(block(x).double(), reference_nonlocal(block, x), rtol=1e-5, atol=1e-5)


def test_default_scale_is_official_inverse_sqrt_d():
    assert NonLocal(64).scale == pytest.approx(1 / math.sqrt(32))
    assert NonLocal(64, mode="gaussian").scale == pytest.approx(1 / math.sqrt(64))
    assert NonLocal(64, reduction=4, scale=1.0).scale == 1.0
    assert NonLocal(64, mode="dot_product").scale is None


def test_aliases_fix_dim():
    assert NonLocal1d(4).dim == 1 and NonLocal2d(4).dim == 2 and NonLocal3d(4, sub_sample=True).dim == 3
    x = torch.randn(1, 4, 2, 5, 5)
    assert NonLocal3d(4, sub_sample=True)(x).shape == x.shape


# ---------------------------------------------------------------------------------------- properties
@pytest.mark.parametrize("mode,sub_sample,dim", list(itertools.product(MODES, (False, True), (1, 2, 3))))
def test_identity_at_init(mode, sub_sample, dim):
    block = NonLocal(6, mode=mode, sub_sample=sub_sample, dim=dim).train()
    x = torch.randn(SIZES[dim]) * 3
    assert torch.equal(block(x), x)
    assert torch.equal(block.eval()(x), x)


@pytest.mark.parametrize("mode", MODES)
def test_permutation_equivariance(mode):
    """Without sub-sampling, permuting positions permutes the output the same way (no position encoding)."""
    block = _randomise(NonLocal(6, mode=mode, dim=1))
    x = torch.randn(2, 6, 17)
    perm = torch.randperm(17, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(block(x[:, :, perm]), block(x)[:, :, perm], rtol=1e-5, atol=1e-5)
    # and in 2-D, as a permutation of flattened pixels
    block2 = _randomise(NonLocal(6, mode=mode, dim=2))
    x2 = torch.randn(1, 6, 4, 5)
    p2 = torch.randperm(20, generator=torch.Generator().manual_seed(4))
    permuted = x2.flatten(2)[:, :, p2].reshape_as(x2)
    torch.testing.assert_close(
        block2(permuted).flatten(2), block2(x2).flatten(2)[:, :, p2], rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("mode,sub_sample", list(itertools.product(MODES, (False, True))))
def test_non_locality(mode, sub_sample):
    """Changing one far position changes the output at the opposite corner (a 1x1 conv stack could not)."""
    torch.manual_seed(0)
    block = _randomise(NonLocal(6, mode=mode, sub_sample=sub_sample))
    x = torch.randn(1, 6, 9, 12)
    deltas = []
    for step in (200.0, -200.0):  # both signs: a ReLU (concatenation) may gate one of them off
        x2 = x.clone()
        x2[:, :, -1, -1] += step
        deltas.append((block(x2) - block(x))[:, :, 0, 0].abs().max())
    assert max(deltas) > 1e-4


@pytest.mark.parametrize("mode", MODES)
def test_gradients_reach_every_parameter(mode):
    block = NonLocal(6, mode=mode, sub_sample=True).train()
    x = torch.randn(2, 6, 7, 6, requires_grad=True)
    block(x).square().sum().backward()
    grads = {n: p.grad for n, p in block.named_parameters()}
    # at init the output BN is zero: only it (and its bias) learn first, exactly as in the paper's init
    assert grads["w_z.1.weight"].abs().sum() > 0
    assert torch.equal(x.grad, 2 * x.detach())  # identity block: dz/dx = 1
    block.zero_grad()
    with torch.no_grad():
        block.w_z[1].weight.fill_(1.0)
    block(x).square().sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


# ---------------------------------------------------------------------------------------- init_gamma, device, dtype
@pytest.mark.parametrize("mode", MODES)
def test_init_gamma_zero_is_the_exact_identity(mode):
    for init_gamma in (0, 0.0):
        block = NonLocal(6, mode=mode, init_gamma=init_gamma).train()
        x = torch.randn(2, 6, 5, 7) * 3
        assert torch.equal(block(x), x) and torch.equal(block.eval()(x), x)
        assert "init_gamma" not in repr(block)  # the default is not spelled out


_EMBEDDINGS = ("g.weight", "g.bias", "theta.weight", "theta.bias", "phi.weight", "phi.bias")


def test_init_gamma_nonzero_gives_the_embeddings_gradient_at_the_first_step():
    """The reason for the option: with gamma 0, theta, phi and g get exactly zero gradient; with 1 they learn."""
    x = torch.randn(2, 8, 6, 5)
    grads = {}
    for init_gamma in (0.0, 1.0):
        torch.manual_seed(0)
        block = NonLocal(8, init_gamma=init_gamma).train()
        assert block.w_z[1].weight.eq(init_gamma).all() and block.w_z[1].bias.eq(0).all()
        before = {n: p.detach().clone() for n, p in block.named_parameters()}
        opt = torch.optim.SGD(block.parameters(), lr=0.1)
        block(x).square().sum().backward()
        grads[init_gamma] = {n: p.grad.abs().sum().item() for n, p in block.named_parameters()}
        opt.step()
        moved = {n for n, p in block.named_parameters() if not torch.equal(p, before[n])}
        if init_gamma:
            assert set(_EMBEDDINGS) <= moved, f"not moved after one step: {set(_EMBEDDINGS) - moved}"
            assert "init_gamma=1" in repr(block)
        else:
            assert not set(_EMBEDDINGS) & moved
    assert all(grads[0.0][n] == 0 for n in _EMBEDDINGS)
    assert all(grads[1.0][n] > 0 for n in _EMBEDDINGS)


def test_init_gamma_survives_reset_parameters():
    block = NonLocal(8, init_gamma=0.5)
    with torch.no_grad():
        block.w_z[1].weight.fill_(3.0)
    block.reset_parameters()
    assert block.w_z[1].weight.eq(0.5).all()


# ---------------------------------------------------------------------------------------- init_attention
def test_uniform_init_attention_starts_every_query_with_a_uniform_map_and_learns_from_it():
    """phi zero: each query weights every key 1/N' at insertion (y_i = mean of g); theta's gradient is 0 at
    the first step (it multiplies phi), phi's is not, so the maps become query-dependent after one step."""
    x = torch.randn(2, 8, 6, 5)
    torch.manual_seed(0)
    rand = NonLocal(8, init_gamma=1.0)
    torch.manual_seed(0)
    block = NonLocal(8, init_gamma=1.0, init_attention="uniform").train()
    assert "init_attention='uniform'" in repr(block) and "init_attention" not in repr(rand)
    assert torch.equal(block.phi.weight, torch.zeros_like(block.phi.weight)) and not block.phi.bias.any()
    for name in ("g.weight", "theta.weight", "w_z.0.weight"):  # the rest is the random init, draw for draw
        assert torch.equal(dict(block.named_parameters())[name], dict(rand.named_parameters())[name])
    for sub in (False, True):
        b = NonLocal(8, sub_sample=sub, init_attention="uniform")
        w = b.pairwise_weights(x)
        n_keys = 30 if not sub else 9
        torch.testing.assert_close(w, torch.full_like(w, 1.0 / n_keys), rtol=0, atol=1e-7)
    # the block's output is then x + W_z(mean_j g(x_j)): the same context at every position
    y = block.g(x).flatten(2).mean(-1)[..., None, None].expand(-1, -1, 6, 5)
    torch.testing.assert_close(block.eval()(x), x + block.w_z(y), rtol=1e-5, atol=1e-5)
    block.train()
    opt = torch.optim.SGD(block.parameters(), lr=0.5)
    (block(x) * torch.randn_like(x)).sum().backward()
    assert block.theta.weight.grad.abs().sum() == 0 and block.phi.weight.grad.abs().sum() > 0
    opt.step()
    with torch.no_grad():
        w = block.pairwise_weights(x)
    assert float(w.std(dim=1).max()) > 1e-6  # the maps now differ between queries
    block.reset_parameters()  # the option survives a reset
    assert not block.phi.weight.any()


@pytest.mark.parametrize("mode", ["gaussian", "dot_product", "concatenation"])
def test_uniform_init_attention_is_refused_where_it_does_not_mean_uniform(mode):
    with pytest.raises(NonLocalConfigError, match="init_attention='uniform'.*embedded_gaussian"):
        NonLocal(8, mode=mode, init_attention="uniform")
    with pytest.raises(NonLocalConfigError, match="init_attention must be one of 'random', 'uniform', got 'zero'"):
        NonLocal(8, init_attention="zero")
    assert NonLocal(8, mode=mode, init_attention="random").init_attention == "random"


def test_device_meta_builds_without_memory():
    import resource

    def peak_kib() -> int:  # the process's peak resident size (KiB on Linux): it only grows
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    NonLocal(8, device="meta")  # the first meta-device build loads torch's meta kernels (~150 MiB, once)
    before = peak_kib()
    meta = NonLocal(4096, mode="concatenation", device="meta")  # 33.6M parameters: 128 MiB if allocated
    assert all(t.is_meta for t in itertools.chain(meta.parameters(), meta.buffers()))
    assert sum(p.numel() for p in meta.parameters()) > 3.3e7
    assert peak_kib() - before < 16 * 1024
    # the measure can see such an allocation (unless an earlier peak already covered it)
    before = peak_kib()
    real = NonLocal(4096, mode="concatenation")
    assert peak_kib() - before > 64 * 1024 or before > 256 * 1024
    del real


def test_dtype_float64():
    block = NonLocal(6, sub_sample=True, init_gamma=1.0, dtype=torch.float64)
    tensors = [t for t in itertools.chain(block.parameters(), block.buffers()) if t.is_floating_point()]
    assert tensors and all(t.dtype == torch.float64 for t in tensors)
    block = _randomise(block)
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    out = block(x)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, reference_nonlocal(block, x), rtol=1e-5, atol=1e-5)


def test_block_pickled_before_init_gamma_still_loads_and_runs(tmp_path):
    """A NonLocal saved by the previous release has no ``init_gamma`` attribute: it loads, prints, runs, resets."""
    block = _randomise(NonLocal(8, sub_sample=True))
    del block.init_gamma  # what the previous release's __init__ left: no such instance attribute
    assert "init_gamma" not in vars(block)
    path = tmp_path / "old_nonlocal.pt"
    torch.save(block, path)
    loaded = torch.load(path, weights_only=False)
    assert "init_gamma" not in vars(loaded)
    assert repr(loaded) == repr(block) and "NonLocal(" in repr(loaded)
    x = torch.randn(2, 8, 7, 6)
    assert torch.equal(loaded(x), block(x))
    torch.testing.assert_close(loaded(x).double(), reference_nonlocal(loaded, x), rtol=1e-5, atol=1e-5)
    loaded.reset_parameters()  # e.g. the "blocks reset" ablation: back to the identity it was built as
    assert torch.equal(loaded.eval()(x), x)


# ---------------------------------------------------------------------------------------- memory
@pytest.mark.parametrize(
    "mode,backend",
    [("dot_product", "auto"), ("concatenation", "auto"), ("embedded_gaussian", "sdpa"), ("gaussian", "sdpa")],
)
def test_never_builds_the_big_pairwise_tensor(mode, backend, largest_tensor):
    """dot_product stays linear in N; concatenation keeps N x N' scalars only; SDPA never holds N x N' logits."""
    c, n = 8, 48 * 48
    block = NonLocal(c, mode=mode, backend=backend)
    with torch.no_grad():
        block.w_z[1].weight.fill_(1.0)
    x = torch.randn(1, c, 48, 48, requires_grad=True)
    with largest_tensor() as rec:
        block(x).sum().backward()
    if mode == "concatenation":
        assert rec.largest <= n * n  # never 2C' x N x N'
    else:
        assert rec.largest < n * n // 8, f"{mode}: a tensor of {rec.largest} elements for N={n}"


def test_explicit_backend_does_build_logits(largest_tensor):
    """The recorder above can fail: the explicit backend does hold N x N' logits."""
    block = NonLocal(8, backend="explicit")
    x = torch.randn(1, 8, 32, 32)
    with largest_tensor() as rec:
        block(x)
    assert rec.largest >= (32 * 32) ** 2


# ---------------------------------------------------------------------------------------- mixed precision
def _explicit_fp16_logits(block: NonLocal, x: torch.Tensor) -> torch.Tensor:
    """The popular copies' form: theta^T phi in half precision, unscaled."""
    th = block.theta(x).flatten(2).transpose(1, 2).half()
    ph = block.phi(x).flatten(2).half()
    return torch.bmm(th, ph)


AUTOCAST_CASES = [
    # softmax modes at activation std 30, where unscaled fp16 logits overflow (see the test below)
    *[(m, dt, 30.0) for m in ("embedded_gaussian", "gaussian") for dt in (torch.bfloat16, torch.float16)],
    # dot_product/concatenation outputs grow like |x|^3: at std 30 their true values exceed fp16's range
    # (about 1e7 > 65504), which no implementation can represent; bf16 holds them, fp16 is checked at std 3
    *[(m, torch.bfloat16, 30.0) for m in ("dot_product", "concatenation")],
    *[(m, torch.float16, 3.0) for m in ("dot_product", "concatenation")],
]


@pytest.mark.parametrize("mode,dtype,std", AUTOCAST_CASES)
def test_autocast_stays_finite_and_correct(mode, dtype, std):
    torch.manual_seed(0)
    block = _randomise(NonLocal(64, mode=mode))
    x = torch.randn(1, 64, 20, 20) * std
    with torch.autocast("cpu", dtype=dtype):
        out = block(x)
    assert torch.isfinite(out).all()
    ref = reference_nonlocal(block, x)
    rel = (out.double() - ref).norm() / (ref - x.double()).norm()  # error relative to the non-local term
    # bf16 keeps 8 mantissa bits: logits of size ~1e3 move by ~1%, which a saturated softmax shows
    assert rel < (0.15 if dtype == torch.bfloat16 else 0.05), f"relative error {rel:.3g} of the non-local term under {dtype}"


def test_explicit_fp16_form_overflows_where_block_does_not():
    """The failure this design avoids: unscaled fp16 logits at activation std 30 are inf."""
    torch.manual_seed(0)
    block = _randomise(NonLocal(64, scale=1.0))
    x = torch.randn(1, 64, 20, 20) * 30.0
    logits = _explicit_fp16_logits(block, x)
    assert not torch.isfinite(logits).all() or not torch.isfinite(logits.float().softmax(-1)).all()
    with torch.autocast("cpu", dtype=torch.float16):
        assert torch.isfinite(block(x)).all()


# ---------------------------------------------------------------------------------------- determinism, export
def test_deterministic_algorithms():
    block = NonLocal(8, sub_sample=True).train()
    with torch.no_grad():
        block.w_z[1].weight.fill_(1.0)
    x = torch.randn(2, 8, 9, 9, requires_grad=True)
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        results = []
        for _ in range(2):
            x.grad = None
            out = block(x)
            out.sum().backward()
            results.append((out.detach().clone(), x.grad.clone()))
    finally:
        torch.use_deterministic_algorithms(was)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


@pytest.mark.parametrize("mode,sub_sample", [("embedded_gaussian", True), ("gaussian", False),
                                             ("dot_product", True), ("concatenation", False)])
@pytest.mark.parametrize("opset", [14, 17])
def test_onnx_export_matches_torch(mode, sub_sample, opset):
    ort = pytest.importorskip("onnxruntime")
    block = _randomise(NonLocal(8, mode=mode, sub_sample=sub_sample))
    x = torch.randn(1, 8, 9, 11)
    buf = io.BytesIO()
    torch.onnx.export(block, (x,), buf, opset_version=opset, dynamo=False, input_names=["x"], output_names=["z"])
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"x": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), block(x).detach(), rtol=1e-4, atol=1e-4)


def test_onnx_export_below_opset_14_is_refused_clearly():
    block = NonLocal(8).eval()
    with pytest.raises(ValueError, match="opset 14 on; opset 13 was asked"):
        torch.onnx.export(block, (torch.randn(1, 8, 6, 6),), io.BytesIO(), opset_version=13, dynamo=False)


def test_torchscript_trace_round_trip(tmp_path):
    block = _randomise(NonLocal(8, sub_sample=True))
    x = torch.randn(1, 8, 10, 7)
    traced = torch.jit.trace(block, (x,))
    path = tmp_path / "nl.torchscript"
    traced.save(str(path))
    loaded = torch.jit.load(str(path))
    x2 = torch.randn(1, 8, 10, 7)
    torch.testing.assert_close(loaded(x2), block(x2), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------- visualisation, flops
@pytest.mark.parametrize("mode", MODES)
def test_pairwise_weights_match_reference(mode):
    block = _randomise(NonLocal(6, mode=mode, sub_sample=True))
    x = torch.randn(1, 6, 5, 6)
    w = block.pairwise_weights(x)
    assert w.shape == (1, 30, 9)
    if mode in ("embedded_gaussian", "gaussian"):
        torch.testing.assert_close(w.sum(-1), torch.ones(1, 30))
    # y = W g reproduces the block's output: the weights are the ones the block uses
    g = F.max_pool2d(block.g(x), 2, ceil_mode=True).flatten(2).transpose(1, 2)
    y = (w @ g).transpose(1, 2).reshape(1, 3, 5, 6)
    torch.testing.assert_close(block.w_z(y) + x, block(x), rtol=1e-5, atol=1e-5)


def test_attention_macs():
    assert NonLocal(64).attention_macs((80, 80)) == 6400 * 6400 * (32 + 32)
    assert NonLocal(64, sub_sample=True).attention_macs((5, 7)) == 35 * 12 * 64
    assert NonLocal(64, mode="gaussian").attention_macs((4, 4)) == 16 * 16 * (64 + 32)
    assert NonLocal(64, mode="dot_product").attention_macs((4, 4)) == 32 * 32 * 32
    assert NonLocal(8, mode="concatenation", dim=1).attention_macs((10,)) == 20 * 4 + 100 * 4
    assert NonLocal(8, sub_sample=True, dim=3).attention_macs((2, 3, 3)) == 18 * 8 * 8
    # YOLOv8s P3 at 640: one block (128 channels, 80x80) costs about 10.5 GFLOPs, as the issue measured
    assert 2 * NonLocal(128).attention_macs((80, 80)) / 1e9 == pytest.approx(10.5, rel=0.01)


# ---------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"c1": 0}, "c1 .* positive int"),
        ({"c1": 8, "mode": "softmax"}, "unknown mode 'softmax'; expected one of embedded_gaussian"),
        ({"c1": 3, "reduction": 4}, "reduction=4 leaves 0 bottleneck channels for c1=3; use a reduction of at most 3"),
        ({"c1": 8, "dim": 4}, "dim must be 1, 2 or 3"),
        ({"c1": 8, "mode": "dot_product", "scale": 2.0}, "scale applies to the softmax modes"),
        ({"c1": 8, "sub_sample": "yes"}, "sub_sample must be True or False"),
        ({"c1": 8, "backend": "cuda"}, "unknown backend"),
        ({"c1": 8, "inter_channels": 0}, "inter_channels must be a positive int, got 0"),
        ({"c1": 8, "reduction": True}, "reduction must be a positive int, got True"),
        ({"c1": 8, "init_gamma": float("nan")}, r"init_gamma must be a finite number \(0 is the identity, 1 lets"),
        ({"c1": 8, "init_gamma": float("inf")}, "init_gamma must be a finite number"),
        ({"c1": 8, "init_gamma": "1"}, "init_gamma must be a finite number .* got '1'"),
        ({"c1": 8, "init_gamma": True}, "init_gamma must be a finite number .* got True"),
    ],
)
def test_bad_arguments(kwargs, message):
    """Bad arguments raise NonLocalConfigError (a ValueError) whose message starts with the class name."""
    with pytest.raises(NonLocalConfigError, match="^NonLocal: " + message):
        NonLocal(**kwargs)
    assert issubclass(NonLocalConfigError, ValueError)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"NonLocal\(dim=2\) expects a 4-D input \(B, C, H, W\), got shape \(1, 8, 5\)"):
        NonLocal(8)(torch.randn(1, 8, 5))
    with pytest.raises(ValueError, match=r"NonLocal\(c1=8\) got an input with 16 channels"):
        NonLocal(8)(torch.randn(1, 16, 5, 5))


def test_import_is_light():
    """`import yolo_nonlocal` imports neither torch nor ultralytics; NonLocal is resolved on first use."""
    code = (
        "import sys, yolo_nonlocal; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert not any(m.startswith('ultralytics') for m in sys.modules), 'ultralytics imported'; "
        "yolo_nonlocal.NonLocal; assert 'torch' in sys.modules; "
        "assert not any(m.startswith('ultralytics') for m in sys.modules), 'ultralytics imported by NonLocal'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("mode,sub_sample", [("embedded_gaussian", False), ("gaussian", True)])
def test_fused_kernel_runs_not_the_math_fallback(mode, sub_sample):
    """With only the flash kernel allowed, SDPA raises instead of silently falling back to the math kernel."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    block = _randomise(NonLocal(8, mode=mode, sub_sample=sub_sample, backend="sdpa")).train()
    x = torch.randn(2, 8, 9, 7, requires_grad=True)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        block(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_chunked_attention_matches_explicit_with_gradients():
    """The CPU's large-map path: same values and gradients as the explicit form, chunk boundaries included."""
    from yolo_nonlocal.ops.chunked_attention import chunked_softmax_attention

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, n, c, generator=gen, dtype=torch.float64, requires_grad=True)
               for n, c in ((37, 5), (23, 5), (23, 3)))
    out = chunked_softmax_attention(q, k, v, 0.7, chunk_elements=100)  # 4 queries a chunk: 10 chunks
    ref = (torch.bmm(q, k.transpose(1, 2)) * 0.7).softmax(-1) @ v
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g.double(), r, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode,sub_sample", [("embedded_gaussian", True), ("gaussian", False)])
def test_chunked_backend_parity_and_memory(mode, sub_sample, largest_tensor):
    block = _randomise(NonLocal(6, mode=mode, sub_sample=sub_sample, backend="chunked"))
    x = torch.randn(*SIZES[2])
    torch.testing.assert_close(block(x).double(), reference_nonlocal(block, x), rtol=1e-5, atol=1e-5)
    # memory: no tensor larger than one chunk of logits, forward and backward (64 queries a chunk here)
    from yolo_nonlocal.ops.chunked_attention import chunked_softmax_attention

    t = torch.randn(1, 2304, 8, requires_grad=True)
    with largest_tensor() as rec:
        chunked_softmax_attention(t, t, t, 0.3, chunk_elements=2304 * 64).sum().backward()
    assert rec.largest <= 2304 * 64


def test_auto_backend_follows_the_kernels_policy():
    """The block has no backend policy of its own: ``auto`` is what ops.select_backend picks (tested in tests/ops)."""
    from yolo_nonlocal.ops.softmax_attention import select_backend

    block = NonLocal(8)
    for n in (100, 25600):
        q = torch.empty(1, n, 4)
        assert block._softmax_backend(q, q) == select_backend(q, q, "auto")
    assert NonLocal(8, backend="explicit")._softmax_backend(q, q) == "explicit"
