"""GCNet's global context block against a float64 reference written straight from the paper's formula.

    p_j = softmax_j(W_k x_j),  c = sum_j p_j x_j,  t = W_v2 ReLU(LN(W_v1 c)),  z_i = x_i + t   (arXiv 1904.11492)

with multiplicative fusion z_i = x_i * 2 sigmoid(t'). The reference spells out every step (the softmax by
exp / sum, LayerNorm by its mean and variance, the convolutions as matrix products) and shares no code with
the implementation: it only reads the block's parameters.
"""

from __future__ import annotations

import io
import itertools
import math

import pytest
import torch

from yolo_nonlocal.context_block import FUSIONS, POOLINGS, ContextBlock
from yolo_nonlocal.nonlocal_block import NonLocalConfigError

CASES = list(itertools.product(FUSIONS, POOLINGS))


# ---------------------------------------------------------------------------------------- reference
def _transform_ref(seq: torch.nn.Sequential, c: torch.Tensor) -> torch.Tensor:
    """W_v2 ReLU(LN(W_v1 c)) for c of shape (B, C), in float64."""
    conv1, ln, _, conv2 = seq
    h = c @ conv1.weight.detach().double().flatten(1).T + conv1.bias.detach().double()
    mean = h.mean(dim=1, keepdim=True)
    var = ((h - mean) ** 2).mean(dim=1, keepdim=True)  # LayerNorm: biased variance over the hidden channels
    h = (h - mean) / torch.sqrt(var + ln.eps)
    h = h * ln.weight.detach().double().flatten() + ln.bias.detach().double().flatten()
    h = torch.where(h > 0, h, torch.zeros_like(h))
    return h @ conv2.weight.detach().double().flatten(1).T + conv2.bias.detach().double()


def reference_context_block(block: ContextBlock, x: torch.Tensor) -> torch.Tensor:
    x = x.detach().double()
    b, c, h, w = x.shape
    xs = x.reshape(b, c, h * w)
    if block.pooling == "att":
        logits = torch.einsum("c,bcn->bn", block.mask.weight.detach().double().flatten(), xs)
        e = torch.exp(logits - logits.amax(dim=1, keepdim=True))  # the maximum cancels; keeps exp finite
        p = e / e.sum(dim=1, keepdim=True)
    else:
        p = torch.full((b, h * w), 1.0 / (h * w), dtype=torch.float64)
    context = torch.einsum("bn,bcn->bc", p, xs)
    out = x
    if block.fusion in ("mul", "add_mul"):
        t = _transform_ref(block.transform_mul, context)
        out = out * (2.0 / (1.0 + torch.exp(-t)))[:, :, None, None]
    if block.fusion in ("add", "add_mul"):
        out = out + _transform_ref(block.transform_add, context)[:, :, None, None]
    return out


