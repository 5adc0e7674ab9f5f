"""Global context block of GCNet (Cao, Xu, Lin, Wei, Hu, "GCNet: Non-local Networks Meet Squeeze-Excitation
Networks and Beyond", ICCV Workshops 2019, arXiv 1904.11492).

GCNet found that the attention maps of a trained Non-local block are nearly the same for every query
position, and replaced the N x N pairwise weights by one query-independent map:

    p_j = softmax_j(W_k x_j)                          context modelling (attention pooling, one logit map)
    c   = sum_j p_j x_j                               (B, C): the same global context for every position
    t   = W_v2 ReLU(LN(W_v1 c))                       transform: C -> C/r -> C bottleneck (1x1 convolutions)
    z_i = x_i + t                                     fusion by addition (``fusion="add"``, the paper's default)
    z_i = x_i * 2 sigmoid(t')                         fusion by multiplication (``"mul"``); ``"add_mul"`` both

W_k is a 1x1 convolution to one channel, LN a LayerNorm over the C/r bottleneck channels (the paper adds it
to ease optimisation of the two-layer transform), r the ``reduction`` (the paper's detection results use
16 and 4; 16, the lighter, is the default). ``pooling="avg"`` replaces the attention pooling by the plain
spatial mean, which is the paper's SE-like ablation and, in this package, the control for "is the learned
pooling map doing anything".

Cost: the pooling is one 1x1 convolution to a single channel plus an N x C weighted sum; the transform runs
on one vector per image. Compared with an embedded-Gaussian Non-local block at the same place there is no
N x N' term at all (:meth:`ContextBlock.attention_macs` gives the weighted sum, which conv FLOP counters miss).

Initialisation and ``init_gamma`` (same meaning as :class:`yolo_nonlocal.nonlocal_block.NonLocal`'s):
the last convolution of each transform is the block's output layer. With ``init_gamma=0`` (the default,
the paper's zero-init of the last layer) it is zero, so a fresh block is exactly the identity and can be
inserted into a trained network without changing its output; W_k and W_v1 then get exactly zero gradient
until the last layer has moved. A non-zero ``init_gamma`` draws the last layer's weight from
N(0, init_gamma^2 / (C/r)), so that the added context term has a spread of about ``init_gamma`` / sqrt(2) per
channel (the LayerNorm + ReLU hidden units have a mean square of 1/2) and every layer learns from the first
step.

Deviations from the official code (github.com/xvjiarui/GCNet, mmcv's ``ContextBlock``), each for a reason:

- multiplicative fusion uses 2 sigmoid(t') instead of sigmoid(t'): with the zero-initialised last layer the
  official form halves x at insertion, so a block inserted into a trained network would change its output;
  2 sigmoid(0) = 1 keeps the identity and still spans (0, 2).
- W_k has no bias: the softmax over positions is invariant to it, so it could never learn.
- the softmax and the weighted sum run in at least float32 (float64 stays float64), so autocast (fp16/bf16)
  stays finite on large maps.

Shapes: input and output (B, c1, H, W).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from yolo_nonlocal.nonlocal_block import NonLocalConfigError, check_init_gamma, check_positive_int

__all__ = ["ContextBlock", "FUSIONS", "POOLINGS"]

FUSIONS = ("add", "mul", "add_mul")
POOLINGS = ("att", "avg")


def _transform(c1: int, hidden: int, kw: dict) -> nn.Sequential:
    """W_v2 ReLU(LN(W_v1 c)) on the (B, C, 1, 1) context: the bottleneck C -> C/r -> C of the paper's Fig. 4d."""
    return nn.Sequential(
        nn.Conv2d(c1, hidden, kernel_size=1, **kw),
        nn.LayerNorm([hidden, 1, 1], **kw),
        nn.ReLU(),
        nn.Conv2d(hidden, c1, kernel_size=1, **kw),
    )


