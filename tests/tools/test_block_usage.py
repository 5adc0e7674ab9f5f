"""yolo_nonlocal.tools.block_usage: the residual of each trained block and its split into a constant and a
position-varying part, and the query distance of its attention, checked against hand computations written
here from the paper's formulas; and the three ablations (identity, gamma only, y by its spatial mean)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yolo_nonlocal import NonLocal
from yolo_nonlocal.tools.block_usage import (
    block_usage, disable_nonlocal_, query_distance, replace_y_by_spatial_mean, reset_nonlocal_to_identity_,
    residual_parts, shortcut_residuals, zero_nonlocal_gamma_,
)  # fmt: skip


@pytest.fixture(scope="module")
def images(context_val_images) -> Path:
    return context_val_images


def _batch(images: Path) -> torch.Tensor:
    arr = [cv2.imread(str(p))[:, :, ::-1].copy() for p in sorted(images.glob("*.png"))]
    return torch.from_numpy(np.stack(arr)).permute(0, 3, 1, 2).float() / 255


@pytest.fixture(scope="module")
def trained_like(images, make_trained_like_nl):
    """A yolov8n-nl whose blocks are far from the identity, as training would leave them (tests/conftest.py)."""
    return make_trained_like_nl(images)


def _paper_parts(block, x: torch.Tensor) -> tuple[float, float, float]:
    """(||W_z y||, ||c||, ||W_z y - c||) / ||x||, c the per-channel spatial mean of W_z y broadcast over the
    positions, with y_i = sum_j softmax_j(s theta(x_i)^T phi(x_j)) g(x_j) written out (embedded Gaussian); with
    sub_sample, j runs over the 2x2 max-pooled phi(x) and g(x) (the paper's sub-sampling; ceil mode, odd sizes)."""
    import torch.nn.functional as F

    def pool(t):
        return F.max_pool2d(t, 2, 2, ceil_mode=True) if block.sub_sample else t

    with torch.no_grad():
        b, c, h, w = x.shape
        q = block.theta(x).flatten(2)[0]  # (C', N)
        k, v = (pool(conv(x)).flatten(2)[0] for conv in (block.phi, block.g))  # (C', N')
        attn = torch.softmax(block.scale * (q.T @ k), dim=1)  # (N, N'): row i sums to 1
        y = (v @ attn.T).reshape(1, -1, h, w)
        r = block.w_z(y)[0].flatten(1)  # (C, N)
        mean = r.mean(dim=1, keepdim=True)
        nx = float(x.norm())
        return float(r.norm()) / nx, float(mean.norm()) * math.sqrt(h * w) / nx, float((r - mean).norm()) / nx


def test_fresh_blocks_are_the_identity(images):
    from ultralytics import YOLO

    from yolo_nonlocal.integrations.ultralytics.options import configure

    usage = block_usage(configure(YOLO("yolov8n-nl.yaml"), init_gamma=0.0), images, imgsz=128)
    assert [u.layer for u in usage] == [10, 17]
    assert [u.channels for u in usage] == [256, 64]
    assert all(u.gamma == 0.0 and u.residual == 0.0 and u.residual_max == 0.0 and u.images == 3 for u in usage)
    assert all(u.beta == 0.0 and u.constant == 0.0 and u.varying == 0.0 for u in usage)


def test_residual_matches_the_formula_per_image(images, trained_like):
    net = trained_like.model
    usage = {u.layer: u for u in block_usage(trained_like, images, imgsz=128)}
    # the images are already 128 x 128 (no letterbox): the block inputs of the plain forward pass
    per_layer: dict[int, list[tuple[float, float, float]]] = {10: [], 17: []}
    for p in sorted(images.glob("*.png")):
        seen = {}
        hooks = [net.model[i].register_forward_pre_hook(lambda m, a, i=i: seen.__setitem__(i, a[0])) for i in per_layer]
        with torch.no_grad():
            net(_batch(images)[[sorted(images.glob("*.png")).index(p)]])
        for h in hooks:
            h.remove()
        for i in per_layer:
            per_layer[i].append(_paper_parts(net.model[i], seen[i]))
    for i, parts in per_layer.items():
        ratios = [p[0] for p in parts]
        assert usage[i].residual == pytest.approx(float(np.mean(ratios)), rel=1e-4)
        assert usage[i].residual_max == pytest.approx(max(ratios), rel=1e-4)
        assert usage[i].constant == pytest.approx(float(np.mean([p[1] for p in parts])), rel=1e-4)
        assert usage[i].varying == pytest.approx(float(np.mean([p[2] for p in parts])), rel=1e-4)
        assert usage[i].residual > 0.01  # the random W_z makes a visible change
        assert usage[i].gamma == pytest.approx(float(net.model[i].w_z[1].weight.detach().abs().mean()))
        assert usage[i].beta == pytest.approx(float(net.model[i].w_z[1].bias.detach().abs().mean()))
        assert 0.0 <= usage[i].query_distance <= 2.0


def test_residual_is_linear_in_w_z(images, trained_like):
    """The residual is W_z's output over the block's input: doubling the last block's W_z BatchNorm affine
    doubles its residual and leaves the earlier block (whose output feeds the last one) as it was."""
    twice = copy.deepcopy(trained_like)
    with torch.no_grad():
        twice.model.model[17].w_z[1].weight.mul_(2.0)
        twice.model.model[17].w_z[1].bias.mul_(2.0)
    one = {u.layer: u.residual for u in block_usage(trained_like, images, imgsz=128)}
    two = {u.layer: u.residual for u in block_usage(twice, images, imgsz=128)}
    assert two[10] == pytest.approx(one[10], rel=1e-6)
    assert two[17] == pytest.approx(2.0 * one[17], rel=1e-4)


def test_disable_equals_taking_the_blocks_out(images, trained_like):
    x = _batch(images)
    ablated = copy.deepcopy(trained_like)
    removed = copy.deepcopy(trained_like.model)
    for i, m in enumerate(removed.model):  # replace each block by a plain identity layer, keeping its wiring
        if type(m).__name__ == "NonLocal":
            ident = torch.nn.Identity()
            ident.f, ident.i, ident.type, ident.np = m.f, m.i, "Identity", 0
            removed.model[i] = ident
    with torch.no_grad():
        full = trained_like.model(x)[0]
        without = removed(x)[0]
        assert not torch.allclose(full, without, atol=1e-3), "the random blocks change the output"
        assert disable_nonlocal_(ablated) == 2
        torch.testing.assert_close(ablated.model(x)[0], without, rtol=0, atol=0)
    assert [u.residual for u in block_usage(ablated, images, imgsz=128)] == [0.0, 0.0]
    assert [u.residual for u in block_usage(trained_like, images, imgsz=128)] != [0.0, 0.0], "the original is kept"


def test_shortcut_reference_measures_the_bottlenecks(images, trained_like):
    net = trained_like.model
    ref = shortcut_residuals(trained_like, images, imgsz=128)
    assert sorted(ref) == ["model.2.m.0", "model.4.m.0", "model.4.m.1", "model.6.m.0", "model.6.m.1", "model.8.m.0"]
    block = net.model[4].m[1]  # a shortcut bottleneck: out = x + cv2(cv1(x))
    seen = []
    h = block.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    with torch.no_grad():
        net(_batch(images))
        h.remove()
        x = seen[0]
        per_image = [float(block.cv2(block.cv1(x[k : k + 1])).norm() / x[k : k + 1].norm()) for k in range(len(x))]
    assert ref["model.4.m.1"] == pytest.approx(float(np.mean(per_image)), rel=1e-4)
    # one forward pass gives both measures, the same as the two separate calls
    usage, shortcuts = block_usage(trained_like, images, imgsz=128, shortcuts=True)
    assert shortcuts == pytest.approx(ref, rel=1e-6)
    assert [u.residual for u in usage] == pytest.approx([u.residual for u in block_usage(trained_like, images, imgsz=128)], rel=1e-6)


def test_disable_rejects_what_is_not_a_model():
    with pytest.raises(TypeError, match="nn.Module or an Ultralytics YOLO"):
        disable_nonlocal_("best.pt")


def test_disable_is_reset_to_identity():
    assert disable_nonlocal_ is reset_nonlocal_to_identity_


# ------------------------------------------------------------------------------------------ one block, by hand


def _block(mode: str = "embedded_gaussian", seed: int = 0) -> NonLocal:
    """A NonLocal(8) in eval mode with every parameter and BatchNorm statistic random (a trained-like block)."""
    torch.manual_seed(seed)
    block = NonLocal(8, reduction=2, mode=mode)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0.0, 0.5)
        bn = block.w_z[1]
        bn.running_mean.normal_(0.0, 0.3)
        bn.running_var.uniform_(0.5, 2.0)
    return block.eval()


