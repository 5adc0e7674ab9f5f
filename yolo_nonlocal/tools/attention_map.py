"""Where does a Non-local block look? Draw its pairwise weights for one query pixel over the image.

The idea of the paper's Figure 1: pick a position i (the query), take the normalised pairwise weights
f(x_i, x_j) / C(x) of a Non-local block for every position j, and overlay them on the image. For the
softmax modes (``embedded_gaussian``, ``gaussian``) the weights of a query sum to 1; for ``dot_product``
and ``concatenation`` they are f / N' (the paper's normalisation).

How: the image is letterboxed the way the detector sees it (:mod:`yolo_nonlocal.tools.inference`); a
forward hook records the input of every NonLocal layer; the chosen layer's
:meth:`NonLocal.pairwise_weights` row for the query's cell is reshaped to the key grid (half resolution
with ``sub_sample``) and mapped back onto the source image.

How it is coloured, so that the picture cannot overstate where the block looks (:func:`colour_scale`):

- non-negative weights (softmax modes, ``concatenation``): the ratio of each weight to the uniform level
  (1/N' for a softmax, the row mean for ``concatenation``), on a log2 scale centred on 1x: red above
  uniform, blue below. The scale spans at least 1/4x..4x and follows the map's peak (at most N'x, all
  attention on one key; keys further below uniform saturate), so a nearly uniform map (max 1.3x) is drawn
  faint, not as a full-strength overlay, and a peaked one fills the range;
- ``dot_product`` (signed weights): the deviation from the row mean in units of the mean |w|, at least
  -1..+1, so 4% differences stay 4% of the colour range instead of being stretched over all of it.

The overlay's opacity follows the distance from uniform (half as strong below uniform), so where the block
looks everywhere alike, or where it does not look, the image shows through. The PNG (:func:`render`, matplotlib) has the image panel at least 512 px on its long
side, a title above it (model, layer, grid, mode, query, max/min relative to uniform) and a colour bar
with the uniform level marked. The raw weights (key grid, float32) are saved next to it as ``.npy``.
File names start with the model's name (:func:`output_stem`), so several models can share one folder.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yolo_nonlocal.tools.inference import input_size, load_model, model_label, network_input, nonlocal_layers

__all__ = ["AttentionMap", "ColourScale", "attention_map", "colour_scale", "render", "draw", "output_stem", "save"]

SOFTMAX_MODES = ("embedded_gaussian", "gaussian")
# the weakest colour scale: a map within 1/4x..4x of uniform never fills the colours (log2 limits of +-2)
MIN_LOG2_RANGE = 2.0
# a dot_product map is coloured by its deviation from the row mean in units of mean |w|; at least +-1
MIN_DEVIATION_RANGE = 1.0
MIN_DISPLAY = 512  # the image panel's long side in pixels, at least (a 128 px source is drawn 4x)
BELOW_UNIFORM_OPACITY = 0.5  # keys below uniform are tinted at this fraction of the opacity of keys above it


@dataclass
class AttentionMap:
    """The weights of one query of one block, with what is needed to draw and interpret them."""

    weights: np.ndarray  # (Hk, Wk) float32: the block's key grid
    layer: int  # index of the NonLocal layer in the model (its YAML row)
    mode: str
    query: tuple[float, float]  # in source image pixels (x, y)
    query_cell: tuple[int, int]  # (row, col) in the block's input grid
    grid: tuple[int, int]  # the block's input grid (H, W)
    ratio: float  # letterbox scale: image pixel * ratio = network input pixel
    input_hw: tuple[int, int]  # padded network input (H, W)
    image_hw: tuple[int, int]  # source image (H, W)
    model: str = "model"  # a short name of the model (see inference.model_label), for labels and file names

    @property
    def n_keys(self) -> int:
        """N', the number of key positions (the block's key grid, halved per side with ``sub_sample``)."""
        return int(self.weights.size)

    @property
    def uniform(self) -> float:
        """1/N': the weight every key would get if the query looked everywhere alike (softmax modes)."""
        return 1.0 / self.n_keys