class ContextBlock(nn.Module):
    """GCNet's global context block: z = x + T(sum_j softmax_j(W_k x_j) x_j) (arXiv 1904.11492).

    Args:
        c1: input (and output) channels.
        reduction: bottleneck factor r of the transform, ``c1 // reduction`` hidden channels (paper: 16 or 4);
            at least 2 are needed, since a LayerNorm over one channel outputs a constant.
        fusion: ``"add"`` (paper's default, z = x + t), ``"mul"`` (z = x * 2 sigmoid(t')) or ``"add_mul"``
            (both, multiplication first; each has its own transform).
        pooling: ``"att"`` (attention pooling, the paper's) or ``"avg"`` (spatial mean, the SE-like ablation).
        init_gamma: 0 (default) zero-initialises the last layer of each transform, the exact identity at
            insertion; a non-zero value draws it from N(0, init_gamma^2 / hidden) so every layer learns at once.
        device, dtype: where and in what dtype the parameters are created, as torch layers take them.

    Shape:
        x: (B, c1, H, W); output: same shape.
    """

    def __init__(
        self,
        c1: int,
        reduction: int = 16,
        fusion: str = "add",
        pooling: str = "att",
        init_gamma: float = 0.0,
        *,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        check_positive_int("ContextBlock", "c1 (input channels)", c1)
        check_positive_int("ContextBlock", "reduction", reduction)
        if fusion not in FUSIONS:
            raise NonLocalConfigError(
                f"ContextBlock: unknown fusion {fusion!r}; expected one of {', '.join(FUSIONS)} (the paper's is add)"
            )
        if pooling not in POOLINGS:
            raise NonLocalConfigError(
                f"ContextBlock: unknown pooling {pooling!r}; expected att (attention pooling, the paper's) "
                "or avg (spatial mean)"
            )
        hidden = c1 // reduction
        if hidden < 2:
            raise NonLocalConfigError(
                f"ContextBlock: reduction={reduction} leaves {hidden} bottleneck channel(s) for c1={c1}, and a "
                f"LayerNorm needs at least 2 (over one channel it outputs a constant); "
                + (f"use a reduction of at most {c1 // 2}" if c1 >= 2 else "use a block on a layer with more channels")
            )
        init_gamma = check_init_gamma("ContextBlock", init_gamma)

        self.c1, self.reduction, self.hidden = c1, reduction, hidden
        self.fusion, self.pooling, self.init_gamma = fusion, pooling, init_gamma
        kw = {"device": device, "dtype": dtype}
        # W_k: one logit per position; no bias, the softmax over positions would cancel it
        self.mask = nn.Conv2d(c1, 1, kernel_size=1, bias=False, **kw) if pooling == "att" else None
        self.transform_mul = _transform(c1, hidden, kw) if fusion in ("mul", "add_mul") else None
        self.transform_add = _transform(c1, hidden, kw) if fusion in ("add", "add_mul") else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal (fan-in) W_k, default-initialised W_v1, unit LayerNorm, and the last layer of each
        transform zero (``init_gamma=0``) or N(0, init_gamma^2 / hidden) with a zero bias."""
        if self.mask is not None:
            nn.init.kaiming_normal_(self.mask.weight, mode="fan_in", nonlinearity="relu")
        for t in (self.transform_mul, self.transform_add):
            if t is None:
                continue
            t[0].reset_parameters()
            t[1].reset_parameters()
            last = t[3]
            if self.init_gamma:
                nn.init.normal_(last.weight, 0.0, abs(self.init_gamma) / math.sqrt(self.hidden))
            else:
                nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def extra_repr(self) -> str:
        s = f"c1={self.c1}, hidden={self.hidden}, fusion={self.fusion!r}, pooling={self.pooling!r}"
        return s + (f", init_gamma={self.init_gamma:g}" if self.init_gamma else "")

    # ------------------------------------------------------------------------------------------ shapes
    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"ContextBlock expects a 4-D input (B, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.c1:
            raise ValueError(
                f"ContextBlock(c1={self.c1}) got an input with {x.shape[1]} channels (shape {tuple(x.shape)})"
            )

    def attention_macs(self, spatial: Sequence[int]) -> int:
        """Multiply-accumulates per sample that conv/BN FLOP counters miss: the weighted sum sum_j p_j x_j,
        N * C for attention pooling (0 for ``avg``). W_k and the transform are convolutions and counted as such.

        Same name and signature as ``NonLocal.attention_macs``, so a FLOP counter can treat both alike.
        """
        spatial = tuple(int(s) for s in spatial)
        if len(spatial) != 2:
            raise ValueError(f"ContextBlock.attention_macs expects 2 spatial sizes (H, W), got {spatial}")
        return math.prod(spatial) * self.c1 if self.pooling == "att" else 0

    # ------------------------------------------------------------------------------------------ compute
    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The pooling weights p_j, shape (B, H*W), summing to 1 per image; the same for every query position.

        For ``pooling="avg"`` they are uniform, 1 / (H*W).
        """
        self._check_input(x)
        dt = torch.promote_types(x.dtype, torch.float32)
        n = x.shape[2] * x.shape[3]
        if self.mask is None:
            return torch.full((x.shape[0], n), 1.0 / n, dtype=dt, device=x.device)
        logits = self.mask(x).flatten(1)  # (B, N)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return logits.to(dt).softmax(dim=-1)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """The global context c = sum_j p_j x_j, shape (B, C, 1, 1), in x's dtype (summed in at least float32)."""
        self._check_input(x)
        b, c = x.shape[:2]
        dt = torch.promote_types(x.dtype, torch.float32)
        logits = None if self.mask is None else self.mask(x)  # under autocast if any: W_k runs as any conv does
        with torch.autocast(device_type=x.device.type, enabled=False):
            xs = x.flatten(2).to(dt)  # (B, C, N)
            if logits is None:
                ctx = xs.mean(dim=-1)
            else:
                p = logits.flatten(2).to(dt).softmax(dim=-1)  # (B, 1, N)
                ctx = torch.bmm(xs, p.transpose(1, 2)).squeeze(-1)  # (B, C)
        return ctx.to(x.dtype).view(b, c, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = self.context(x)
        out = x
        if self.transform_mul is not None:
            out = out * (2.0 * torch.sigmoid(self.transform_mul(ctx)))  # 2 sigmoid(0) = 1: identity at init
        if self.transform_add is not None:
            out = out + self.transform_add(ctx)  # x first: the sum keeps x's memory layout
        return out
