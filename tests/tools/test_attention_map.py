"""yolo_nonlocal.tools.attention_map on the synthetic set: the weights are the block's pairwise weights for the
query cell (checked against the paper's formulas computed here from the block's own theta/phi), softmax rows
sum to 1, and the picture shows the scale honestly: relative to uniform attention, with a colour bar that
marks the uniform level, never min-max stretched, large enough to read, named after the model."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yolo_nonlocal.data.synthetic import SyntheticConfig, make_dataset
from yolo_nonlocal.tools.attention_map import (
    MIN_DISPLAY, AttentionMap, attention_map, colour_scale, draw, output_stem, render, save,
)  # fmt: skip

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

    row = re.compile(r"^(  - \[-1, 1, NonLocal, )\[[^\]]*\]", re.M)  # the two block rows, not the comments
    text = row.sub(rf"\g<1>[2, {mode}, {str(sub_sample).lower()}]", NL_YAML)
    text = text.replace("nonlocal_init_attention: uniform", "nonlocal_init_attention: random")  # random maps to draw
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


def test_non_square_image_is_letterboxed(images, tmp_path):
    yolo = _model(tmp_path, "embedded_gaussian")
    img = cv2.imread(str(images / "000000.png"))[:, :96]  # 128 high, 96 wide
    amap = attention_map(yolo, img, (90.0, 120.0), imgsz=128)
    assert amap.input_hw == (128, 96) and amap.grid == (16, 12) and amap.query_cell == (15, 11)
    assert amap.model == "yolov8n-embedded_gaussian", "named after the YAML the model was built from"
    fig = render(img, amap)
    ax = fig.axes[0]
    fig.canvas.draw()
    box = ax.get_window_extent()
    assert box.height == pytest.approx(MIN_DISPLAY, abs=1) and box.width == pytest.approx(MIN_DISPLAY * 96 / 128, abs=1)


def test_save_writes_the_picture_and_the_weights(images, tmp_path):
    yolo = _model(tmp_path, "embedded_gaussian")
    src = images / "000001.png"
    img = cv2.imread(str(src))
    amap = attention_map(yolo, img, (60.0, 90.0), imgsz=128)
    png, npy = save(img, amap, tmp_path / "out", src)
    assert png == tmp_path / "out" / "yolov8n-embedded_gaussian_000001_layer17_x60_y90.png"
    assert npy == png.with_suffix(".npy")
    np.testing.assert_array_equal(np.load(npy), amap.weights)
    assert cv2.imread(str(png)).shape == draw(img, amap).shape


# ------------------------------------------------------------------------------------------ the picture's scale


def _map(weights: np.ndarray, mode: str = "embedded_gaussian", size: int = 128, model: str = "m") -> AttentionMap:
    """A map of a 16 x 16 key grid over a ``size`` px square image (stride 8 at imgsz 128)."""
    return AttentionMap(
        weights=weights.astype(np.float32), layer=17, mode=mode, query=(60.0, 70.0), query_cell=(8, 7),
        grid=(16, 16), ratio=128 / size, input_hw=(128, 128), image_hw=(size, size), model=model,
    )  # fmt: skip


GREY = np.full((128, 128, 3), 128, np.uint8)


def _overlay_strength(amap: AttentionMap) -> tuple[float, float]:
    """How much the overlay changes the picture: mean and max |difference| to the same picture without it."""
    with_overlay = draw(GREY, amap).astype(np.float64)
    without = draw(GREY, amap, alpha=0.0).astype(np.float64)
    diff = np.abs(with_overlay - without)
    return float(diff.mean()), float(diff.max())


def _nearly_uniform() -> np.ndarray:
    """The issue's case: max 0.005 where uniform is 1/256 = 0.0039."""
    w = np.ones((16, 16))
    w[3, 4] = 1.28
    w /= w.sum()
    assert w.max() == pytest.approx(0.005, abs=1e-4)
    return w


def test_a_nearly_uniform_softmax_map_is_drawn_faint():
    """Coloured from 0 to its own maximum, a map 1.3x uniform at most was a full-strength overlay everywhere."""
    faint_mean, faint_max = _overlay_strength(_map(_nearly_uniform()))
    peaked = np.ones((16, 16))
    peaked[3, 4] = 200.0  # one key holds 44% of the attention: 113x uniform
    strong_mean, strong_max = _overlay_strength(_map(peaked / peaked.sum()))
    assert faint_mean < 0.1 and faint_max < 40, "the near-uniform map barely tints the image"
    assert strong_max > 80 and strong_mean > 20 * faint_mean, "a peaked map stands out"