def _by_hand(block: NonLocal, x: torch.Tensor, y_of=None):
    """The paper's embedded Gaussian block written out: attention rows (N, N), y (C', N), W_z y (C, N).

    ``y_of(y)`` replaces y before W_z (for the spatial-mean ablation)."""
    def conv(layer, t):  # a 1x1 convolution: W t + b over the channels of a (C, N) matrix
        return layer.weight[:, :, 0, 0] @ t + layer.bias[:, None]

    with torch.no_grad():
        t = x[0].flatten(1).double()
        block = copy.deepcopy(block).double()
        q, k, v = conv(block.theta, t), conv(block.phi, t), conv(block.g, t)
        logits = block.scale * (q.T @ k)
        attn = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
        attn = attn / attn.sum(dim=1, keepdim=True)  # row i: the map of query i over the keys
        y = v @ attn.T
        if y_of is not None:
            y = y_of(y)
        bn = block.w_z[1]
        u = conv(block.w_z[0], y)
        wz_y = (u - bn.running_mean[:, None]) / torch.sqrt(bn.running_var[:, None] + bn.eps) * bn.weight[:, None] + bn.bias[:, None]
    return attn, y, wz_y


X = torch.randn(1, 8, 5, 6, generator=torch.Generator().manual_seed(1))