def attention_map(
    model: Any,
    image: str | Path | np.ndarray,
    query: tuple[float, float],
    layer: int | None = None,
    imgsz: int | None = None,
) -> AttentionMap:
    """The pairwise weights of NonLocal layer ``layer`` for the image position ``query`` = (x, y).

    ``image`` is a path or a BGR uint8 array (as OpenCV reads it). ``layer`` defaults to the NonLocal layer
    with the finest grid (the one closest to small objects); ``imgsz`` to the size the model was trained at.
    """
    import cv2
    import torch

    net = load_model(model, "attention")
    layers = nonlocal_layers(net)
    if not layers:
        raise ValueError("the model has no NonLocal layer; pass a Non-local model (e.g. one trained from yolov8n-nl.yaml)")
    if layer is not None and layer not in layers:
        raise ValueError(f"layer={layer} is not a NonLocal layer; this model's NonLocal layers are {sorted(layers)}")

    if isinstance(image, np.ndarray):
        img = image
    else:
        img = cv2.imread(str(image))
        if img is None:
            raise FileNotFoundError(f"source={image} is not a readable image")
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"source must be a 3-channel image, got shape {img.shape}")
    h, w = img.shape[:2]
    x, y = float(query[0]), float(query[1])
    if not (0 <= x < w and 0 <= y < h):
        raise ValueError(f"query={x:g},{y:g} is outside the {w}x{h} image; give X,Y in pixels with 0 <= X < {w}, 0 <= Y < {h}")

    tensor, r = network_input(net, img, input_size(net, imgsz))

    inputs: dict[int, torch.Tensor] = {}
    hooks = [
        m.register_forward_pre_hook(lambda mod, args, i=i: inputs.__setitem__(i, args[0].detach()))
        for i, m in layers.items()
    ]
    try:
        with torch.inference_mode():
            net(tensor)
    finally:
        for hk in hooks:
            hk.remove()
    if layer is None:
        layer = max(inputs, key=lambda i: inputs[i].shape[2] * inputs[i].shape[3])
    block, feat = layers[layer], inputs[layer]
    gh, gw = int(feat.shape[2]), int(feat.shape[3])
    ih, iw = int(tensor.shape[2]), int(tensor.shape[3])
    row = min(int(y * r * gh / ih), gh - 1)
    col = min(int(x * r * gw / iw), gw - 1)
    with torch.inference_mode():
        weights = block.pairwise_weights(feat)[0, row * gw + col]
    kh, kw = block.keys_shape((gh, gw))
    if weights.numel() != kh * kw:
        raise RuntimeError(f"layer {layer}: {weights.numel()} weights do not fit the key grid {kh}x{kw}")
    return AttentionMap(
        weights=weights.reshape(kh, kw).float().cpu().numpy(),
        layer=layer,
        mode=block.mode,
        query=(x, y),
        query_cell=(row, col),
        grid=(gh, gw),
        ratio=r,
        input_hw=(ih, iw),
        image_hw=(h, w),
        model=model_label(model),
    )


@dataclass(frozen=True)
class ColourScale:
    """How a map is coloured: ``values`` on the key grid, with the colour range ``-limit..limit`` centred on
    the uniform level (value 0); ``log2`` says whether values are log2 ratios to uniform."""

    values: np.ndarray  # (Hk, Wk) float64, 0 = uniform
    limit: float  # the colour range is -limit..limit
    log2: bool  # True: values are log2(weight / uniform); False: (w - mean) / mean|w|
    uniform: float  # the uniform level in weight units (1/N' for a softmax, the row mean otherwise)
    label: str  # the colour bar's title