def _randomise(block: ContextBlock, seed: int = 0) -> ContextBlock:
    """Random last layers, LayerNorm affine and first biases, so every term of the formula shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in (block.transform_mul, block.transform_add):
            if t is None:
                continue
            for p in (t[0].bias, t[1].weight, t[1].bias, t[3].weight, t[3].bias):
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5 + (1.0 if p is t[1].weight else 0.0))
    return block.eval()


# ---------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("fusion,pooling", CASES)
def test_parity_with_formula_float64(fusion, pooling):
    torch.manual_seed(0)
    block = _randomise(ContextBlock(32, 4, fusion, pooling, dtype=torch.float64))
    x = torch.randn(2, 32, 5, 7, dtype=torch.float64)
    out = block(x)
    assert out.dtype == torch.float64 and out.shape == x.shape
    ref = reference_context_block(block, x)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    # the context path must matter, or this parity would only check the residual
    assert (ref - x).abs().max() > 1e-2


@pytest.mark.parametrize("fusion,pooling", CASES)
def test_parity_float32(fusion, pooling):
    torch.manual_seed(1)
    block = _randomise(ContextBlock(16, 4, fusion, pooling), seed=1)
    x = torch.randn(3, 16, 9, 4)
    torch.testing.assert_close(block(x).double(), reference_context_block(block, x), rtol=1e-5, atol=1e-5)


def test_add_fusion_adds_the_same_vector_at_every_position():
    """Query independence, the point of the block: z - x is one vector per image, broadcast over positions."""
    block = _randomise(ContextBlock(16, 4))
    x = torch.randn(2, 16, 6, 5)
    delta = block(x) - x
    torch.testing.assert_close(delta, delta[:, :, :1, :1].expand_as(delta))
    assert delta.abs().max() > 1e-2


def test_attention_pooling_is_content_dependent_and_global():
    """The pooling weights follow the content; one far pixel changes the output at the opposite corner."""
    block = _randomise(ContextBlock(16, 4))
    x = torch.randn(1, 16, 9, 12)
    p = block.attention_weights(x)
    assert p.shape == (1, 108)
    torch.testing.assert_close(p.sum(-1), torch.ones(1, dtype=p.dtype))
    assert p.max() > 3 * p.min()  # not the uniform average
    x2 = x.clone()
    x2[:, :, -1, -1] += 50.0
    assert (block(x2) - block(x))[:, :, 0, 0].abs().max() > 1e-3
    avg = _randomise(ContextBlock(16, 4, pooling="avg"))
    torch.testing.assert_close(avg.attention_weights(x), torch.full((1, 108), 1 / 108))


# ---------------------------------------------------------------------------------------- init, gradients
@pytest.mark.parametrize("fusion,pooling", CASES)
def test_identity_at_init(fusion, pooling):
    block = ContextBlock(32, 8, fusion, pooling).train()
    x = torch.randn(2, 32, 7, 5) * 3
    assert torch.equal(block(x), x)
    assert torch.equal(block.eval()(x), x)


def test_zero_init_starves_the_pooling_and_init_gamma_feeds_it():
    """init_gamma=0: only the last layer learns at the first step (as NonLocal's gamma); non-zero: all layers."""
    x = torch.randn(2, 16, 6, 6)
    zero = ContextBlock(16, 4, "add_mul").train()
    zero(x).square().sum().backward()
    for name, p in zero.named_parameters():
        is_last = name.endswith(("3.weight", "3.bias"))
        assert (p.grad.abs().sum() > 0) == is_last, f"{name}: gradient {p.grad.abs().sum():.3g}"
    live = ContextBlock(16, 4, "add_mul", init_gamma=1.0).train()
    assert not torch.equal(live(x), x)
    live(x).square().sum().backward()
    for name, p in live.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_channels_last_layout_is_kept():
    """A stock checkpoint predicts bit-identically with a fresh block only if the layout (and so rounding) is x's."""
    x = torch.randn(2, 16, 6, 5).contiguous(memory_format=torch.channels_last)
    fresh = ContextBlock(16, 4, "add_mul").eval()
    assert torch.equal(fresh(x), x) and fresh(x).stride() == x.stride()
    assert _randomise(ContextBlock(16, 4, "add_mul"))(x).is_contiguous(memory_format=torch.channels_last)


def test_init_gamma_sets_the_spread_of_the_context_term():
    """Documented: with init_gamma=g the added term has a spread of about g / sqrt(2) per channel."""
    torch.manual_seed(0)
    x = torch.randn(4, 512, 8, 8)
    for g in (0.5, 2.0):
        block = ContextBlock(512, 16, init_gamma=g).eval()
        spread = (block(x) - x)[:, :, 0, 0].std().item()
        assert 0.6 * g / math.sqrt(2) < spread < 1.5 * g / math.sqrt(2), (g, spread)
    assert torch.equal(ContextBlock(512, 16, init_gamma=0.0)(x), x)


# ---------------------------------------------------------------------------------------- precision, export
@pytest.mark.parametrize("dtype,bound", [(torch.bfloat16, 0.1), (torch.float16, 0.02)])
@pytest.mark.parametrize("std", [1.0, 30.0])
def test_autocast_stays_finite_and_correct(dtype, bound, std):
    torch.manual_seed(0)
    block = _randomise(ContextBlock(64, 8, "add_mul"))
    x = torch.randn(1, 64, 40, 40) * std
    with torch.autocast("cpu", dtype=dtype):
        out = block(x)
    assert torch.isfinite(out).all()
    ref = reference_context_block(block, x)
    rel = (out.double() - ref).norm() / (ref - x.double()).norm()  # error relative to the context term
    assert rel < bound, f"relative error {rel:.3g} of the context term under {dtype}"


@pytest.mark.parametrize("fusion,pooling", [("add", "att"), ("add_mul", "att"), ("mul", "avg")])
@pytest.mark.parametrize("opset", [14, 17])
def test_onnx_export_matches_torch(fusion, pooling, opset):
    ort = pytest.importorskip("onnxruntime")
    block = _randomise(ContextBlock(16, 4, fusion, pooling))
    x = torch.randn(1, 16, 9, 11)
    buf = io.BytesIO()
    torch.onnx.export(block, (x,), buf, opset_version=opset, dynamo=False, input_names=["x"], output_names=["z"])
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"x": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), block(x).detach(), rtol=1e-4, atol=1e-4)


