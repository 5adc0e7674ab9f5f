"""Where does a Non-local block look? Draw its pairwise weights for one query pixel over the image.

The idea of the paper's Figure 1: pick a position i (the query), take the normalised pairwise weights
f(x_i, x_j) / C(x) of a Non-local block for every position j, and overlay them on the image. For the
softmax modes (``embedded_gaussian``, ``gaussian``) the weights of a query sum to 1; for ``dot_product``
and ``concatenation`` they are f / N' (the paper's normalisation) and are shown min-max normalised.

How: the image is letterboxed the way the detector sees it (scaled so its long side is ``imgsz``, padded
on the right and bottom to a multiple of the model's stride, so image pixel (x, y) maps to
(x * r, y * r)); a forward hook records the input of every NonLocal layer; the chosen layer's
:meth:`NonLocal.pairwise_weights` row for the query's cell is reshaped to the key grid (half resolution
with ``sub_sample``), resized back to the original image and drawn as a heat map. The PNG has the size of
the source image; the raw weights are saved next to it as ``.npy`` (the key grid, float32).

Command line (``yolo-nonlocal attention``)::

    yolo-nonlocal attention model=runs/.../best.pt source=image.png query=120,64 [layer=N] [imgsz=S] project=DIR
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["AttentionMap", "attention_map", "draw", "cli"]

SOFTMAX_MODES = ("embedded_gaussian", "gaussian")


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


def _load_model(model: Any):
    """A DetectionModel in eval mode, from a path (.pt or .yaml) or an Ultralytics YOLO/nn.Module."""
    from torch import nn
    from ultralytics.engine.model import Model

    if isinstance(model, Model):  # ultralytics.YOLO (itself an nn.Module): its network is .model
        return model.model.float().eval()
    if isinstance(model, nn.Module):
        return model.float().eval()
    spec = str(model)
    if spec.endswith(".pt") and not Path(spec).is_file():
        raise FileNotFoundError(f"model={spec} does not exist (attention never downloads weights)")
    from ultralytics import YOLO

    return YOLO(spec).model.float().eval()


def _nonlocal_layers(net) -> dict[int, Any]:
    from yolo_nonlocal.nonlocal_block import NonLocal

    layers = getattr(net, "model", None)
    if layers is None:
        raise ValueError("the model has no Ultralytics layer list (.model); pass a YOLO checkpoint or model YAML")
    return {i: m for i, m in enumerate(layers) if isinstance(m, NonLocal)}


def _letterbox(img_bgr: np.ndarray, imgsz: int, stride: int) -> tuple[np.ndarray, float]:
    import cv2

    h, w = img_bgr.shape[:2]
    r = imgsz / max(h, w)
    nh, nw = max(1, round(h * r)), max(1, round(w * r))
    resized = img_bgr if (nh, nw) == (h, w) else cv2.resize(img_bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    ph, pw = math.ceil(nh / stride) * stride, math.ceil(nw / stride) * stride
    out = np.full((ph, pw, 3), 114, np.uint8)
    out[:nh, :nw] = resized
    return out, r


def _input_size(net, imgsz: int | None) -> int:
    """``imgsz``, by default the size the checkpoint was trained at (else 640); at least 32."""
    if imgsz is None:
        train_args = getattr(net, "args", None) or {}
        imgsz = int(train_args.get("imgsz", 640)) if isinstance(train_args, dict) else 640
    if imgsz < 32:
        raise ValueError(f"imgsz={imgsz} must be >= 32")
    return imgsz


def _network_input(net, img_bgr: np.ndarray, imgsz: int):
    """The (1, 3, H, W) float input the detector sees for a BGR image, on the model's device, and the scale r."""
    import torch

    stride = int(max(int(net.stride.max()), 32)) if hasattr(net, "stride") else 32
    boxed, r = _letterbox(img_bgr, imgsz, stride)
    p = next(net.parameters())
    tensor = torch.from_numpy(np.ascontiguousarray(boxed[:, :, ::-1].transpose(2, 0, 1))).to(p.device, torch.float32)
    return tensor[None] / 255.0, r


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

    net = _load_model(model)
    layers = _nonlocal_layers(net)
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

    tensor, r = _network_input(net, img, _input_size(net, imgsz))

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
    kh, kw = (math.ceil(gh / 2), math.ceil(gw / 2)) if block.sub_sample else (gh, gw)
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
    )