def colour_scale(amap: AttentionMap) -> ColourScale:
    """The colour scale of ``amap`` (see the module docstring): relative to uniform, never min-max stretched."""
    w = amap.weights.astype(np.float64)
    finite = w[np.isfinite(w)]
    if amap.mode != "dot_product":  # softmax and ReLU (concatenation) weights are >= 0
        uniform = amap.uniform if amap.mode in SOFTMAX_MODES else float(finite.mean()) if finite.size else 0.0
        if uniform > 0:
            with np.errstate(divide="ignore", invalid="ignore"):
                values = np.log2(w / uniform)
            # the range follows the peak (at most log2 N', all attention on one key); far-below-uniform keys
            # (a softmax gives ~0 to most keys of a peaked map) saturate at the bottom instead of setting it
            top = values[np.isfinite(values)]
            limit = max(MIN_LOG2_RANGE, math.ceil(float(top.max())) if top.size else 0.0)
            values = np.clip(np.nan_to_num(values, nan=0.0, neginf=-limit, posinf=limit), -limit, limit)
        else:  # an all-zero concatenation row: nothing is looked at more than anything else
            values, limit = np.zeros_like(w), MIN_LOG2_RANGE
        what = "1/N'" if amap.mode in SOFTMAX_MODES else "row mean"
        return ColourScale(values, float(limit), True, float(uniform), f"weight / uniform\n(uniform = {what} = {uniform:.3g})")
    mean = float(finite.mean()) if finite.size else 0.0
    scale = float(np.abs(finite).mean()) if finite.size else 0.0
    values = np.nan_to_num((w - mean) / scale, nan=0.0) if scale > 0 else np.zeros_like(w)
    limit = max(MIN_DEVIATION_RANGE, float(np.abs(values).max()) if values.size else 0.0)
    return ColourScale(values, limit, False, mean, f"(w - row mean) / mean|w|\n(row mean = {mean:.3g})")


def _on_image(grid: np.ndarray, amap: AttentionMap) -> np.ndarray:
    """Key-grid values on the source image's pixels: grid -> padded network input -> letterboxed region -> image."""
    import cv2

    h, w = amap.image_hw
    ih, iw = amap.input_hw
    up = cv2.resize(grid.astype(np.float32), (iw, ih), interpolation=cv2.INTER_NEAREST)
    nh, nw = min(ih, round(h * amap.ratio)), min(iw, round(w * amap.ratio))
    return cv2.resize(up[:nh, :nw], (w, h), interpolation=cv2.INTER_NEAREST)