def test_residual_parts_split_w_z_y_into_its_spatial_mean_and_the_rest():
    block = _block()
    _, _, r = _by_hand(block, X)
    nx = float(X.double().norm())
    mean = r.mean(dim=1, keepdim=True)  # per channel, over the 30 positions
    expected = {
        "residual": float(r.norm()) / nx,
        "constant": float(mean.norm()) * math.sqrt(30) / nx,  # the mean broadcast to every position
        "varying": float((r - mean).norm()) / nx,
    }
    got = residual_parts(block, X)
    assert got == pytest.approx(expected, rel=1e-4)
    assert got["residual"] ** 2 == pytest.approx(got["constant"] ** 2 + got["varying"] ** 2, rel=1e-4)
    assert got["varying"] > 0.05 and got["constant"] > 0.05


def test_a_block_that_is_only_beta_is_all_constant():
    """The issue's case: gamma near zero and a learned beta give a large residual that does not vary at all."""
    block = _block()
    with torch.no_grad():
        block.w_z[1].weight.zero_()
    beta = block.w_z[1].bias.detach().double()
    got = residual_parts(block, X)
    expected = float(beta.norm()) * math.sqrt(30) / float(X.double().norm())
    assert got["residual"] == pytest.approx(expected, rel=1e-5)
    assert got["constant"] == pytest.approx(expected, rel=1e-5)
    assert got["varying"] == pytest.approx(0.0, abs=1e-6)


def test_query_distance_is_the_mean_cosine_distance_between_query_maps():
    block = _block()
    attn, _, _ = _by_hand(block, X)
    unit = attn / attn.norm(dim=1, keepdim=True)
    cos = unit @ unit.T
    n = cos.shape[0]
    pairs = [1.0 - float(cos[i, k]) for i in range(n) for k in range(n) if i != k]
    assert query_distance(block, X, queries=None) == pytest.approx(float(np.mean(pairs)), rel=1e-5)
    assert query_distance(block, X, queries=64) == pytest.approx(float(np.mean(pairs)), rel=1e-5), "30 < 64: all"
    # sampled: 5 of the 30 queries, drawn with the seeded generator the function documents
    pick = torch.randperm(30, generator=torch.Generator().manual_seed(3))[:5].tolist()
    sub = [1.0 - float(cos[i, k]) for i in pick for k in pick if i != k]
    assert query_distance(block, X, queries=5, seed=3) == pytest.approx(float(np.mean(sub)), rel=1e-5)
    assert float(np.mean(pairs)) > 1e-3


