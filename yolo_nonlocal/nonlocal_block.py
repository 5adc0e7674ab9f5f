"""Non-local block (Wang, Girshick, Gupta, He, "Non-local Neural Networks", CVPR 2018, arXiv 1711.07971).

    y_i = 1 / C(x) * sum_j f(x_i, x_j) g(x_j)          z = W_z y + x

for every position i of a sequence (``dim=1``), an image (``dim=2``) or a clip (``dim=3``), with the paper's
four pairwise functions f and their normalisations C(x):

=====================  ==========================================  =========================
mode                   f(x_i, x_j)                                 C(x)
=====================  ==========================================  =========================
``embedded_gaussian``  exp(s * theta(x_i)^T phi(x_j))              sum_j f  (a softmax)
``gaussian``           exp(s * x_i^T x_j)                          sum_j f  (a softmax)
``dot_product``        theta(x_i)^T phi(x_j)                       N' (positions j)
``concatenation``      ReLU(w^T [theta(x_i); phi(x_j)])            N'
=====================  ==========================================  =========================

theta, phi and g are 1x1 (1x1x1) convolutions to ``c1 // reduction`` channels; W_z is a 1x1 convolution back
to ``c1`` channels followed by BatchNorm whose weight (gamma) starts at ``init_gamma``. The default 0 is the
paper's: a fresh block is exactly the identity and can be inserted into a trained network without changing
its output, but theta, phi and g then get exactly zero gradient until gamma has moved; a non-zero
``init_gamma`` (e.g. 1) gives up the exact identity so that they learn from the first step.

``init_attention`` (``embedded_gaussian`` only) says how the attention starts. ``"random"`` (default): theta
and phi Kaiming-initialised, as the paper's code and mmcv do, so each query starts with a random, often
sharply peaked map; a key it barely weights gets a gradient in proportion to that weight, so a cue it does
not look at from the start may never be found. ``"uniform"``: phi starts at zero, every logit is 0 and every
query's map is exactly uniform at insertion (y_i is the mean of g over the positions, GCNet's global
context); phi gets its gradient through theta from the first step and the maps become query-dependent as
they learn. W_z's init (``init_gamma``) is independent of it.

``sub_sample`` max-pools phi and g (and x for ``gaussian``) by 2 in space ((1, 2, 2) for clips), in ceil
mode, so odd sizes keep their last row and column. The softmax scale s is 1/sqrt(d) by default, d the
channels of the dot product, as the official code (facebookresearch/video-nonlocal-net, ``USE_SCALE``) does;
``scale=1.0`` gives the unscaled form most PyTorch copies use, which overflows under fp16 at large activations.

Siblings in the same harness: :mod:`yolo_nonlocal.context_block` (GCNet's query-independent global context
block) and :mod:`yolo_nonlocal.local_block` (a local control with this block's parameter count).

Implementation:

- softmax modes run on :func:`yolo_nonlocal.ops.softmax_attention.softmax_attention`, whose ``auto`` backend
  takes the fused ``scaled_dot_product_attention`` kernels (flash / memory-efficient, memory linear in N
  instead of N x N') on GPUs, in export and for large CPU maps, and the explicit float32 product for small
  CPU maps, where it measured faster; that module's docstring gives the policy and the measurements.
- ``dot_product`` never builds the N x N' matrix: theta (phi^T g) / N' is exact and linear in N.
- ``concatenation`` never builds the 2C' x N x N' tensor: w^T [theta_i; phi_j] = a_i + b_j, so only an
  N x N' matrix of scalars exists.
- the small reductions that sum over N' positions run in float32, so autocast (fp16/bf16) stays finite.

Shapes: input and output (B, c1, L) for ``dim=1``, (B, c1, H, W) for ``dim=2``, (B, c1, T, H, W) for ``dim=3``.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from yolo_nonlocal.ops.softmax_attention import BACKENDS, ONNX_MIN_OPSET, select_backend, softmax_attention

__all__ = [
    "NonLocal", "NonLocal1d", "NonLocal2d", "NonLocal3d", "NonLocalConfigError", "MODES", "BACKENDS", "ONNX_MIN_OPSET",
    "check_positive_int", "check_init_gamma", "INIT_ATTENTIONS", "UNIFORM_ATTENTION_MODES",
]

INIT_ATTENTIONS = ("random", "uniform")  # how the attention maps start (``init_attention``)
UNIFORM_ATTENTION_MODES = ("embedded_gaussian",)  # the modes with a softmax over theta^T phi: "uniform" zeroes phi

MODES = ("embedded_gaussian", "gaussian", "dot_product", "concatenation")
SOFTMAX_MODES = ("embedded_gaussian", "gaussian")

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_POOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
_POOL_KERNEL = {1: 2, 2: (2, 2), 3: (1, 2, 2)}


class NonLocalConfigError(ValueError):
    """A block of this package (``NonLocal``, ``ContextBlock``, ``LocalBlock``) cannot be built with the arguments
    given; the message starts with the class, names the argument and says how to fix it."""


def check_positive_int(owner: str, name: str, value) -> int:
    """``value`` if it is a positive int (not a bool), else :class:`NonLocalConfigError` naming ``owner.name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise NonLocalConfigError(f"{owner}: {name} must be a positive int, got {value!r}")
    return value


