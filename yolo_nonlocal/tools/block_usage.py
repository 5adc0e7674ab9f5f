"""Did the Non-local blocks of a trained model learn to do anything? Measure it honestly, and ablate them.

A Non-local block (Wang et al., CVPR 2018, arXiv 1711.07971) computes z = x + W_z y, y_i = 1/C(x)
sum_j f(x_i, x_j) g(x_j), and starts as the identity (W_z's BatchNorm weight gamma and bias beta are zero).
W_z is a 1x1 convolution and a BatchNorm, so its output holds a part that is the same at every position
(beta, and whatever of y does not vary in space) and a part that varies with position. Only the second can
carry long-range context to one place rather than another; a block whose output is mostly beta is a
learned per-channel bias, not attention. The measures, per block and per image (Frobenius norms over the
whole feature map), averaged over images:

``residual``  ||W_z y|| / ||x||: the block's whole contribution relative to its input (0 for a fresh block).
``constant``  ||c|| / ||x|| with c = the per-channel spatial mean of W_z y, broadcast over the positions:
              the position-independent part (beta and the spatial mean of the rest).
``varying``   ||W_z y - c|| / ||x||: the part that changes with position. residual^2 = constant^2 + varying^2
              for each image (the two parts are orthogonal).
``query_distance``  how much the attention depends on the query: the mean cosine distance 1 - cos(a_i, a_k)
              between the attention maps a_i = f(x_i, .)/C(x) of different query positions i != k (sampled,
              :data:`QUERIES` per image). GCNet (Cao et al., ICCV-W 2019, arXiv 1904.11492) found it near
              0 for trained Non-local blocks: every query sees the same map, so the block is a global
              context pooling. 0 means query-independent; it is None for a block that computes no map.
``gamma``, ``beta``  the mean |weight| and mean |bias| of W_z's BatchNorm (both 0 at initialisation).

Ablations at test time, each exactly one thing removed while the rest of the trained network is kept:

- :func:`reset_nonlocal_to_identity_` zeroes gamma and beta: z = x, the block is taken out
  (:func:`disable_nonlocal_` is the same function under its earlier name);
- :func:`zero_nonlocal_gamma_` zeroes gamma only: z = x + beta, everything computed from the input is
  removed and the learned constant bias is kept;
- :func:`replace_y_by_spatial_mean` (a context manager / removable hooks) feeds W_z the spatial mean of y
  instead of y: only the query dependence is removed (every position gets the same context).

For scale, :func:`shortcut_residuals` gives the residual of the model's own shortcut bottlenecks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from yolo_nonlocal.tools.inference import input_size, load_model, network_input, nonlocal_layers, read_image

__all__ = [
    "QUERIES",
    "BlockUsage",
    "block_usage",
    "residual_parts",
    "query_distance",
    "shortcut_residuals",
    "reset_nonlocal_to_identity_",
    "disable_nonlocal_",
    "zero_nonlocal_gamma_",
    "replace_y_by_spatial_mean",
    "format_usage",
]

QUERIES = 64  # query positions sampled per image for query_distance (all of them when the grid is smaller)


@dataclass
class BlockUsage:
    """How far one NonLocal layer of a trained model is from the identity, and what kind of change it makes."""

    layer: int  # index of the layer in the model (its YAML row)
    mode: str
    channels: int
    gamma: float  # mean |BatchNorm weight| of W_z (0 at initialisation)
    residual: float  # mean over images of ||W_z y|| / ||x||
    residual_max: float  # largest per-image ||W_z y|| / ||x||
    images: int
    beta: float = 0.0  # mean |BatchNorm bias| of W_z (0 at initialisation)
    constant: float = 0.0  # mean over images of ||spatial mean of W_z y|| / ||x||
    varying: float = 0.0  # mean over images of ||W_z y - its spatial mean|| / ||x||
    query_distance: float | None = None  # mean cosine distance between the attention maps of different queries


def _spatial_dims(t) -> tuple[int, ...]:
    return tuple(range(2, t.dim()))


def _parts(x, out) -> tuple[float, float, float]:
    """(residual, constant, varying) of one image's block input ``x`` and output ``out`` (batch of one)."""
    x = x.float()
    r = out.float() - x
    c = r.mean(dim=_spatial_dims(r), keepdim=True).expand_as(r)
    nx = float(x.norm().clamp_min(1e-12))
    return float(r.norm()) / nx, float(c.norm()) / nx, float((r - c).norm()) / nx


def residual_parts(block, x) -> dict[str, float]:
    """``residual``, ``constant`` and ``varying`` (see the module docstring) of ``block`` on ``x`` (B=1).

    Runs ``block(x)``; meant for one block in eval mode (BatchNorm with running statistics).
    """
    import torch

    if x.shape[0] != 1:
        raise ValueError(f"residual_parts takes one sample (batch 1), got shape {tuple(x.shape)}")
    with torch.inference_mode():
        residual, constant, varying = _parts(x, block(x))
    return {"residual": residual, "constant": constant, "varying": varying}