def _ticks(scale: ColourScale) -> tuple[list[float], list[str]]:
    if not scale.log2:
        step = max(0.25, scale.limit / 4)
        ticks = [k * step for k in range(-int(scale.limit // step), int(scale.limit // step) + 1)]
        return ticks, [("0 = row mean" if t == 0 else f"{t:+.2g}") for t in ticks]
    step = max(1, math.ceil(2 * scale.limit / 8))
    ticks = [float(k) for k in range(-int(scale.limit), int(scale.limit) + 1) if k % step == 0]
    labels = []
    for t in ticks:
        ratio = 2.0 ** t
        labels.append("1x uniform" if t == 0 else (f"{ratio:g}x" if t > 0 else f"1/{1 / ratio:g}x"))
    return ticks, labels


def render(image: np.ndarray, amap: AttentionMap, alpha: float = 0.8):
    """A matplotlib Figure: ``image`` (BGR) with ``amap`` overlaid, the query marked, a title above the image
    and a colour bar with the uniform level marked. The image panel is at least ``MIN_DISPLAY`` px long."""
    import matplotlib

    if "MPLBACKEND" not in os.environ:
        matplotlib.use("Agg")
    from matplotlib import colormaps
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must be within 0..1")
    h, w = amap.image_hw
    if image.shape[:2] != (h, w):
        raise ValueError(f"the image is {image.shape[1]}x{image.shape[0]}, the map was taken on {w}x{h}")
    scale = colour_scale(amap)
    values = _on_image(scale.values, amap)
    cmap, norm = colormaps["RdBu_r"], Normalize(-scale.limit, scale.limit)
    heat = cmap(norm(values))
    # opacity grows with the distance from uniform (uniform: the image shows through); keys below uniform get
    # half of it, so that a peaked map, which gives almost nothing to most keys, does not hide the image
    strength = np.clip(np.abs(values) / scale.limit, 0.0, 1.0) * np.where(values < 0, BELOW_UNIFORM_OPACITY, 1.0)
    heat[..., 3] = alpha * strength

    zoom = max(1.0, MIN_DISPLAY / max(h, w))
    dpi = 100
    pw, ph = w * zoom, h * zoom  # the image panel, in pixels
    left, right, top, bottom = 10, 190, 64, 10  # room for the colour bar and its labels, and the title
    fig = Figure(figsize=((pw + left + right) / dpi, (ph + top + bottom) / dpi), dpi=dpi)
    W, H = pw + left + right, ph + top + bottom
    ax = fig.add_axes((left / W, bottom / H, pw / W, ph / H))
    ax.imshow(image[:, :, ::-1], interpolation="nearest")
    ax.imshow(heat, interpolation="nearest")
    qx, qy = amap.query
    ax.plot([qx], [qy], marker="o", ms=12, mfc="none", mec="black", mew=2.5)
    ax.plot([qx], [qy], marker="+", ms=12, color="white", mew=1.8)
    ax.set_axis_off()
    u = amap.weights.astype(np.float64)
    if scale.log2 and scale.uniform > 0:
        spread = f"max {u.max() / scale.uniform:.3g}x, min {u.min() / scale.uniform:.3g}x uniform"
    else:
        spread = f"deviation from the row mean {scale.values.min():+.3g}..{scale.values.max():+.3g} mean|w|"
    fig.text(
        left / W, 1 - 8 / H,
        f"{amap.model}: layer {amap.layer} ({amap.mode}), grid {amap.grid[0]}x{amap.grid[1]}, "
        f"{amap.n_keys} keys\nquery ({qx:g}, {qy:g}) -> cell {amap.query_cell}; {spread}",
        ha="left", va="top", fontsize=10,
    )  # fmt: skip
    cax = fig.add_axes(((left + pw + 16) / W, bottom / H, 16 / W, ph / H))
    from matplotlib.cm import ScalarMappable

    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax)
    ticks, labels = _ticks(scale)
    bar.set_ticks(ticks, labels=labels)
    bar.ax.tick_params(labelsize=8)
    bar.ax.axhline(0.0, color="black", lw=2)  # the uniform level
    bar.ax.set_title(scale.label, fontsize=8, loc="left")
    return fig


def draw(image: np.ndarray, amap: AttentionMap, alpha: float = 0.8) -> np.ndarray:
    """:func:`render` as a BGR uint8 array (what ``cv2.imwrite`` takes)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = render(image, amap, alpha)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[:, :, 2::-1])


def output_stem(amap: AttentionMap, source: str | Path) -> str:
    """``<model>_<image>_layer<N>_x<X>_y<Y>``: the file name of a map, unique per model, image, layer and query."""
    return f"{amap.model}_{Path(source).stem}_layer{amap.layer}_x{amap.query[0]:g}_y{amap.query[1]:g}"


def save(image: np.ndarray, amap: AttentionMap, project: str | Path, source: str | Path) -> tuple[Path, Path]:
    """Write ``project/<output_stem>.png`` (:func:`render`) and the raw weights as ``.npy``; returns both paths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    project = Path(project)
    project.mkdir(parents=True, exist_ok=True)
    stem = output_stem(amap, source)
    png, npy = project / f"{stem}.png", project / f"{stem}.npy"
    fig = render(image, amap)
    FigureCanvasAgg(fig)
    fig.savefig(png)
    np.save(npy, amap.weights)
    return png, npy

