"""`yolo-nonlocal attention` on the synthetic set: the PNG has the image's size, the saved weights are the
block's pairwise weights for the query cell (checked against the paper's formulas computed here from the
block's own theta/phi), and softmax rows sum to 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yolo_nonlocal.tools.attention_map import attention_map, cli
from yolo_nonlocal.data.synthetic import SyntheticConfig, make_dataset

YOLO_NONLOCAL = str(Path(sys.executable).parent / "yolo-nonlocal")
NL_YAML = (Path(__file__).resolve().parents[2] / "model_yamls" / "yolov8-nl.yaml").read_text()


IMAGES: Path | None = None


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    global IMAGES
    cfg = SyntheticConfig(kind="context", n_train=1, n_val=4, imgsz=128, seed=4, min_size=8, max_size=16)
    IMAGES = make_dataset(tmp_path_factory.mktemp("att") / "ds", cfg, progress=False).parent / "images" / "val"
    return IMAGES


_CACHE: dict = {}


def _model(tmp_path: Path, mode: str, sub_sample: bool = False):
    """Built once per (mode, sub_sample) for the module (construction dominates these tests' time)."""
    if (mode, sub_sample) not in _CACHE:
        _CACHE[mode, sub_sample] = _build(tmp_path, mode, sub_sample)
    return _CACHE[mode, sub_sample]


def _build(tmp_path: Path, mode: str, sub_sample: bool = False):
    """A yolov8n-nl built with ``mode`` blocks, its embeddings scaled up so the weights are far from uniform.

    An untrained YOLO's activations shrink to ~1e-6 by P3 under BatchNorm's initial running statistics, which
    makes every attention map uniform; the BN statistics are therefore calibrated on the synthetic images."""
    from ultralytics import YOLO

    from yolo_nonlocal import NonLocal

    text = NL_YAML.replace("NonLocal, []", f"NonLocal, [2, {mode}, {str(sub_sample).lower()}]")
    assert text.count(f"NonLocal, [2, {mode}") == 2
    path = tmp_path / f"yolov8n-{mode}.yaml"  # the 'n' in the name picks the scale
    path.write_text(text)
    torch.manual_seed(0)
    yolo = YOLO(str(path))
    net = yolo.model
    for m in net.modules():
        if isinstance(m, NonLocal):
            for conv in (m.theta, m.phi, m.concat_project):
                if conv is not None:
                    conv.weight.data *= 2.0
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one pass sets the statistics of the batch
    batch = [cv2.imread(str(p))[:, :, ::-1].copy() for p in sorted(IMAGES.glob("*.png"))]
    x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float() / 255
    net.train()
    with torch.no_grad():
        net(x)
    net.eval()
    return yolo


def _block_input(net, layer: int, img_bgr: np.ndarray) -> torch.Tensor:
    """The input of layer ``layer`` for an image already at the network size (no letterbox needed)."""
    x = torch.from_numpy(img_bgr[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    seen = {}
    h = net.model[layer].register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0]))
    with torch.inference_mode():
        net(x)
    h.remove()
    return seen["x"]


def _reference(block, feat: torch.Tensor, row: int, col: int) -> np.ndarray:
    """The paper's f(x_i, x_j)/C(x) for query cell (row, col), from the block's own embeddings."""
    with torch.inference_mode():
        pool = block.pool if block.sub_sample else (lambda t: t)  # the paper pools phi(x) (and x for gaussian)
        if block.mode == "gaussian":
            q, ks = feat, pool(feat)
        else:
            q, ks = block.theta(feat), pool(block.phi(feat))
        q, k = q.flatten(2)[0], ks.flatten(2)[0]
        i = row * feat.shape[3] + col
        qi = q[:, i]
        if block.mode in ("embedded_gaussian", "gaussian"):
            w = torch.softmax(block.scale * (qi @ k), dim=0)
        elif block.mode == "dot_product":
            w = (qi @ k) / k.shape[1]
        else:  # concatenation: ReLU(w^T [theta_i; phi_j]) / N'
            wt = block.concat_project.weight.flatten()
            c = q.shape[0]
            w = torch.relu(wt[:c] @ qi + wt[c:] @ k) / k.shape[1]
    return w.reshape(ks.shape[2], ks.shape[3]).numpy()


