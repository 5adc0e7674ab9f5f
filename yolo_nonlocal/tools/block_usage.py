"""Did the Non-local blocks of a trained model learn to do anything? Measure it, and ablate them.

A Non-local block (Wang et al., CVPR 2018, arXiv 1711.07971) computes z = x + W_z y and starts as the
identity (W_z's BatchNorm weight and bias are zero). Training has to grow W_z before the block changes
anything, and a model whose blocks stayed near the identity cannot gain from them, whatever the block
could do in principle. Two measures tell a trained model's blocks apart from the identity (and :func:`shortcut_residuals` gives the
first for the model's own shortcut bottlenecks, for scale):

``residual``  the block's contribution relative to its input, ||W_z y|| / ||x|| (Frobenius norms over
              the whole feature map of one image), averaged over images. 0 for a fresh block; a block
              whose residual stays at a few per cent barely changes the features it passes on.
``gamma``     the mean |weight| of W_z's BatchNorm (0 at initialisation).

:func:`disable_nonlocal_` is the ablation: it zeroes W_z's BatchNorm weight and bias in place, so every
block becomes exactly the identity again while the rest of the trained network is kept. Evaluating the
disabled model against the trained one says how much of the model's AP the blocks carry.

Command line (``yolo-nonlocal usage``)::

    yolo-nonlocal usage model=runs/.../best.pt source=IMAGES_DIR_OR_IMAGE [imgsz=S] [max_images=N]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = ["BlockUsage", "block_usage", "shortcut_residuals", "disable_nonlocal_", "format_usage", "cli"]

IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")


@dataclass
class BlockUsage:
    """How far one NonLocal layer of a trained model is from the identity."""

    layer: int  # index of the layer in the model (its YAML row)
    mode: str
    channels: int
    gamma: float  # mean |BatchNorm weight| of W_z (0 at initialisation)
    residual: float  # mean over images of ||W_z y|| / ||x||
    residual_max: float  # largest per-image ||W_z y|| / ||x||
    images: int


def _image_paths(source: str | Path | Sequence[str | Path], max_images: int | None) -> list[Path]:
    if isinstance(source, (str, Path)):
        src = Path(source)
        if src.is_dir():
            paths = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not paths:
                raise FileNotFoundError(f"source={src} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        elif src.is_file():
            paths = [src]
        else:
            raise FileNotFoundError(f"source={src} is neither an image nor a folder of images")
    else:
        paths = [Path(p) for p in source]
        if not paths:
            raise ValueError("source is an empty list of images")
    return paths[:max_images] if max_images else paths


def _measure(model: Any, source, imgsz: int | None, max_images: int | None, blocks: bool, shortcuts: bool):
    """One forward pass per image that records norm(output - input) / norm(input) for every NonLocal layer
    (``blocks``) and every shortcut bottleneck (``shortcuts``); returns the layers and the per-image ratios."""
    import cv2
    import torch

    from yolo_nonlocal.tools.attention_map import _input_size, _load_model, _network_input, _nonlocal_layers

    net = _load_model(model)
    imgsz = _input_size(net, imgsz)
    layers = _nonlocal_layers(net) if blocks else {}
    modules: dict[Any, Any] = dict(layers)
    if shortcuts:  # Ultralytics Bottleneck with its shortcut on (inside C2f / C3k2 / C3), by module name
        modules.update(
            {n: m for n, m in net.named_modules() if type(m).__name__ == "Bottleneck" and getattr(m, "add", False)}
        )
    paths = _image_paths(source, max_images)
    ratios: dict[Any, list[float]] = {k: [] for k in modules}

    def hook(key):
        def record(mod, args, out):
            x = args[0].float()
            ratios[key].append(float((out.float() - x).norm() / x.norm().clamp_min(1e-12)))

        return record

    handles = [m.register_forward_hook(hook(k)) for k, m in modules.items()]
    try:
        with torch.inference_mode():
            for path in paths:
                img = cv2.imread(str(path))
                if img is None:
                    raise FileNotFoundError(f"{path} is not a readable image")
                net(_network_input(net, img, imgsz)[0])
    finally:
        for h in handles:
            h.remove()
    return layers, ratios


def block_usage(
    model: Any,
    source: str | Path | Sequence[str | Path],
    imgsz: int | None = None,
    max_images: int | None = 50,
    shortcuts: bool = False,
) -> list[BlockUsage] | tuple[list[BlockUsage], dict[str, float]]:
    """Measure every NonLocal layer of ``model`` on the images of ``source``.

    ``model`` is a checkpoint path, a model YAML, an Ultralytics ``YOLO`` or its ``DetectionModel``;
    ``source`` an image, a folder of images or a list of image paths (the first ``max_images`` are used).
    Images are letterboxed as the detector sees them, at ``imgsz`` (default: the training size).
    Returns a list of :class:`BlockUsage`; with ``shortcuts=True``, that list and the
    :func:`shortcut_residuals` of the same forward passes.
    """
    layers, ratios = _measure(model, source, imgsz, max_images, blocks=True, shortcuts=shortcuts)
    if not layers:
        raise ValueError("the model has no NonLocal layer; pass a Non-local model (e.g. one trained from yolov8n-nl.yaml)")
    usage = [
        BlockUsage(
            layer=i,
            mode=m.mode,
            channels=m.c1,
            gamma=float(m.w_z[1].weight.detach().abs().mean()),
            residual=float(np.mean(ratios[i])),
            residual_max=float(np.max(ratios[i])),
            images=len(ratios[i]),
        )
        for i, m in layers.items()
    ]
    if not shortcuts:
        return usage
    return usage, {n: float(np.mean(v)) for n, v in ratios.items() if n not in layers}


def shortcut_residuals(
    model: Any,
    source: str | Path | Sequence[str | Path],
    imgsz: int | None = None,
    max_images: int | None = 50,
) -> dict[str, float]:
    """For scale: the same residual for the model's own shortcut bottlenecks (Ultralytics ``Bottleneck`` with
    its shortcut on, inside C2f / C3k2 / C3), mean over images, by module name. Empty when there are none."""
    _, ratios = _measure(model, source, imgsz, max_images, blocks=False, shortcuts=True)
    return {n: float(np.mean(v)) for n, v in ratios.items()}


def disable_nonlocal_(model: Any) -> int:
    """Make every NonLocal block of ``model`` exactly the identity, in place; returns how many there were.

    Zeroes W_z's BatchNorm weight and bias (its state at initialisation), so z = x + 0 while theta, phi, g
    and the rest of the trained network are kept: the ablation "the trained model without its blocks".
    """
    import torch

    from yolo_nonlocal.nonlocal_block import NonLocal

    if not isinstance(model, torch.nn.Module):  # an Ultralytics YOLO is an nn.Module holding its network
        raise TypeError(f"disable_nonlocal_ takes a torch nn.Module or an Ultralytics YOLO, got {type(model).__name__}")
    n = 0
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, NonLocal):
                m.w_z[1].weight.zero_()
                m.w_z[1].bias.zero_()
                n += 1
    return n


def format_usage(usage: Iterable[BlockUsage]) -> str:
    """A Markdown table of :func:`block_usage`'s result."""
    lines = [
        "| layer | mode | channels | mean abs(gamma) | residual norm(W_z y)/norm(x), mean | max | images |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for u in usage:
        lines.append(
            f"| {u.layer} | {u.mode} | {u.channels} | {u.gamma:.4f} | {100 * u.residual:.2f}% | "
            f"{100 * u.residual_max:.2f}% | {u.images} |"
        )
    return "\n".join(lines)


_USAGE = """usage: yolo-nonlocal usage model=best.pt source=IMAGES [imgsz=S] [max_images=N]

How far each Non-local block of a trained model is from the identity it started as: the mean |gamma| of
W_z's BatchNorm, and the block's residual ||W_z y|| / ||x|| averaged over the images (0 for a fresh block).
  model=       a trained Non-local checkpoint (.pt) or model YAML
  source=      an image or a folder of images (for example the dataset's images/val)
  imgsz=       network input size; default: the size the checkpoint was trained at (else 640)
  max_images=  how many images of the folder to use (default 50; 0 = all)"""


def cli(argv: list[str]) -> int:
    """``yolo-nonlocal usage``: print the table of :func:`block_usage`."""
    if any(a in {"--help", "-h", "help"} for a in argv):
        print(_USAGE)
        return 0
    from yolo_nonlocal.cli import int_value, parse_key_values

    try:
        kv = parse_key_values(argv, {"model", "source", "imgsz", "max_images"}, ("model", "source"), "source=images/val")
        ints = {k: int_value(k, kv[k]) for k in ("imgsz", "max_images") if k in kv}
        if ints.get("max_images", 1) < 0:
            raise ValueError("max_images must be >= 0 (0 = every image)")
        model = kv["model"]
        if model.endswith(".pt") and not Path(model).is_file():
            raise FileNotFoundError(f"model={model} does not exist (usage never downloads weights)")
        usage, reference = block_usage(
            model, kv["source"], imgsz=ints.get("imgsz"), max_images=ints.get("max_images", 50) or None, shortcuts=True
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"usage: {e}", file=sys.stderr)
        return 2
    print(format_usage(usage))
    if reference:
        v = sorted(reference.values())
        print(
            f"\nFor scale, the model's own {len(v)} shortcut bottlenecks: residual median {100 * v[len(v) // 2]:.1f}% "
            f"(range {100 * v[0]:.1f}-{100 * v[-1]:.1f}%)."
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(cli(sys.argv[1:]))