def draw(image: np.ndarray, amap: AttentionMap, alpha: float = 0.8) -> np.ndarray:
    """The BGR image (same size) with ``amap``'s weights as a heat map, the query marked and a legend.

    The colour is blended in proportion to the weight (up to ``alpha``), so positions the query does not
    look at keep the original image and the few it does look at stand out.
    """
    import cv2

    h, w = amap.image_hw
    wts = amap.weights.astype(np.float64)
    lo, hi = (0.0, wts.max()) if amap.mode in SOFTMAX_MODES else (wts.min(), wts.max())
    norm = (wts - lo) / (hi - lo) if hi > lo else np.zeros_like(wts)
    # key grid -> padded network input -> the letterboxed image region -> the source image
    ih, iw = amap.input_hw
    up = cv2.resize(norm.astype(np.float32), (iw, ih), interpolation=cv2.INTER_NEAREST)
    nh, nw = min(ih, round(h * amap.ratio)), min(iw, round(w * amap.ratio))
    heat = cv2.resize(up[:nh, :nw], (w, h), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.clip(heat * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    a = (alpha * np.clip(heat, 0.0, 1.0))[:, :, None]
    out = np.clip(image.astype(np.float32) * (1.0 - a) + colour.astype(np.float32) * a, 0, 255).astype(np.uint8)
    qx, qy = int(round(amap.query[0])), int(round(amap.query[1]))
    arm = max(4, min(h, w) // 40)
    cv2.line(out, (qx - arm, qy), (qx + arm, qy), (255, 255, 255), 1, cv2.LINE_AA)
    cv2.line(out, (qx, qy - arm), (qx, qy + arm), (255, 255, 255), 1, cv2.LINE_AA)
    cv2.circle(out, (qx, qy), arm + 1, (0, 0, 0), 1, cv2.LINE_AA)
    label = f"layer {amap.layer} {amap.grid[0]}x{amap.grid[1]} max {amap.weights.max():.3g}"
    font_scale = max(0.3, min(w, h) / 700)
    cv2.putText(out, label, (4, 4 + int(22 * font_scale)), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(out, label, (4, 4 + int(22 * font_scale)), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


_USAGE = """usage: yolo-nonlocal attention model=best.pt source=IMAGE query=X,Y [layer=N] [imgsz=S] [project=DIR]

Draw where a Non-local block looks from one position: the block's normalised pairwise weights for the
query pixel (X,Y in source-image pixels) overlaid on the image (softmax modes: the weights, summing to 1;
dot_product/concatenation: f/N', min-max normalised). Writes DIR/<image>_layer<N>_x<X>_y<Y>.png (the
image's size) and the raw weights as .npy beside it.
  model=    a trained Non-local checkpoint (.pt) or a model YAML (untrained weights)
  layer=    index of a NonLocal layer (its YAML row); default: the one with the finest grid
  imgsz=    network input size; default: the size the checkpoint was trained at (else 640)
  project=  output folder (default runs/attention)"""


def _parse(argv: list[str]) -> dict[str, str]:
    from yolo_nonlocal.cli import parse_key_values

    known = {"model", "source", "query", "layer", "imgsz", "project"}
    return parse_key_values(argv, known, ("model", "source", "query"), "query=120,64")


def _query(text: str) -> tuple[float, float]:
    parts = text.replace(" ", "").split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        return float(parts[0]), float(parts[1])
    except ValueError:
        raise ValueError(f"query={text!r} must be X,Y in image pixels (for example query=120,64)") from None


def cli(argv: list[str]) -> int:
    """``yolo-nonlocal attention``: write the attention overlay PNG (and the weights .npy); prints the PNG path."""
    import cv2

    from yolo_nonlocal.cli import int_value

    if any(a in {"--help", "-h", "help"} for a in argv):
        print(_USAGE)
        return 0
    try:
        kv = _parse(list(argv))
        query = _query(kv["query"])
        layer, imgsz = int_value("layer", kv.get("layer")), int_value("imgsz", kv.get("imgsz"))
        source = Path(kv["source"])
        img = cv2.imread(str(source))
        if img is None:
            raise FileNotFoundError(f"source={source} is not a readable image")
        amap = attention_map(kv["model"], img, query, layer=layer, imgsz=imgsz)
    except (ValueError, FileNotFoundError) as e:
        print(f"attention: {e}", file=sys.stderr)
        return 2
    project = Path(kv.get("project", "runs/attention"))
    project.mkdir(parents=True, exist_ok=True)
    stem = f"{source.stem}_layer{amap.layer}_x{query[0]:g}_y{query[1]:g}"
    png, npy = project / f"{stem}.png", project / f"{stem}.npy"
    if not cv2.imwrite(str(png), draw(img, amap)):
        print(f"attention: could not write {png}", file=sys.stderr)
        return 1
    np.save(npy, amap.weights)
    total = float(amap.weights.sum())
    print(
        f"layer {amap.layer} ({amap.mode}, grid {amap.grid[0]}x{amap.grid[1]}, query cell {amap.query_cell}): "
        f"weights sum {total:.4f}, max {amap.weights.max():.4g}",
        file=sys.stderr,
    )
    print(png)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(cli(sys.argv[1:]))