@pytest.mark.parametrize(
    "mode, sub_sample",
    [("embedded_gaussian", False), ("gaussian", True), ("dot_product", False), ("concatenation", True)],
)
def test_weights_match_the_paper_formulas(images, tmp_path, mode, sub_sample):
    yolo = _model(tmp_path, mode, sub_sample)
    img = cv2.imread(str(images / "000000.png"))
    query = (101.0, 37.0)
    amap = attention_map(yolo, img, query, imgsz=128)
    assert amap.layer == 17 and amap.grid == (16, 16), "default: the finest (P3) block"
    assert amap.query_cell == (37 // 8, 101 // 8)
    feat = _block_input(yolo.model, 17, img)
    ref = _reference(yolo.model.model[17], feat, *amap.query_cell)
    assert amap.weights.shape == ((8, 8) if sub_sample else (16, 16))
    np.testing.assert_allclose(amap.weights, ref, rtol=1e-4, atol=1e-7)
    if mode in ("embedded_gaussian", "gaussian"):
        assert amap.weights.sum() == pytest.approx(1.0, abs=1e-5)
    assert amap.weights.std() > 1e-3 * abs(amap.weights).max(), "not a uniform map"
    p5 = attention_map(yolo, img, query, layer=10, imgsz=128)
    assert p5.grid == (4, 4) and p5.query_cell == (37 // 32, 101 // 32)


@pytest.fixture(scope="module")
def checkpoint(images, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ckpt")
    ckpt = tmp / "nl.pt"
    _model(tmp, "embedded_gaussian").save(str(ckpt))
    return ckpt


def test_cli_writes_png_of_image_size_and_weights(images, checkpoint, tmp_path):
    ckpt = checkpoint
    src = images / "000001.png"
    project = tmp_path / "out"
    r = subprocess.run(
        [YOLO_NONLOCAL, "attention", f"model={ckpt}", f"source={src}", "query=60,90", "imgsz=128", f"project={project}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    png = Path(r.stdout.strip().splitlines()[-1])
    assert png == project / "000001_layer17_x60_y90.png" and png.is_file()
    out = cv2.imread(str(png))
    assert out.shape == cv2.imread(str(src)).shape
    assert not np.array_equal(out, cv2.imread(str(src))), "the overlay changed the image"
    weights = np.load(png.with_suffix(".npy"))
    assert weights.shape == (16, 16) and weights.sum() == pytest.approx(1.0, abs=1e-5)
    # the saved checkpoint is half precision: compare with the formula on the reloaded model
    from ultralytics import YOLO

    net = YOLO(str(ckpt)).model.float().eval()
    ref = _reference(net.model[17], _block_input(net, 17, cv2.imread(str(src))), 90 // 8, 60 // 8)
    np.testing.assert_allclose(weights, ref, rtol=1e-4, atol=1e-7)


def test_non_square_image_is_letterboxed(images, tmp_path):
    yolo = _model(tmp_path, "embedded_gaussian")
    img = cv2.imread(str(images / "000000.png"))[:, :96]  # 128 high, 96 wide
    amap = attention_map(yolo, img, (90.0, 120.0), imgsz=128)
    assert amap.input_hw == (128, 96) and amap.grid == (16, 12) and amap.query_cell == (15, 11)
    from yolo_nonlocal.tools.attention_map import draw

    assert draw(img, amap).shape == img.shape


@pytest.mark.parametrize(
    "argv, message",
    [
        (["model=M", "source=S", "query=500,10"], "outside the 128x128 image"),
        (["model=M", "source=S", "query=1;2"], "must be X,Y"),
        (["model=M", "source=S", "query=10,10", "layer=5"], "layer=5 is not a NonLocal layer"),
        (["model=M", "source=/nonexistent.png", "query=1,1"], "not a readable image"),
        (["model=yolov8n.yaml", "source=S", "query=1,1"], "has no NonLocal layer"),
        (["model=missing.pt", "source=S", "query=1,1"], "does not exist"),
        (["source=S", "query=1,1"], "missing model="),
        (["model=M", "source=S", "query=1,1", "colour=red"], "unknown argument 'colour'"),
    ],
)
def test_bad_arguments(images, checkpoint, tmp_path, capsys, argv, message):
    argv = [a.replace("=M", f"={checkpoint}").replace("=S", f"={images / '000000.png'}") for a in argv]
    assert cli([*argv, f"project={tmp_path / 'o'}"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
