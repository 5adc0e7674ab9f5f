"""yolo_nonlocal.tools.block_usage: the residual of each trained block, checked against the paper's formula, and the
ablation that resets the blocks to the identity, checked against a network with the blocks taken out."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yolo_nonlocal.tools.block_usage import block_usage, cli, disable_nonlocal_, shortcut_residuals
from yolo_nonlocal.data.synthetic import SyntheticConfig, make_dataset

YOLO_NONLOCAL = str(Path(sys.executable).parent / "yolo-nonlocal")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    cfg = SyntheticConfig(kind="context", n_train=1, n_val=3, imgsz=128, seed=7, min_size=8, max_size=16)
    return make_dataset(tmp_path_factory.mktemp("usage") / "ds", cfg, progress=False).parent / "images" / "val"


def _batch(images: Path) -> torch.Tensor:
    arr = [cv2.imread(str(p))[:, :, ::-1].copy() for p in sorted(images.glob("*.png"))]
    return torch.from_numpy(np.stack(arr)).permute(0, 3, 1, 2).float() / 255


@pytest.fixture(scope="module")
def trained_like(images):
    """A yolov8n-nl whose blocks are far from the identity, as training would leave them.

    BatchNorm statistics are set from the images (an untrained YOLO's activations otherwise shrink towards 0),
    then W_z's BatchNorm gets random weights and biases."""
    from ultralytics import YOLO

    from yolo_nonlocal import NonLocal

    torch.manual_seed(0)
    yolo = YOLO("yolov8n-nl.yaml")
    net = yolo.model
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    with torch.no_grad():
        net(_batch(images))
    net.eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, NonLocal):
                m.w_z[1].weight.normal_(0.0, 0.5)
                m.w_z[1].bias.normal_(0.0, 0.1)
    return yolo


def _paper_residual(block, x: torch.Tensor) -> float:
    """||W_z y|| / ||x|| with y_i = sum_j softmax_j(s theta(x_i)^T phi(x_j)) g(x_j) written out (embedded Gaussian)."""
    with torch.no_grad():
        b, c, h, w = x.shape
        q, k, v = (conv(x).flatten(2)[0] for conv in (block.theta, block.phi, block.g))  # (C', N)
        attn = torch.softmax(block.scale * (q.T @ k), dim=1)  # (N, N'): row i sums to 1
        y = (v @ attn.T).reshape(1, -1, h, w)
        return float(block.w_z(y).norm() / x.norm())


def test_fresh_blocks_are_the_identity(images):
    usage = block_usage("yolov8n-nl.yaml", images, imgsz=128)
    assert [u.layer for u in usage] == [10, 17]
    assert [u.channels for u in usage] == [256, 64]
    assert all(u.gamma == 0.0 and u.residual == 0.0 and u.residual_max == 0.0 and u.images == 3 for u in usage)


def test_residual_matches_the_formula_per_image(images, trained_like):
    net = trained_like.model
    usage = {u.layer: u for u in block_usage(trained_like, images, imgsz=128)}
    # the images are already 128 x 128 (no letterbox): the block inputs of the plain forward pass
    per_layer: dict[int, list[float]] = {10: [], 17: []}
    for p in sorted(images.glob("*.png")):
        seen = {}
        hooks = [net.model[i].register_forward_pre_hook(lambda m, a, i=i: seen.__setitem__(i, a[0])) for i in per_layer]
        with torch.no_grad():
            net(_batch(images)[[sorted(images.glob("*.png")).index(p)]])
        for h in hooks:
            h.remove()
        for i in per_layer:
            per_layer[i].append(_paper_residual(net.model[i], seen[i]))
    for i, ratios in per_layer.items():
        assert usage[i].residual == pytest.approx(float(np.mean(ratios)), rel=1e-4)
        assert usage[i].residual_max == pytest.approx(max(ratios), rel=1e-4)
        assert usage[i].residual > 0.01  # the random W_z makes a visible change
        assert usage[i].gamma == pytest.approx(float(net.model[i].w_z[1].weight.detach().abs().mean()))


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


def test_cli_prints_the_table_from_a_checkpoint(images, trained_like, tmp_path):
    ckpt = tmp_path / "nl.pt"
    trained_like.save(str(ckpt))
    r = subprocess.run(
        [YOLO_NONLOCAL, "usage", f"model={ckpt}", f"source={images}", "imgsz=128", "max_images=2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in r.stdout.splitlines() if line.startswith("| 1")]
    assert [int(c[0]) for c in rows] == [10, 17]
    # the checkpoint is saved in half precision: compare with the reloaded model measured in this process
    expected = block_usage(str(ckpt), images, imgsz=128, max_images=2)
    for cells, u in zip(rows, expected):
        assert cells[1].strip() == "embedded_gaussian" and int(cells[6]) == 2
        assert float(cells[4].strip().rstrip("%")) == pytest.approx(100 * u.residual, abs=0.006)
    assert "For scale, the model's own 6 shortcut bottlenecks: residual median" in r.stdout


@pytest.mark.parametrize(
    "argv, message",
    [
        (["source=."], "missing model="),
        (["model=missing.pt", "source=."], "does not exist"),
        (["model=yolov8n-nl.yaml", "source=/no/such/dir"], "neither an image nor a folder"),
        (["model=yolov8n-nl.yaml", "source=.", "colour=red"], "unknown argument 'colour'"),
        (["model=yolov8n-nl.yaml", "source=.", "imgsz=big"], "imgsz='big' must be an integer"),
        (["model=yolov8n.yaml", "source=IMAGES"], "has no NonLocal layer"),
    ],
)
def test_bad_arguments(images, capsys, argv, message):
    argv = [a.replace("IMAGES", str(images)) for a in argv]
    assert cli(argv) == 2
    assert message in capsys.readouterr().err