def test_colour_scale_is_relative_to_uniform_and_the_bar_marks_it():
    amap = _map(_nearly_uniform())
    scale = colour_scale(amap)
    assert scale.log2 and scale.uniform == pytest.approx(1 / 256)
    np.testing.assert_allclose(scale.values, np.log2(amap.weights.astype(np.float64) * 256), rtol=1e-6)
    assert scale.limit >= 2 and -scale.limit < 0 < scale.limit, "the range contains the uniform level (0)"
    assert np.abs(scale.values).max() / scale.limit < 0.2, "a 1.28x peak uses under a fifth of the colour range"
    fig = render(GREY, amap)
    bar = fig.axes[1]
    assert bar.get_ylim()[0] < 0 < bar.get_ylim()[1]
    labels = {t.get_text(): t.get_position()[1] for t in bar.get_yticklabels()}
    assert labels["1x uniform"] == 0.0 and "1/N' = 0.00391" in bar.get_title(loc="left")


def test_a_peaked_softmax_map_fills_the_range_and_keeps_the_image_visible():
    """All attention on one key (the others ~1e-39, as a softmax of large logits gives): the range follows the
    peak, not the vanishing minimum, so the peak is full colour and the rest saturates below uniform."""
    w = np.full((16, 16), 1e-39)
    w[3, 4] = 1.0
    amap = _map(w / w.sum())
    scale = colour_scale(amap)
    assert scale.limit == 8.0, "log2 N' = log2 256: the largest ratio a softmax can reach"
    assert scale.values[3, 4] == pytest.approx(8.0) and scale.values[0, 0] == -8.0
    fig_with, fig_without = draw(GREY, amap).astype(float), draw(GREY, amap, alpha=0.0).astype(float)
    diff = np.abs(fig_with - fig_without)
    assert diff.max() > 100, "the peak stands out"
    assert np.median(diff[diff > 0]) < 0.55 * diff.max(), "the ignored keys are tinted at half strength"


def test_dot_product_differences_of_four_percent_are_not_stretched():
    """min-max scaling spread 4% differences over the whole colour range."""
    w = (1.0 + 0.04 * np.linspace(0.0, 1.0, 256)).reshape(16, 16) / 256
    amap = _map(w, "dot_product")
    scale = colour_scale(amap)
    assert not scale.log2 and scale.limit == 1.0
    assert np.abs(scale.values).max() < 0.021, "+-2% of the row mean stays +-2% of the colour range"
    mean, peak = _overlay_strength(amap)
    assert peak < 5 and mean < 1
    signed = np.zeros((16, 16))
    signed[0, 0], signed[0, 1] = 5.0, -3.0  # weights of both signs: the scale grows to hold them
    s2 = colour_scale(_map(signed, "dot_product"))
    assert s2.limit == pytest.approx(np.abs(s2.values).max()) and s2.values[0, 0] > 0 > s2.values[0, 1]


def test_concatenation_zeros_are_the_bottom_of_the_scale():
    w = np.zeros((16, 16))
    w[:8] = 2.0 / 256  # half the keys get twice the mean, the other half nothing (ReLU)
    scale = colour_scale(_map(w, "concatenation"))
    assert scale.log2 and scale.uniform == pytest.approx(1 / 256)
    assert np.isfinite(scale.values).all() and scale.values[0, 0] == pytest.approx(1.0)
    assert scale.values[-1, -1] == -scale.limit
    zero = colour_scale(_map(np.zeros((16, 16)), "concatenation"))
    assert (zero.values == 0).all()


def test_picture_is_readable_at_128_px_with_the_title_clear_of_the_image():
    amap = _map(_nearly_uniform(), size=128)
    out = draw(GREY, amap)
    assert max(out.shape[:2]) >= MIN_DISPLAY, "a 128 px source is drawn large enough to read"
    fig = render(GREY, amap)
    fig.canvas.draw()
    image_box = fig.axes[0].get_window_extent()
    assert image_box.width >= MIN_DISPLAY - 1
    title = next(t for t in fig.texts if "layer 17" in t.get_text())
    assert title.get_window_extent().y0 >= image_box.y1, "the label sits above the image, not on it"
    bar_box = fig.axes[1].get_window_extent()
    assert bar_box.x0 > image_box.x1, "the colour bar sits beside the image"
    big = np.full((900, 1200, 3), 128, np.uint8)
    assert draw(big, _big_map()).shape[1] >= 1200, "a large source keeps its own size"


def _big_map() -> AttentionMap:
    w = _nearly_uniform()
    return AttentionMap(weights=w.astype(np.float32), layer=17, mode="embedded_gaussian", query=(600.0, 400.0),
                        query_cell=(5, 8), grid=(16, 16), ratio=128 / 1200, input_hw=(96, 128), image_hw=(900, 1200))


def test_output_stem_names_the_model():
    a, b = _map(_nearly_uniform(), model="runA-best"), _map(_nearly_uniform(), model="runB-best")
    assert output_stem(a, "x/img.png") == "runA-best_img_layer17_x60_y70"
    assert output_stem(a, "img.png") != output_stem(b, "img.png")