def query_distance(block, x, queries: int | None = QUERIES, seed: int = 0) -> float | None:
    """Mean cosine distance 1 - cos(a_i, a_k) over pairs i != k of sampled query positions (B=1).

    ``a_i`` is row i of :meth:`NonLocal.pairwise_weights` (the normalised map of query i over the keys);
    ``queries`` positions are drawn without replacement (``seed``-ed), all of them when the grid has fewer
    or ``queries`` is None. Rows that are all zero (a ReLU map that looks nowhere) have no direction and are
    left out. None when fewer than two rows are left, or when the block computes no pairwise map.
    """
    import torch

    if x.shape[0] != 1:
        raise ValueError(f"query_distance takes one sample (batch 1), got shape {tuple(x.shape)}")
    if queries is not None and queries < 2:
        raise ValueError(f"queries={queries} must be at least 2 (a distance needs a pair)")
    pairwise = getattr(block, "pairwise_weights", None)
    if pairwise is None:
        return None
    with torch.inference_mode():
        try:
            maps = pairwise(x)[0]  # (N, N')
        except NotImplementedError:  # a block variant without a pairwise map
            return None
        n = maps.shape[0]
        if queries is not None and n > queries:
            g = torch.Generator().manual_seed(seed)
            maps = maps[torch.randperm(n, generator=g)[:queries].to(maps.device)]
        maps = maps.double()
        norms = maps.norm(dim=1)
        maps = maps[norms > 0] / norms[norms > 0, None]
        k = maps.shape[0]
        if k < 2:
            return None
        cos = maps @ maps.T
        off = cos.sum() - cos.diagonal().sum()
        return float(1.0 - off / (k * (k - 1)))


def _image_list(source: str | Path | Sequence[str | Path], max_images: int | None) -> list[Path]:
    from yolo_nonlocal.utils.images import image_paths

    if isinstance(source, (str, Path)):
        paths = image_paths(source)
    else:
        paths = [Path(p) for p in source]
        if not paths:
            raise ValueError("source is an empty list of images")
    if max_images is not None and max_images < 0:
        raise ValueError(f"max_images={max_images} must be >= 0 (0 or None = every image)")
    return paths[:max_images] if max_images else paths


def _measure(model: Any, source, imgsz: int | None, max_images: int | None, blocks: bool, shortcuts: bool,
             queries: int | None = QUERIES):
    """One forward pass per image, recording for every NonLocal layer (``blocks``) its (residual, constant,
    varying, query distance) and for every shortcut bottleneck (``shortcuts``) its residual."""
    import torch

    net = load_model(model, "usage")
    imgsz = input_size(net, imgsz)
    layers = nonlocal_layers(net) if blocks else {}
    modules: dict[Any, Any] = dict(layers)
    if shortcuts:  # Ultralytics Bottleneck with its shortcut on (inside C2f / C3k2 / C3), by module name
        modules.update(
            {n: m for n, m in net.named_modules() if type(m).__name__ == "Bottleneck" and getattr(m, "add", False)}
        )
    paths = _image_list(source, max_images)
    records: dict[Any, list[tuple]] = {k: [] for k in modules}

    def hook(key, is_block: bool):
        def record(mod, args, out):
            x = args[0]
            parts = _parts(x, out)
            distance = query_distance(mod, x, queries) if is_block else None
            records[key].append((*parts, distance))

        return record

    handles = [m.register_forward_hook(hook(k, k in layers)) for k, m in modules.items()]
    try:
        with torch.inference_mode():
            for path in paths:
                net(network_input(net, read_image(path), imgsz)[0])
    finally:
        for h in handles:
            h.remove()
    return layers, records


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def block_usage(
    model: Any,
    source: str | Path | Sequence[str | Path],
    imgsz: int | None = None,
    max_images: int | None = 50,
    shortcuts: bool = False,
    queries: int | None = QUERIES,
) -> list[BlockUsage] | tuple[list[BlockUsage], dict[str, float]]:
    """Measure every NonLocal layer of ``model`` on the images of ``source``.

    ``model`` is a checkpoint path, a model YAML, an Ultralytics ``YOLO`` or its ``DetectionModel``;
    ``source`` an image, a folder of images or a list of image paths (the first ``max_images`` are used).
    Images are letterboxed as the detector sees them, at ``imgsz`` (default: the training size); ``queries``
    positions per image are sampled for :func:`query_distance`. Returns a list of :class:`BlockUsage`; with
    ``shortcuts=True``, that list and the :func:`shortcut_residuals` of the same forward passes.
    """
    layers, records = _measure(model, source, imgsz, max_images, blocks=True, shortcuts=shortcuts, queries=queries)
    if not layers:
        raise ValueError("the model has no NonLocal layer; pass a Non-local model (e.g. one trained from yolov8n-nl.yaml)")
    usage = []
    for i, m in layers.items():
        rec = records[i]
        bn = m.w_z[1]
        usage.append(
            BlockUsage(
                layer=i,
                mode=m.mode,
                channels=m.c1,
                gamma=float(bn.weight.detach().abs().mean()),
                residual=float(np.mean([r[0] for r in rec])),
                residual_max=float(np.max([r[0] for r in rec])),
                images=len(rec),
                beta=float(bn.bias.detach().abs().mean()),
                constant=float(np.mean([r[1] for r in rec])),
                varying=float(np.mean([r[2] for r in rec])),
                query_distance=_mean(r[3] for r in rec),
            )
        )
    if not shortcuts:
        return usage
    return usage, {n: float(np.mean([r[0] for r in v])) for n, v in records.items() if n not in layers}


