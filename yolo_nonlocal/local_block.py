"""A same-place LOCAL control for the Non-local block: a residual bottleneck with the block's parameter count.

    z = x + BN_3(W_3 SiLU(BN_2(W_2 SiLU(BN_1(W_1 x)))))    W_1: 1x1, c1 -> m1; W_2: k x k, m1 -> m2; W_3: 1x1, m2 -> c1

What it controls for. Inserting a Non-local block adds two things at once: capacity (parameters, one more
residual stage at that place) and reach (every output position sees the whole map). A gain from the block
alone cannot say which of the two helped. This block adds the same capacity at the same place with the same
residual form and the same initialisation, but no long-range reach: its receptive field grows by ``k - 1``
cells of the block's input (one k x k convolution), so any position sees only its k x k neighbourhood. If a
Non-local arm beats this arm, the gain comes from context beyond the neighbourhood, not from the parameters.

How it is matched. The hidden widths (m1, m2) are chosen so that the parameter count (convolution weights,
no biases since each is followed by BatchNorm, plus the three BNs' weight and bias)

    P(m1, m2) = c1 m1 + k^2 m1 m2 + m2 c1 + 2 m1 + 2 m2 + 2 c1

matches that of ``NonLocal(c1, reduction, mode)`` (2 c1^2 + 4.5 c1 for the default embedded-Gaussian block
with reduction 2; the target is counted on a NonLocal built on the meta device, so it follows any change to
that block): of the pairs within 1% of it, the most nearly square one (m1 = m2 where possible), or the
closest pair if none is within 1%. Two widths instead of one make the integer steps fine enough: within 1%
for every mode and reduction <= 4 at c1 >= 64, and for reduction 2 at c1 >= 32 (exact at c1 = 64 with
m1 = m2 = 24, YOLOv8n's P3); within 5% at c1 >= 16 for reduction <= 4. Because every layer runs at stride 1,
the per-position multiply-accumulates of the convolutions equal their weight count, so they match the
Non-local block's 1x1 convolutions too (about 2 c1^2 per position).
What is not matched, and cannot be at equal parameters with local operations, is the Non-local block's
pairwise term (N x N' x (d + C') MACs, ``NonLocal.attention_macs``), which grows with the square of the map
size; read the FLOP columns of a comparison with that in mind. ``hidden=`` sets m1 = m2 by hand (e.g. to
match a FLOP budget instead).

Initialisation and ``init_gamma`` (same meaning as in :class:`yolo_nonlocal.nonlocal_block.NonLocal`): the
last BatchNorm's weight starts at ``init_gamma``. 0 (default) is the identity at insertion, with zero
gradient for W_1, W_2 and W_3 until that weight has moved; a non-zero value lets every layer learn from the
first step. Train the control with the same ``init_gamma`` as the Non-local arm it controls for.

SiLU is the activation of the YOLO networks these blocks are inserted into (Ultralytics' ``Conv``). The
convolutions are Kaiming-normal (fan-out), as the Non-local block's embeddings are.

Shapes: input and output (B, c1, H, W).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from yolo_nonlocal.nonlocal_block import (
    MODES,
    NonLocal,
    NonLocalConfigError,
    check_init_gamma,
    check_positive_int,
)

__all__ = ["LocalBlock", "MATCH_TOLERANCE", "local_block_parameters", "matched_hidden", "nonlocal_parameters"]


def nonlocal_parameters(c1: int, reduction: int = 2, mode: str = "embedded_gaussian") -> int:
    """Trainable parameters of ``NonLocal(c1, reduction, mode)``, counted on a copy built on the meta device.

    ``sub_sample``, ``scale`` and ``backend`` change no parameter, so they are not arguments.
    """
    block = NonLocal(c1, reduction, mode, device="meta")
    return sum(p.numel() for p in block.parameters())


MATCH_TOLERANCE = 0.01  # relative parameter mismatch below which the most nearly square widths are preferred


def local_block_parameters(c1: int, hidden: tuple[int, int], kernel_size: int = 3) -> int:
    """Trainable parameters of a :class:`LocalBlock` with widths ``hidden = (m1, m2)``: P(m1, m2) above."""
    m1, m2 = hidden
    return c1 * m1 + kernel_size**2 * m1 * m2 + m2 * c1 + 2 * m1 + 2 * m2 + 2 * c1


def matched_hidden(
    c1: int, reduction: int = 2, mode: str = "embedded_gaussian", kernel_size: int = 3
) -> tuple[int, int]:
    """The widths (m1, m2) whose :func:`local_block_parameters` matches :func:`nonlocal_parameters`.

    Of the pairs within :data:`MATCH_TOLERANCE` of the target, the one with the smallest |m1 - m2| (then the
    smallest mismatch); the closest pair when none is that close.
    """
    target = nonlocal_parameters(c1, reduction, mode)
    k2 = kernel_size**2
    pairs = []
    # P grows with both widths; with m2 >= 1, P >= m1 (c1 + k^2 + 2), which bounds m1
    for m1 in range(1, target // (c1 + k2 + 2) + 2):
        m2 = (target - (c1 + 2) * m1 - 2 * c1) / (k2 * m1 + c1 + 2)  # P(m1, m2) = target, solved for m2
        for m2 in {max(1, math.floor(m2)), max(1, math.ceil(m2))}:
            err = abs(local_block_parameters(c1, (m1, m2), kernel_size) - target) / target
            pairs.append((err, m1, m2))
    close = [p for p in pairs if p[0] <= MATCH_TOLERANCE]
    err, m1, m2 = min(close, key=lambda p: (abs(p[1] - p[2]), p[0])) if close else min(pairs)
    return m1, m2


class LocalBlock(nn.Module):
    """Residual 1x1 -> k x k -> 1x1 bottleneck with the parameter count of ``NonLocal(c1, reduction, mode)``.

    The local control of the Non-local block (see the module docstring for what it controls for and how it is
    matched): same place, same parameter count, same residual form and initialisation, no long-range reach.

    Args:
        c1: input (and output) channels.
        reduction, mode: the ``NonLocal`` block whose parameter count is matched (its ``reduction`` and
            ``mode``; defaults are NonLocal's), so a YAML row's ``[reduction, mode]`` carries over unchanged.
        hidden: one bottleneck width m1 = m2 = hidden, overriding the match.
        kernel_size: the middle convolution's size k (odd; 3 by default).
        init_gamma: initial weight of the last BatchNorm; 0 (default) is the exact identity at insertion.
        device, dtype: where and in what dtype the parameters are created, as torch layers take them.

    Shape:
        x: (B, c1, H, W); output: same shape.
    """

    def __init__(
        self,
        c1: int,
        reduction: int = 2,
        mode: str = "embedded_gaussian",
        hidden: Optional[int] = None,
        kernel_size: int = 3,
        init_gamma: float = 0.0,
        *,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        check_positive_int("LocalBlock", "c1 (input channels)", c1)
        check_positive_int("LocalBlock", "kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise NonLocalConfigError(
                f"LocalBlock: kernel_size must be odd so that the output keeps the input's size, got {kernel_size}; "
                f"use {kernel_size - 1} or {kernel_size + 1}"
            )
        check_positive_int("LocalBlock", "reduction", reduction)
        if mode not in MODES:
            raise NonLocalConfigError(
                f"LocalBlock: unknown mode {mode!r} of the NonLocal block to match; expected one of {', '.join(MODES)}"
            )
        if hidden is None:
            if c1 // reduction < 1:
                raise NonLocalConfigError(
                    f"LocalBlock: the NonLocal block to match, reduction={reduction} at c1={c1}, has 0 bottleneck "
                    f"channels; use a reduction of at most {c1}"
                )
            hidden = matched_hidden(c1, reduction, mode, kernel_size)
        else:
            check_positive_int("LocalBlock", "hidden", hidden)
            hidden = (hidden, hidden)
        init_gamma = check_init_gamma("LocalBlock", init_gamma)

        self.c1, self.hidden, self.kernel_size, self.init_gamma = c1, tuple(hidden), kernel_size, init_gamma
        m1, m2 = self.hidden
        kw = {"device": device, "dtype": dtype}
        self.cv1 = nn.Sequential(nn.Conv2d(c1, m1, 1, bias=False, **kw), nn.BatchNorm2d(m1, **kw), nn.SiLU())
        self.cv2 = nn.Sequential(
            nn.Conv2d(m1, m2, kernel_size, padding=kernel_size // 2, bias=False, **kw),
            nn.BatchNorm2d(m2, **kw),
            nn.SiLU(),
        )
        self.cv3 = nn.Sequential(nn.Conv2d(m2, c1, 1, bias=False, **kw), nn.BatchNorm2d(c1, **kw))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal (fan-out) convolutions, unit inner BNs, last BN weight ``init_gamma`` and bias 0."""
        for seq in (self.cv1, self.cv2, self.cv3):
            nn.init.kaiming_normal_(seq[0].weight, mode="fan_out", nonlinearity="relu")
            seq[1].reset_parameters()
        nn.init.constant_(self.cv3[1].weight, self.init_gamma)

    def extra_repr(self) -> str:
        s = f"c1={self.c1}, hidden={self.hidden[0]}x{self.hidden[1]}, kernel_size={self.kernel_size}"
        return s + (f", init_gamma={self.init_gamma:g}" if self.init_gamma else "")

    def attention_macs(self, spatial: Sequence[int]) -> int:
        """0: the block has no pairwise products; its convolutions are what FLOP counters already count.

        Same name and signature as ``NonLocal.attention_macs``, so a FLOP counter can treat all blocks alike.
        """
        spatial = tuple(int(s) for s in spatial)
        if len(spatial) != 2:
            raise ValueError(f"LocalBlock.attention_macs expects 2 spatial sizes (H, W), got {spatial}")
        return 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"LocalBlock expects a 4-D input (B, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.c1:
            raise ValueError(
                f"LocalBlock(c1={self.c1}) got an input with {x.shape[1]} channels (shape {tuple(x.shape)})"
            )
        return x + self.cv3(self.cv2(self.cv1(x)))  # x first: the sum keeps x's memory layout
