"""The local control: a residual bottleneck with the Non-local block's parameter count and no long-range reach.

The parameter counts here are taken from real modules (``sum(p.numel())`` of a ``NonLocal`` built in the test),
not from the formulas the block uses to size itself; the conv cost is counted by forward hooks.
"""

from __future__ import annotations

import io
import itertools

import pytest
import torch
from torch import nn

from yolo_nonlocal.local_block import LocalBlock, local_block_parameters, matched_hidden
from yolo_nonlocal.nonlocal_block import MODES, NonLocal, NonLocalConfigError


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _live(block: LocalBlock, seed: int = 0) -> LocalBlock:
    """Random BN affine and statistics, so the residual branch shows in the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in block.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return block.eval()


# ---------------------------------------------------------------------------------------- matching
@pytest.mark.parametrize("c1", [32, 64, 128, 256, 512])
def test_parameters_match_nonlocal_reduction_2(c1):
    target = _count(NonLocal(c1, reduction=2))
    block = LocalBlock(c1)
    assert abs(_count(block) - target) / target <= 0.01, (c1, block.hidden, _count(block), target)
    assert _count(block) == local_block_parameters(c1, block.hidden)  # the sizing formula is the module's count


def test_yolov8n_p3_match_is_exact():
    assert LocalBlock(64).hidden == (24, 24)
    assert _count(LocalBlock(64)) == _count(NonLocal(64)) == 8480


@pytest.mark.parametrize("c1,reduction,mode", list(itertools.product([64, 192], [1, 2, 4], MODES)))
def test_parameters_match_other_nonlocal_configurations(c1, reduction, mode):
    target = _count(NonLocal(c1, reduction, mode))
    block = LocalBlock(c1, reduction, mode)
    assert abs(_count(block) - target) / target <= 0.01, (block.hidden, _count(block), target)
    m1, m2 = block.hidden
    assert max(m1, m2) <= 2 * min(m1, m2)  # a bottleneck, not a degenerate 1-channel pipe


def _conv_macs(module: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of every Conv2d in ``module`` for input ``x``, counted by forward hooks."""
    total = 0

    def hook(m, inputs, out):
        nonlocal total
        total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in handles:
            h.remove()
    return total


def test_conv_cost_matches_and_attention_cost_is_what_differs():
    """Per position the convolutions cost what NonLocal's 1x1 convolutions cost; only its pairwise term is extra."""
    x = torch.randn(1, 128, 20, 20)
    nl, local = NonLocal(128).eval(), LocalBlock(128).eval()
    nl_conv, local_conv = _conv_macs(nl, x), _conv_macs(local, x)
    assert abs(local_conv - nl_conv) / nl_conv < 0.01, (local_conv, nl_conv)
    assert local.attention_macs((20, 20)) == 0 and nl.attention_macs((20, 20)) > nl_conv


def test_matched_hidden_is_deterministic_and_reported():
    assert matched_hidden(256) == LocalBlock(256).hidden
    assert "hidden=24x24" in repr(LocalBlock(64))


# ---------------------------------------------------------------------------------------- behaviour
@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_identity_at_init_and_shapes(kernel_size):
    block = LocalBlock(32, kernel_size=kernel_size).train()
    x = torch.randn(2, 32, 5, 7) * 3  # odd, non-square
    assert torch.equal(block(x), x)
    assert torch.equal(block.eval()(x), x)
    live = _live(LocalBlock(32, kernel_size=kernel_size, init_gamma=1.0))
    out = live(x)
    assert out.shape == x.shape and out.dtype == x.dtype and (out - x).abs().max() > 1e-2


def test_reach_is_local():
    """A change at one pixel moves the output only inside its k x k neighbourhood (eval: BN is per position)."""
    block = _live(LocalBlock(16, hidden=8, init_gamma=1.0))
    x = torch.randn(1, 16, 9, 12)
    x2 = x.clone()
    x2[:, :, 4, 6] += 50.0
    changed = (block(x2) - block(x)).abs().amax(dim=1)[0] > 0
    expected = torch.zeros(9, 12, dtype=torch.bool)
    expected[3:6, 5:8] = True
    assert torch.equal(changed, expected)


def test_zero_init_starves_inner_layers_and_init_gamma_feeds_them():
    x = torch.randn(2, 16, 6, 6)
    zero = LocalBlock(16).train()
    zero(x).square().sum().backward()
    for name, p in zero.named_parameters():
        assert (p.grad.abs().sum() > 0) == name.startswith("cv3.1."), f"{name}: {p.grad.abs().sum():.3g}"
    live = LocalBlock(16, init_gamma=1.0).train()
    assert live.cv3[1].weight.eq(1.0).all()
    live(x).square().sum().backward()
    for name, p in live.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_channels_last_layout_is_kept():
    block = _live(LocalBlock(16, init_gamma=1.0))
    x = torch.randn(2, 16, 6, 5).contiguous(memory_format=torch.channels_last)
    assert block(x).is_contiguous(memory_format=torch.channels_last)


def test_onnx_export_matches_torch():
    ort = pytest.importorskip("onnxruntime")
    block = _live(LocalBlock(16, init_gamma=1.0))
    x = torch.randn(1, 16, 9, 11)
    buf = io.BytesIO()
    torch.onnx.export(block, (x,), buf, opset_version=17, dynamo=False, input_names=["x"], output_names=["z"])
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"x": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), block(x).detach(), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------- construction
def test_device_dtype_and_yaml_row():
    assert all(p.is_meta for p in LocalBlock(2048, device="meta").parameters())
    double = LocalBlock(32, dtype=torch.float64)
    tensors = [t for t in itertools.chain(double.parameters(), double.buffers()) if t.is_floating_point()]
    assert tensors and all(t.dtype == torch.float64 for t in tensors)
    assert double(torch.randn(1, 32, 4, 4, dtype=torch.float64)).dtype == torch.float64
    # Ultralytics builds a row as Cls(c1, *args): [reduction, mode, hidden, kernel_size, init_gamma]
    row = LocalBlock(64, 4, "gaussian", None, 5, 1.0)
    assert row.kernel_size == 5 and row.init_gamma == 1.0 and row.hidden == matched_hidden(64, 4, "gaussian", 5)
    assert LocalBlock(64, 2, "embedded_gaussian", 10).hidden == (10, 10)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"c1": 0}, r"LocalBlock: c1 \(input channels\) must be a positive int"),
        ({"c1": 8, "kernel_size": 4}, "kernel_size must be odd .* use 3 or 5"),
        ({"c1": 8, "hidden": 0}, "LocalBlock: hidden must be a positive int"),
        ({"c1": 8, "mode": "softmax"}, "unknown mode 'softmax' of the NonLocal block to match"),
        ({"c1": 8, "mode": "softmax", "hidden": 4}, "unknown mode 'softmax'"),  # checked even when not used
        ({"c1": 3, "reduction": 4}, "reduction=4 at c1=3, has 0 bottleneck channels; use a reduction of at most 3"),
        ({"c1": 8, "init_gamma": float("nan")}, "LocalBlock: init_gamma must be a finite number"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(NonLocalConfigError, match=message):
        LocalBlock(**kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"LocalBlock expects a 4-D input \(B, C, H, W\)"):
        LocalBlock(8)(torch.randn(1, 8, 5))
    with pytest.raises(ValueError, match=r"LocalBlock\(c1=8\) got an input with 4 channels"):
        LocalBlock(8)(torch.randn(1, 4, 5, 5))
