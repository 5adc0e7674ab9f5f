"""What the inspection tools share: a model in eval mode, its NonLocal layers, and the input the detector sees.

``attention_map`` (where a block looks) and ``block_usage`` (how much a block does) both run a trained
detector on a few images and look inside its Non-local layers; this module is the one place that loads the
model, finds the layers and letterboxes an image the way Ultralytics' predictor does (scaled so the long
side is ``imgsz``, padded right and bottom with grey 114 to a multiple of the stride, so image pixel
(x, y) maps to network pixel (x * r, y * r)).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["load_model", "model_label", "nonlocal_layers", "letterbox", "input_size", "network_input", "read_image"]


def load_model(model: Any, tool: str = "this tool"):
    """A DetectionModel in float32 eval mode, from a path (.pt or .yaml), an Ultralytics ``YOLO`` or an nn.Module.

    A ``.pt`` path that does not exist is refused (FileNotFoundError) instead of being downloaded.
    """
    from torch import nn
    from ultralytics.engine.model import Model

    if isinstance(model, Model):  # ultralytics.YOLO (itself an nn.Module): its network is .model
        return model.model.float().eval()
    if isinstance(model, nn.Module):
        return model.float().eval()
    spec = str(model)
    if spec.endswith(".pt") and not Path(spec).expanduser().is_file():
        raise FileNotFoundError(f"model={spec} does not exist ({tool} never downloads weights)")
    from ultralytics import YOLO

    return YOLO(str(Path(spec).expanduser()) if spec.endswith(".pt") else spec).model.float().eval()


def model_label(model: Any) -> str:
    """A short file-name-safe name for a model: ``run-best`` for ``run/weights/best.pt``, else the file's stem.

    Ultralytics names every checkpoint ``best.pt`` / ``last.pt``, so the stem alone cannot tell three trained
    models apart; the run folder can. In-memory models are named by the checkpoint they came from, else ``model``.
    """
    spec = model if isinstance(model, (str, Path)) else getattr(model, "ckpt_path", None) or getattr(model, "cfg", None)
    if not spec:  # a DetectionModel (or a YOLO holding one) knows the YAML it was built from
        net = getattr(model, "model", model)
        for candidate in (model, net):
            cfg = getattr(candidate, "yaml", None)
            if isinstance(cfg, dict) and cfg.get("yaml_file"):
                spec = cfg["yaml_file"]
                break
    spec = spec or "model"
    path = Path(str(spec))
    stem = path.stem or "model"
    if stem in {"best", "last"} or stem.startswith("epoch"):
        parent = path.parent.parent if path.parent.name == "weights" else path.parent
        if parent.name and parent.name not in {".", ".."}:
            stem = f"{parent.name}-{stem}"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)


def nonlocal_layers(net) -> dict[int, Any]:
    """The NonLocal layers of an Ultralytics layer list, by index (their YAML row)."""
    from yolo_nonlocal.nonlocal_block import NonLocal

    layers = getattr(net, "model", None)
    if layers is None:
        raise ValueError("the model has no Ultralytics layer list (.model); pass a YOLO checkpoint or model YAML")
    return {i: m for i, m in enumerate(layers) if isinstance(m, NonLocal)}


def letterbox(img_bgr: np.ndarray, imgsz: int, stride: int = 32) -> tuple[np.ndarray, float]:
    """``img_bgr`` scaled so its long side is ``imgsz``, padded right/bottom to the stride; and the scale r."""
    import cv2

    if img_bgr.ndim != 3 or img_bgr.shape[2] != 3:
        raise ValueError(f"an image must be H x W x 3, got shape {img_bgr.shape}")
    if imgsz < 1 or stride < 1:
        raise ValueError(f"imgsz={imgsz} and stride={stride} must be positive")
    h, w = img_bgr.shape[:2]
    r = imgsz / max(h, w)
    nh, nw = max(1, round(h * r)), max(1, round(w * r))
    resized = img_bgr if (nh, nw) == (h, w) else cv2.resize(img_bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    ph, pw = math.ceil(nh / stride) * stride, math.ceil(nw / stride) * stride
    out = np.full((ph, pw, 3), 114, np.uint8)
    out[:nh, :nw] = resized
    return out, r


def input_size(net, imgsz: int | None) -> int:
    """``imgsz``, by default the size the checkpoint was trained at (else 640); at least 32."""
    if imgsz is None:
        train_args = getattr(net, "args", None) or {}
        imgsz = int(train_args.get("imgsz", 640)) if isinstance(train_args, dict) else 640
    if imgsz < 32:
        raise ValueError(f"imgsz={imgsz} must be >= 32")
    return imgsz


def network_input(net, img_bgr: np.ndarray, imgsz: int):
    """The (1, 3, H, W) float input the detector sees for a BGR image, on the model's device, and the scale r."""
    import torch

    stride = int(max(int(net.stride.max()), 32)) if hasattr(net, "stride") else 32
    boxed, r = letterbox(img_bgr, imgsz, stride)
    p = next(net.parameters())
    tensor = torch.from_numpy(np.ascontiguousarray(boxed[:, :, ::-1].transpose(2, 0, 1))).to(p.device, torch.float32)
    return tensor[None] / 255.0, r


def read_image(path: str | Path) -> np.ndarray:
    """A BGR uint8 image as OpenCV reads it (EXIF orientation applied, as Ultralytics' loaders do)."""
    import cv2

    img = cv2.imread(str(path))
    if img is None:
        raise FileNotFoundError(f"source={path} is not a readable image")
    return img