def shortcut_residuals(
    model: Any,
    source: str | Path | Sequence[str | Path],
    imgsz: int | None = None,
    max_images: int | None = 50,
) -> dict[str, float]:
    """For scale: the same residual for the model's own shortcut bottlenecks (Ultralytics ``Bottleneck`` with
    its shortcut on, inside C2f / C3k2 / C3), mean over images, by module name. Empty when there are none."""
    _, records = _measure(model, source, imgsz, max_images, blocks=False, shortcuts=True)
    return {n: float(np.mean([r[0] for r in v])) for n, v in records.items()}


def _blocks(model: Any, what: str) -> list:
    import torch

    from yolo_nonlocal.nonlocal_block import NonLocal

    if not isinstance(model, torch.nn.Module):  # an Ultralytics YOLO is an nn.Module holding its network
        raise TypeError(f"{what} takes a torch nn.Module or an Ultralytics YOLO, got {type(model).__name__}")
    return [m for m in model.modules() if isinstance(m, NonLocal)]


def reset_nonlocal_to_identity_(model: Any) -> int:
    """Make every NonLocal block of ``model`` exactly the identity, in place; returns how many there were.

    Zeroes W_z's BatchNorm weight *and* bias (its state at initialisation), so z = x + 0 while theta, phi, g
    and the rest of the trained network are kept: the ablation "the trained model without its blocks".
    """
    import torch

    blocks = _blocks(model, "reset_nonlocal_to_identity_")
    with torch.no_grad():
        for m in blocks:
            m.w_z[1].weight.zero_()
            m.w_z[1].bias.zero_()
    return len(blocks)


disable_nonlocal_ = reset_nonlocal_to_identity_  # the earlier name (benchmarks/small_objects.py), same function


def zero_nonlocal_gamma_(model: Any) -> int:
    """Zero W_z's BatchNorm weight of every NonLocal block in place, keeping its bias; returns the count.

    In eval mode the block then gives z = x + beta: everything it computes from its input is gone, the learned
    per-channel constant stays. Against :func:`reset_nonlocal_to_identity_` this separates the attention's
    contribution from the bias's.
    """
    import torch

    blocks = _blocks(model, "zero_nonlocal_gamma_")
    with torch.no_grad():
        for m in blocks:
            m.w_z[1].weight.zero_()
    return len(blocks)


class _Hooks:
    """Removable forward hooks, usable as a context manager (``with replace_y_by_spatial_mean(model): ...``)."""

    def __init__(self, handles: list) -> None:
        self.handles = handles

    def __len__(self) -> int:
        return len(self.handles)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def __enter__(self) -> "_Hooks":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def replace_y_by_spatial_mean(model: Any) -> _Hooks:
    """Feed every NonLocal block's W_z the spatial mean of y instead of y, until the hooks are removed.

    z_i = x_i + W_z(mean_k y_k): each position gets the same context, so this removes only the query
    dependence of the attention and keeps everything else the block learned (its mean context, beta).
    Returns the hooks (``.remove()``, or use as a context manager); ``len()`` is the number of blocks.
    """

    def mean_y(module, args):
        y = args[0]
        return (y.mean(dim=_spatial_dims(y), keepdim=True).expand_as(y).contiguous(),)

    blocks = _blocks(model, "replace_y_by_spatial_mean")
    return _Hooks([m.w_z.register_forward_pre_hook(mean_y) for m in blocks])


def format_usage(usage: Iterable[BlockUsage]) -> str:
    """A Markdown table of :func:`block_usage`'s result (percentages of norm(x))."""
    from yolo_nonlocal.utils.tables import format_table, percent

    headers = [
        "layer", "mode", "channels", "mean abs(gamma)", "mean abs(beta)", "residual norm(W_z y)/norm(x)",
        "constant part", "position-varying part", "max residual", "query distance", "images",
    ]  # fmt: skip
    rows = [
        [
            u.layer, u.mode, u.channels, f"{u.gamma:.4f}", f"{u.beta:.4f}", percent(u.residual, digits=2) + "%",
            percent(u.constant, digits=2) + "%", percent(u.varying, digits=2) + "%",
            percent(u.residual_max, digits=2) + "%", "-" if u.query_distance is None else f"{u.query_distance:.4f}",
            u.images,
        ]  # fmt: skip
        for u in usage
    ]
    return format_table(headers, rows, markdown=True, align="><>>>>>>>>>")