def check_init_gamma(owner: str, value) -> float:
    """``init_gamma`` as a float if it is a finite number, else :class:`NonLocalConfigError` for ``owner``.

    Every block of the package reads it the same way: 0 makes a fresh block the exact identity (the papers'
    choice); a non-zero value gives that up so that every layer of the block gets a gradient at the first step.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise NonLocalConfigError(
            f"{owner}: init_gamma must be a finite number (0 is the identity, 1 lets the block learn at once), "
            f"got {value!r}"
        )
    return float(value)


def check_init_attention(owner: str, value, mode: str) -> str:
    """``init_attention`` if it is one of :data:`INIT_ATTENTIONS` and fits ``mode``, else :class:`NonLocalConfigError`."""
    if value not in INIT_ATTENTIONS:
        raise NonLocalConfigError(f"{owner}: init_attention must be one of {', '.join(map(repr, INIT_ATTENTIONS))}, got {value!r}")
    if value == "uniform" and mode not in UNIFORM_ATTENTION_MODES:
        raise NonLocalConfigError(
            f"{owner}: init_attention='uniform' zeroes phi of the embedded_gaussian softmax; mode {mode!r} has "
            + ("no phi" if mode == "gaussian" else "no softmax (a zero phi would make y zero, not uniform)")
            + ": use mode='embedded_gaussian' or init_attention='random'"
        )
    return value


def _float32(t: torch.Tensor):
    """A region where autocast is off, so that explicit float32 products stay float32."""
    return torch.autocast(device_type=t.device.type, enabled=False)


class NonLocal(nn.Module):
    """Non-local block z = W_z y + x, y_i = 1/C(x) sum_j f(x_i, x_j) g(x_j) (arXiv 1711.07971).

    Args:
        c1: input (and output) channels.
        reduction: bottleneck factor; theta, phi and g have ``c1 // reduction`` channels (paper: 2).
        mode: pairwise function, one of ``MODES``.
        sub_sample: max-pool phi and g (and x in ``gaussian`` mode) by 2 in space, cutting the pairwise cost 4x.
        dim: 1 for (B, C, L), 2 for (B, C, H, W), 3 for (B, C, T, H, W).
        scale: softmax temperature s for the softmax modes; None means 1/sqrt(d) with d the channels of the
            dot product (``c1 // reduction``, or ``c1`` in ``gaussian`` mode). Not used by the other modes.
        inter_channels: bottleneck channels, overriding ``reduction``.
        init_gamma: initial weight of W_z's BatchNorm. 0 (default, the paper's) makes a fresh block the exact
            identity; a non-zero value lets theta, phi and g learn from the first step.
        init_attention: ``"random"`` (default: Kaiming theta and phi, the paper's code) or ``"uniform"`` (phi
            zero: every query's attention is uniform at insertion). ``embedded_gaussian`` only.
        device, dtype: where and in what dtype the parameters are created, as torch layers take them.
        backend: softmax modes only. ``auto`` (the fastest measured path per device and size), ``sdpa``
            (fused attention kernels), ``explicit`` (matmul + softmax in float32) or ``chunked`` (query-chunked
            matrix products with a recomputing backward, memory linear in N; see ``chunked_attention``).

    Shape:
        x: (B, c1, *spatial) with ``len(spatial) == dim``; output: same shape.
    """

    # Blocks pickled before the option existed have no instance attribute; they read this class default
    # (the value they were built with), so that repr, forward and reset_parameters keep working.
    init_gamma: float = 0.0
    init_attention: str = "random"

    def __init__(
        self,
        c1: int,
        reduction: int = 2,
        mode: str = "embedded_gaussian",
        sub_sample: bool = False,
        dim: int = 2,
        scale: Optional[float] = None,
        inter_channels: Optional[int] = None,
        backend: str = "auto",
        init_gamma: float = 0.0,
        init_attention: str = "random",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        check_positive_int("NonLocal", "c1 (input channels)", c1)
        if mode not in MODES:
            raise NonLocalConfigError(f"NonLocal: unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        if dim not in _CONV:
            raise NonLocalConfigError(f"NonLocal: dim must be 1, 2 or 3 (sequence, image, clip), got {dim!r}")
        if not isinstance(sub_sample, bool):
            raise NonLocalConfigError(f"NonLocal: sub_sample must be True or False, got {sub_sample!r}")
        if backend not in BACKENDS:
            raise NonLocalConfigError(f"NonLocal: unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        if inter_channels is None:
            check_positive_int("NonLocal", "reduction", reduction)
            inter_channels = c1 // reduction
            if inter_channels < 1:
                raise NonLocalConfigError(
                    f"NonLocal: reduction={reduction} leaves 0 bottleneck channels for c1={c1}; "
                    f"use a reduction of at most {c1}"
                )
        else:
            check_positive_int("NonLocal", "inter_channels", inter_channels)
        init_gamma = check_init_gamma("NonLocal", init_gamma)
        check_init_attention("NonLocal", init_attention, mode)
        if scale is not None:
            if mode not in SOFTMAX_MODES:
                raise NonLocalConfigError(f"NonLocal: scale applies to the softmax modes {SOFTMAX_MODES}, not to {mode!r}")
            if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not scale > 0:
                raise NonLocalConfigError(f"NonLocal: scale must be a positive number, got {scale!r}")

        self.c1, self.inter_channels, self.mode = c1, inter_channels, mode
        self.sub_sample, self.dim, self.backend = sub_sample, dim, backend
        self.init_gamma, self.init_attention = init_gamma, init_attention
        kw = {"device": device, "dtype": dtype}
        d = c1 if mode == "gaussian" else inter_channels
        self.scale = float(scale) if scale is not None else (1.0 / math.sqrt(d) if mode in SOFTMAX_MODES else None)

        conv = _CONV[dim]
        self.g = conv(c1, inter_channels, kernel_size=1, **kw)
        self.theta = None if mode == "gaussian" else conv(c1, inter_channels, kernel_size=1, **kw)
        self.phi = None if mode == "gaussian" else conv(c1, inter_channels, kernel_size=1, **kw)
        # concatenation: w^T [theta_i; phi_j], stored as the 2C' -> 1 projection mmcv and the paper use
        self.concat_project = conv(2 * inter_channels, 1, kernel_size=1, bias=False, **kw) if mode == "concatenation" else None
        self.pool = _POOL[dim](kernel_size=_POOL_KERNEL[dim], ceil_mode=True) if sub_sample else None
        self.w_z = nn.Sequential(conv(inter_channels, c1, kernel_size=1, **kw), _BN[dim](c1, **kw))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal embeddings (fan-out, as mmcv); W_z's BN weight is ``init_gamma`` and its bias zero.

        With ``init_gamma=0`` (the paper's choice, the default) the block is exactly the identity at insertion,
        but theta, phi and g then get zero gradient until the BN weight has moved away from zero.
        """
        for m in (self.g, self.theta, self.phi, self.concat_project, self.w_z[0]):
            if m is not None:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.reset_attention()
        nn.init.constant_(self.w_z[1].weight, self.init_gamma)
        nn.init.zeros_(self.w_z[1].bias)

    def reset_attention(self) -> None:
        """Start phi as ``init_attention`` says: zero for ``"uniform"`` (every logit theta_i^T phi_j is 0, a
        uniform softmax); for ``"random"`` a Kaiming draw where phi is zero, and the random phi it holds left
        alone otherwise (no random state is used)."""
        if self.phi is None:
            return
        with torch.no_grad():
            if self.init_attention == "uniform":
                nn.init.zeros_(self.phi.weight)
                if self.phi.bias is not None:
                    nn.init.zeros_(self.phi.bias)
            elif not self.phi.weight.is_meta and not bool(self.phi.weight.any()):  # meta: no values to keep
                nn.init.kaiming_normal_(self.phi.weight, mode="fan_out", nonlinearity="relu")

    def extra_repr(self) -> str:
        s = f"c1={self.c1}, inter_channels={self.inter_channels}, mode={self.mode!r}, sub_sample={self.sub_sample}"
        s += f", dim={self.dim}"
        if self.init_gamma:
            s += f", init_gamma={self.init_gamma:g}"
        if self.init_attention != "random":
            s += f", init_attention={self.init_attention!r}"
        if self.scale is not None:
            s += f", scale={self.scale:.4g}"
        return s + (f", backend={self.backend!r}" if self.backend != "auto" else "")

    # ------------------------------------------------------------------------------------------ shapes
    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != self.dim + 2:
            names = {1: "(B, C, L)", 2: "(B, C, H, W)", 3: "(B, C, T, H, W)"}[self.dim]
            raise ValueError(
                f"NonLocal(dim={self.dim}) expects a {self.dim + 2}-D input {names}, got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.c1:
            raise ValueError(f"NonLocal(c1={self.c1}) got an input with {x.shape[1]} channels (shape {tuple(x.shape)})")

    def keys_shape(self, spatial: Sequence[int]) -> tuple:
        """Spatial shape of phi and g (the key grid of the attention maps) for an input of ``spatial`` size:
        halved in space (ceil) when sub-sampling; time is kept for clips."""
        if not self.sub_sample:
            return tuple(int(s) for s in spatial)
        kernel = _POOL_KERNEL[self.dim]
        kernel = (kernel,) if isinstance(kernel, int) else kernel
        return tuple(-(-int(s) // k) for s, k in zip(spatial, kernel))

    def attention_macs(self, spatial: Sequence[int]) -> int:
        """Multiply-accumulates per sample of the pairwise products, which conv/BN FLOP counters miss.

        Softmax modes: theta^T phi and the weighted sum of g, N * N' * (d + C'). ``dot_product``:
        phi^T g and theta (phi^T g), (N + N') * C'^2. ``concatenation``: the projections a_i, b_j and the
        weighted sum of g, (N + N') * C' + N * N' * C'. (Pooling, softmax and additions are not MACs.)
        """
        spatial = tuple(int(s) for s in spatial)
        if len(spatial) != self.dim:
            raise ValueError(f"NonLocal(dim={self.dim}).attention_macs expects {self.dim} spatial sizes, got {spatial}")
        n, n_keys, c = math.prod(spatial), math.prod(self.keys_shape(spatial)), self.inter_channels
        if self.mode in SOFTMAX_MODES:
            d = self.c1 if self.mode == "gaussian" else c
            return n * n_keys * (d + c)
        if self.mode == "dot_product":
            return (n + n_keys) * c * c
        return (n + n_keys) * c + n * n_keys * c

    # ------------------------------------------------------------------------------------------ compute
    def _embed(self, x: torch.Tensor):
        """Queries (B, N, d), keys (B, N', d) and values (B, N', C'), channels last (strided views)."""
        g = self.g(x)
        if self.mode == "gaussian":
            q, k = x, x
        else:
            q, k = self.theta(x), self.phi(x)
        if self.pool is not None:
            g, k = self.pool(g), self.pool(k)
        return q.flatten(2).transpose(1, 2), k.flatten(2).transpose(1, 2), g.flatten(2).transpose(1, 2)

    def _softmax_backend(self, q: torch.Tensor, k: torch.Tensor) -> str:
        return select_backend(q, k, self.backend)

    def _softmax_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return softmax_attention(q, k, v, self.scale, self.backend)

    def _concat_terms(self, q: torch.Tensor, k: torch.Tensor):
        """a_i = w_theta^T theta_i (B, N, 1) and b_j = w_phi^T phi_j (B, 1, N')."""
        w = self.concat_project.weight.flatten(1)  # (1, 2C')
        c = self.inter_channels
        a = F.linear(q, w[:, :c])
        b = F.linear(k, w[:, c:]).transpose(1, 2)
        return a, b

    def pairwise_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised pairwise weights f(x_i, x_j) / C(x), shape (B, N, N'); rows of softmax modes sum to 1.

        Builds the N x N' matrix explicitly (in float32): meant for inspecting and drawing small inputs.
        """
        self._check_input(x)
        q, k, _ = self._embed(x)
        with _float32(q):
            q, k = q.float(), k.float()
            if self.mode in SOFTMAX_MODES:
                return (torch.bmm(q, k.transpose(1, 2)) * self.scale).softmax(dim=-1)
            if self.mode == "dot_product":
                return torch.bmm(q, k.transpose(1, 2)) / k.shape[1]
            a, b = self._concat_terms(q, k)
            return F.relu(a + b) / k.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        q, k, v = self._embed(x)
        n_keys = k.shape[1]
        if self.mode in SOFTMAX_MODES:
            y = self._softmax_attention(q, k, v)
        elif self.mode == "dot_product":
            # theta (phi^T g) / N': exact, linear in N; the sums over N' positions run in float32
            with _float32(q):
                kv = torch.bmm(k.float().transpose(1, 2), v.float()) / n_keys
                y = torch.bmm(q.float(), kv).to(v.dtype)
        else:
            with _float32(q):
                a, b = self._concat_terms(q.float(), k.float())
                y = torch.bmm(F.relu(a + b) / n_keys, v.float()).to(v.dtype)
        y = y.transpose(1, 2).reshape(x.shape[0], self.inter_channels, *x.shape[2:])
        return x + self.w_z(y)  # x first: the sum keeps x's memory layout, so later layers round as without the block


class NonLocal1d(NonLocal):
    """Non-local block for sequences (B, C, L); see :class:`NonLocal`."""

    def __init__(self, c1: int, reduction: int = 2, mode: str = "embedded_gaussian", sub_sample: bool = False, **kwargs):
        super().__init__(c1, reduction, mode, sub_sample, dim=1, **kwargs)


class NonLocal2d(NonLocal):
    """Non-local block for images (B, C, H, W); see :class:`NonLocal`."""

    def __init__(self, c1: int, reduction: int = 2, mode: str = "embedded_gaussian", sub_sample: bool = False, **kwargs):
        super().__init__(c1, reduction, mode, sub_sample, dim=2, **kwargs)


class NonLocal3d(NonLocal):
    """Non-local block for clips (B, C, T, H, W); sub-sampling pools (1, 2, 2); see :class:`NonLocal`."""

    def __init__(self, c1: int, reduction: int = 2, mode: str = "embedded_gaussian", sub_sample: bool = False, **kwargs):
        super().__init__(c1, reduction, mode, sub_sample, dim=3, **kwargs)