def test_torchscript_trace_round_trip(tmp_path):
    block = _randomise(ContextBlock(16, 4, "add_mul"))
    traced = torch.jit.trace(block, (torch.randn(1, 16, 6, 7),))
    path = tmp_path / "gc.torchscript"
    traced.save(str(path))
    loaded = torch.jit.load(str(path))
    x = torch.randn(2, 16, 6, 7)
    torch.testing.assert_close(loaded(x), block(x), rtol=1e-5, atol=1e-5)


def test_save_load_round_trip(tmp_path):
    block = _randomise(ContextBlock(16, 4, "add_mul"))
    path = tmp_path / "gc.pt"
    torch.save(block, path)
    loaded = torch.load(path, weights_only=False)
    x = torch.randn(2, 16, 5, 5)
    assert torch.equal(loaded(x), block(x)) and repr(loaded) == repr(block)


# ---------------------------------------------------------------------------------------- construction, flops
def test_device_and_dtype():
    meta = ContextBlock(4096, 16, "add_mul", device="meta")
    assert all(p.is_meta for p in meta.parameters())
    double = ContextBlock(32, 4, dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in double.parameters())
    assert double(torch.randn(1, 32, 3, 3, dtype=torch.float64)).dtype == torch.float64


def test_constructible_as_a_yaml_row():
    """Ultralytics builds a row as Cls(c1, *args): [reduction, fusion, pooling, init_gamma]."""
    block = ContextBlock(64, 8, "add_mul", "avg", 1.0)
    assert (block.hidden, block.fusion, block.pooling, block.init_gamma) == (8, "add_mul", "avg", 1.0)
    assert "init_gamma=1" in repr(block) and "hidden=8" in repr(block)


def test_attention_macs():
    assert ContextBlock(64).attention_macs((80, 80)) == 6400 * 64
    assert ContextBlock(64, pooling="avg").attention_macs((80, 80)) == 0
    with pytest.raises(ValueError, match="expects 2 spatial sizes"):
        ContextBlock(64).attention_macs((80,))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"c1": 0}, r"ContextBlock: c1 \(input channels\) must be a positive int, got 0"),
        ({"c1": 64, "reduction": 0}, "ContextBlock: reduction must be a positive int"),
        ({"c1": 16, "reduction": 16}, "leaves 1 bottleneck channel.*LayerNorm needs at least 2.*at most 8"),
        ({"c1": 64, "fusion": "channel_add"}, "unknown fusion 'channel_add'; expected one of add, mul, add_mul"),
        ({"c1": 64, "pooling": "max"}, "unknown pooling 'max'; expected att"),
        ({"c1": 64, "init_gamma": float("inf")}, "init_gamma must be a finite number"),
        ({"c1": 64, "init_gamma": "1"}, "init_gamma must be a finite number"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(NonLocalConfigError, match=message):
        ContextBlock(**kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"ContextBlock expects a 4-D input \(B, C, H, W\), got shape \(1, 16, 5\)"):
        ContextBlock(16, 4)(torch.randn(1, 16, 5))
    with pytest.raises(ValueError, match=r"ContextBlock\(c1=16\) got an input with 8 channels"):
        ContextBlock(16, 4)(torch.randn(1, 8, 5, 5))