def test_query_distance_is_zero_for_query_independent_attention():
    """theta = 0: every query's logits are 0, so every map is the same uniform row (GCNet's finding, exact)."""
    block = _block()
    with torch.no_grad():
        block.theta.weight.zero_()
        block.theta.bias.zero_()
    assert query_distance(block, X) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="at least 2"):
        query_distance(block, X, queries=1)


def test_replace_y_by_spatial_mean_removes_only_the_query_dependence():
    block = _block()
    _, _, r_mean = _by_hand(block, X, y_of=lambda y: y.mean(dim=1, keepdim=True).expand_as(y))
    with torch.no_grad():
        before = block(X)
        with replace_y_by_spatial_mean(block) as hooks:
            assert len(hooks) == 1
            ablated = block(X)
        after = block(X)
    expected = X[0].double().flatten(1) + r_mean
    torch.testing.assert_close(ablated[0].double().flatten(1), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(after, before, rtol=0, atol=0)  # the hooks are gone
    assert not torch.allclose(ablated, before, atol=1e-3)
    parts = residual_parts(block, X)
    with replace_y_by_spatial_mean(block):
        flat = residual_parts(block, X)
    assert flat["varying"] == pytest.approx(0.0, abs=1e-5), "the same context everywhere: nothing varies"
    assert flat["residual"] == pytest.approx(flat["constant"], rel=1e-5)
    assert parts["varying"] > 0.05


def test_zero_gamma_keeps_beta_and_reset_removes_both():
    block = _block()
    beta = block.w_z[1].bias.detach().clone()
    gamma_only = copy.deepcopy(block)
    assert zero_nonlocal_gamma_(gamma_only) == 1
    with torch.no_grad():
        torch.testing.assert_close(gamma_only(X), X + beta[None, :, None, None], rtol=0, atol=1e-6)
        identity = copy.deepcopy(block)
        assert reset_nonlocal_to_identity_(identity) == 1
        torch.testing.assert_close(identity(X), X, rtol=0, atol=0)
    assert block.w_z[1].weight.abs().sum() > 0, "the original is kept"
    with pytest.raises(TypeError, match="nn.Module or an Ultralytics YOLO"):
        zero_nonlocal_gamma_("best.pt")


def test_ablations_on_a_model(images, trained_like):
    net = copy.deepcopy(trained_like.model)
    x = _batch(images)[:1]
    with torch.no_grad():
        full = net(x)[0]
        with replace_y_by_spatial_mean(net) as hooks:
            assert len(hooks) == 2
            flat = net(x)[0]
            usage = {u.layer: u for u in block_usage(net, images, imgsz=128)}
        assert torch.equal(net(x)[0], full)
    assert not torch.allclose(flat, full, atol=1e-4)
    assert all(u.varying == pytest.approx(0.0, abs=1e-5) for u in usage.values())
    # Ultralytics' validator fuses the model (Conv + BN) before it predicts: the ablation's hooks survive it
    fused = copy.deepcopy(net)
    with torch.no_grad(), replace_y_by_spatial_mean(fused):
        fused.fuse(verbose=False)
        out = fused(x)[0]
    # fusing Conv + BN rounds differently (a few 1e-3 on box coordinates of ~100): what shows that the hooks
    # survived is that the fused output is the ablated one, far closer to it than to the intact model's
    to_flat, to_full = float((out - flat).abs().max()), float((out - full).abs().max())
    assert to_flat < 2e-2 and to_flat * 10 < to_full, (to_flat, to_full)
    assert zero_nonlocal_gamma_(net) == 2
    usage = block_usage(net, images, imgsz=128)
    assert all(u.varying == pytest.approx(0.0, abs=1e-5) and u.constant > 0 for u in usage)
