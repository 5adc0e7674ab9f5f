"""Offline synthetic small-object datasets in YOLO format, deterministic by seed.

Why: nothing can be downloaded where this package is tested, and a claim about what a Non-local block
does needs a task where it *should* matter next to one where it should not. Two generators:

``context``
    Tiny squares (``min_size``..``max_size`` px, default 6-16) of six colours scattered over a
    textured background. Whether a square is an object depends on distant image content:

    * ``rule="singleton"`` (default): only the square whose colour appears **exactly once** in the image
      is labelled (class ``singleton``); every other square has a twin of its colour at least
      ``imgsz/4`` away, so no local window decides it. A fraction ``p_negative`` of the images has no
      singleton at all, so "pick the most distinctive square" is not a solution.
    * ``rule="count"``: every square is labelled, and its class is how often its colour occurs in the
      image (``once``, ``twice``, ``thrice``) -- the same cue with dense supervision.

    The palette is the six permutations of three channel levels: every channel takes every level in
    exactly two colours and all colours have the same channel sum, so no single colour channel (nor
    brightness) separates them; two colours always differ in at least two channels. This closes the
    one-channel shortcut that earlier prototypes fell into (issue 5). Why it is a context task: a conv
    detector sees "which colours are present" through SPPF's max-pooling and the FPN, but max-pooling
    discards *how many* times a colour occurs, which is exactly the label; a Non-local block can
    compare a square with every other square of the image in one step.

``farcue`` (the positive control, issue 10)
    Wide strips (``imgsz`` x ``height``, default 1024 x 64) with 1-3 small light squares (the targets) and one
    larger square of one of two colours (the cue) near one end. Every target's class is the cue's colour
    (``orange_cue`` or ``blue_cue``, a fair coin per image drawn from its own stream, so nothing else in the
    image depends on it). ``rule="far"``: the targets are placed farther from the cue than the largest
    receptive-field reach of any output cell of ``rf_model`` (default yolov8n, computed from the model's
    layers by :mod:`yolo_nonlocal.data.receptive_field`) plus ``reach_slack`` (64 px by default, so that a
    conv-only arm with one more 3x3 layer at P5, such as the LocalBlock control, is capped too), counted
    from every anchor that can detect a target at IoU >= 0.5 or suppress such a detection in NMS; the
    generator asserts it for every image. No output cell of the baseline that can detect a target sees the
    cue, so whatever it trains, its class scores cannot depend on the rule: its AP is capped at the
    rule-blind level. ``rule="near"``: the same ingredients with the targets within the smallest reach of
    the P3 cells (asserted), so the rule is learnable by the baseline. ``counterfactual=True``: the same
    images with only the cue repainted in the other colour and the labels flipped (a model that uses the
    cue must follow it). Train and validate at ``imgsz`` = the strip width with ``rect=True`` (Ultralytics
    then keeps the strip shape instead of letterboxing it into a square); the data.yaml's ``train_args``
    say so.

``neutral``
    Tiny filled squares, disks and crosses (classes ``square``, ``disk``, ``cross``) in random colours,
    every object labelled: local appearance decides everything. The control set on which a Non-local
    block has nothing to add and should not hurt.

Images are lossless PNGs (JPEG would smear the colours of 6 px squares); image ``i`` of a split is
drawn from its own generator seeded by ``(seed, split, i)``, so it is the same whatever ``n_train`` or
``n_val`` is. Labels are computed from the drawn pixels (tight boxes). The written ``data.yaml`` has no
``path`` key, so Ultralytics resolves the splits next to it and the folder can be moved; it also carries
``synthetic`` (the generator settings) and ``train_args`` (augmentations that would break the rule --
mosaic, translate, scale, colour jitter -- switched off; ``yolo-nonlocal compare`` applies them).

Command line (``yolo-nonlocal make-dataset``, :mod:`yolo_nonlocal.cli.make_dataset`)::

    yolo-nonlocal make-dataset kind=context out=datasets/context n_train=800 n_val=300 imgsz=256 seed=0
    yolo-nonlocal make-dataset kind=neutral out=datasets/neutral
    yolo-nonlocal make-dataset kind=farcue rule=far out=datasets/farcue n_train=400 n_val=200 seed=0
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

__all__ = [
    "KINDS",
    "RULES",
    "FARCUE_RULES",
    "PALETTE",
    "CUE_COLOURS",
    "TARGET_COLOUR",
    "Sample",
    "generate_sample",
    "farcue_reach",
    "check_farcue_geometry",
    "GENERATOR_VERSION",
    "SyntheticConfig",
    "generate_image",
    "make_dataset",
]

GENERATOR_VERSION = 1
FARCUE_VERSION = 2  # farcue's own generator version (bumped when its images change; the others stay at 1)
KINDS = ("context", "neutral", "farcue")
RULES = ("singleton", "count")
FARCUE_RULES = ("far", "near")

# Six colours (RGB): the permutations of three levels. Each channel takes each level in exactly two
# colours, every colour sums to the same value, and two different colours differ in >= 2 channels.
_LEVELS = (225, 135, 45)
PALETTE: tuple[tuple[int, int, int], ...] = (
    (_LEVELS[0], _LEVELS[1], _LEVELS[2]),
    (_LEVELS[0], _LEVELS[2], _LEVELS[1]),
    (_LEVELS[1], _LEVELS[0], _LEVELS[2]),
    (_LEVELS[1], _LEVELS[2], _LEVELS[0]),
    (_LEVELS[2], _LEVELS[0], _LEVELS[1]),
    (_LEVELS[2], _LEVELS[1], _LEVELS[0]),
)

# farcue: the two cue colours (two palette colours with equal channel sums, differing in two channels) and
# the targets' colour, the same for both classes.
CUE_COLOURS: tuple[tuple[int, int, int], ...] = (PALETTE[0], PALETTE[5])
TARGET_COLOUR: tuple[int, int, int] = (235, 235, 235)

_CLASS_NAMES = {
    ("farcue", "far"): ["orange_cue", "blue_cue"],
    ("farcue", "near"): ["orange_cue", "blue_cue"],
    ("context", "singleton"): ["singleton"],
    ("context", "count"): ["once", "twice", "thrice"],
    ("neutral", None): ["square", "disk", "cross"],
}

# Augmentations that cut out or alter the long-range cue (or, for the neutral set, would make the
# control differ from the context run). Passed to both models by `yolo-nonlocal compare`.
TRAIN_ARGS = {
    "mosaic": 0.0,
    "close_mosaic": 0,
    "mixup": 0.0,
    "cutmix": 0.0,
    "copy_paste": 0.0,
    "translate": 0.0,
    "scale": 0.0,
    "degrees": 0.0,
    "shear": 0.0,
    "perspective": 0.0,
    "hsv_h": 0.0,
    "hsv_s": 0.0,
    "hsv_v": 0.0,
}

# farcue: Ultralytics keeps the strip's shape only with rect=True; imgsz must be the strip's width so no
# resize changes the distances the receptive-field assertion was made in.
FARCUE_TRAIN_ARGS = {**TRAIN_ARGS, "rect": True}

_CUE_SIZE = (20, 28)  # farcue: the cue square's side, drawn uniformly in this range (px)
_CUE_INSET = (2, 18)  # farcue: the cue's distance from its end of the strip (px)
_SPLIT_CODE = {"train": 0, "val": 1}
_KIND_CODE = {"context": 0, "neutral": 1, "farcue": 2}
_NEW_FIELDS = {"height": None, "counterfactual": False, "rf_model": None, "reach_slack": None}  # left out of settings() when unset
_FAR_SLACK = 1.0  # px beyond the reach the far targets keep (tests lower it to show the assertion fires)
_NEAR_SPAN = 160  # near rule: targets start within this many px of the cue's edge


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that determines a generated dataset (it is written to data.yaml as ``synthetic``)."""

    kind: str = "context"
    rule: str | None = "singleton"  # context: singleton|count; farcue: far|near; neutral: None
    n_train: int = 800
    n_val: int = 300
    imgsz: int | None = None  # context/neutral: the square side (default 256); farcue: the strip width (1024)
    seed: int = 0
    min_size: int = 6
    max_size: int = 16
    p_negative: float = 0.1  # context/singleton: share of images without a singleton
    version: int | None = None  # default: GENERATOR_VERSION (context, neutral) or FARCUE_VERSION (farcue)
    height: int | None = None  # farcue: the strip height (default 64)
    counterfactual: bool = False  # farcue: repaint the cue in the other colour and flip the labels
    rf_model: str | None = None  # farcue: the baseline whose reach the cue must exceed (default yolov8n.yaml)
    reach_slack: float | None = None  # farcue/far: px kept beyond rf_model's reach (default 64: two P5 cells)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} is not supported; use one of {', '.join(KINDS)}")
        if self.imgsz is None:
            object.__setattr__(self, "imgsz", 1024 if self.kind == "farcue" else 256)
        if self.version is None:
            object.__setattr__(self, "version", FARCUE_VERSION if self.kind == "farcue" else GENERATOR_VERSION)
        if self.kind == "farcue":
            self._check_farcue()
        elif self.height is not None or self.counterfactual or self.rf_model is not None or self.reach_slack is not None:
            raise ValueError("height=, counterfactual=, rf_model= and reach_slack= apply to kind=farcue only")
        if self.kind == "context" and self.rule not in RULES:
            raise ValueError(f"rule={self.rule!r} is not supported for kind=context; use one of {', '.join(RULES)}")
        if self.kind == "neutral" and self.rule is not None:
            raise ValueError("rule= applies to kind=context and kind=farcue only; leave it out for kind=neutral")
        for name in ("n_train", "n_val"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1 (Ultralytics needs images in both splits)")
        if self.kind != "farcue" and not 128 <= self.imgsz <= 1024:
            raise ValueError(f"imgsz={self.imgsz} must be within 128..1024 (the task is designed for 256-320 px)")
        if not 4 <= self.min_size <= self.max_size <= 24:
            raise ValueError(
                f"object sizes min_size={self.min_size}, max_size={self.max_size} must satisfy 4 <= min_size <= max_size <= 24"
            )
        if not 0.0 <= self.p_negative < 1.0:
            raise ValueError(f"p_negative={self.p_negative} must be within [0, 1)")

    def _check_farcue(self) -> None:
        if self.rule not in FARCUE_RULES:
            raise ValueError(f"rule={self.rule!r} is not supported for kind=farcue; use one of {', '.join(FARCUE_RULES)}")
        if self.height is None:
            object.__setattr__(self, "height", 64)
        if self.rf_model is None:
            object.__setattr__(self, "rf_model", "yolov8n.yaml")
        if self.reach_slack is None:
            object.__setattr__(self, "reach_slack", 64.0)
        if not 0 <= float(self.reach_slack) <= 1024:
            raise ValueError(f"reach_slack={self.reach_slack} must be within 0..1024 px")
        if not isinstance(self.counterfactual, bool):
            raise ValueError(f"counterfactual={self.counterfactual!r} must be True or False")
        if not (512 <= self.imgsz <= 4096 and self.imgsz % 32 == 0):
            raise ValueError(f"imgsz={self.imgsz} (the strip width) must be a multiple of 32 within 512..4096")
        if not (32 <= self.height <= 256 and self.height % 32 == 0):
            raise ValueError(f"height={self.height} must be a multiple of 32 within 32..256")
        if _CUE_SIZE[1] + 4 > self.height:
            raise ValueError(f"height={self.height} cannot hold the {_CUE_SIZE[1]} px cue")

    def settings(self) -> dict:
        """The settings written to data.yaml (the farcue-only fields are left out for the other kinds, so
        datasets generated before they existed keep matching)."""
        d = asdict(self)
        for k, default in _NEW_FIELDS.items():
            if self.kind != "farcue" and d.get(k) == default:
                d.pop(k)
        return d

    @property
    def width(self) -> int:
        return int(self.imgsz)

    @property
    def image_height(self) -> int:
        return int(self.height if self.kind == "farcue" else self.imgsz)

    @property
    def names(self) -> list[str]:
        return list(_CLASS_NAMES[(self.kind, self.rule if self.kind in ("context", "farcue") else None)])


def _background(rng: np.random.Generator, imgsz: int) -> np.ndarray:
    """Low-saturation textured background (RGB uint8): smooth blotches, grey clutter and pixel noise."""
    import cv2

    grid = rng.integers(70, 175, size=(6, 6, 1)).astype(np.float32)
    tint = rng.normal(0.0, 6.0, size=(6, 6, 3)).astype(np.float32)  # small per-channel drift: stays greyish
    low = cv2.resize(grid + tint, (imgsz, imgsz), interpolation=cv2.INTER_CUBIC)
    img = low + rng.normal(0.0, 5.0, size=(imgsz, imgsz, 3)).astype(np.float32)
    for _ in range(int(rng.integers(2, 7))):  # grey clutter: large, low-saturation shapes
        w, h = (int(v) for v in rng.integers(20, imgsz // 3, size=2))
        x0, y0 = int(rng.integers(0, imgsz - w)), int(rng.integers(0, imgsz - h))
        grey = float(rng.integers(60, 190))
        img[y0 : y0 + h, x0 : x0 + w] = 0.5 * img[y0 : y0 + h, x0 : x0 + w] + 0.5 * grey
    return np.clip(img, 0, 255).astype(np.uint8)


def _place(
    rng: np.random.Generator,
    sizes: list[int],
    groups: list[int],
    imgsz: int,
    min_group_dist: float,
    tries: int = 400,
) -> list[tuple[int, int]] | None:
    """Top-left corners for squares of ``sizes``: no overlap (2 px gap), same-group centres >= min_group_dist apart."""
    placed: list[tuple[int, int, int, int]] = []  # x0, y0, size, group
    margin = 2
    for s, g in zip(sizes, groups):
        for _ in range(tries):
            x0, y0 = (int(v) for v in rng.integers(margin, imgsz - s - margin, size=2))
            ok = True
            for px, py, ps, pg in placed:
                if x0 < px + ps + 2 and px < x0 + s + 2 and y0 < py + ps + 2 and py < y0 + s + 2:
                    ok = False
                    break
                if pg == g and np.hypot(x0 + s / 2 - px - ps / 2, y0 + s / 2 - py - ps / 2) < min_group_dist:
                    ok = False
                    break
            if ok:
                placed.append((x0, y0, s, g))
                break
        else:
            return None
    return [(x, y) for x, y, _, _ in placed]


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight pixel box (x0, y0, x1, y1 exclusive) of a boolean mask."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _context_image(rng: np.random.Generator, cfg: SyntheticConfig) -> tuple[np.ndarray, list[tuple[int, tuple]], list[tuple]]:
    img = _background(rng, cfg.imgsz)
    n_colours = len(PALETTE)
    while True:
        k = int(rng.integers(3, 6))  # colours present
        colours = [int(c) for c in rng.permutation(n_colours)[:k]]
        if cfg.rule == "singleton":
            counts = [int(rng.integers(2, 4)) for _ in colours]
            if rng.random() >= cfg.p_negative:
                counts[0] = 1  # colours are in random order, so the singleton colour is random too
        else:  # count
            counts = [int(rng.integers(1, 4)) for _ in colours]
        groups = [c for c, n in zip(colours, counts) for _ in range(n)]
        sizes = [int(rng.integers(cfg.min_size, cfg.max_size + 1)) for _ in groups]
        order = rng.permutation(len(groups))
        groups, sizes = [groups[i] for i in order], [sizes[i] for i in order]
        corners = _place(rng, sizes, groups, cfg.imgsz, min_group_dist=cfg.imgsz / 4)
        if corners is not None:
            break
    count_of = dict(zip(colours, counts))
    objects, candidates = [], []
    for (x0, y0), s, g in zip(corners, sizes, groups):
        img[y0 : y0 + s, x0 : x0 + s] = PALETTE[g]
        box = (x0, y0, x0 + s, y0 + s)
        candidates.append(box)
        if cfg.rule == "singleton":
            if count_of[g] == 1:
                objects.append((0, box))
        else:
            objects.append((count_of[g] - 1, box))
    return img, objects, candidates


def _neutral_image(rng: np.random.Generator, cfg: SyntheticConfig) -> tuple[np.ndarray, list[tuple[int, tuple]], list[tuple]]:
    import cv2

    img = _background(rng, cfg.imgsz)
    n = int(rng.integers(5, 16))
    while True:
        sizes = [int(rng.integers(cfg.min_size, cfg.max_size + 1)) for _ in range(n)]
        corners = _place(rng, sizes, list(range(n)), cfg.imgsz, min_group_dist=0.0)
        if corners is not None:
            break
    objects = []
    for (x0, y0), s in zip(corners, sizes):
        cls = int(rng.integers(0, 3))
        hue = int(rng.integers(0, 180))
        colour = cv2.cvtColor(np.uint8([[[hue, 200, int(rng.integers(150, 256))]]]), cv2.COLOR_HSV2RGB)[0, 0]
        mask = np.zeros((s, s), np.uint8)
        if cls == 0:
            mask[:] = 1
        elif cls == 1:
            cv2.circle(mask, ((s - 1) // 2, (s - 1) // 2), (s - 1) // 2, 1, thickness=-1, lineType=cv2.LINE_8)
        else:
            t = max(2, s // 3)
            a = (s - t) // 2
            mask[a : a + t, :] = 1
            mask[:, a : a + t] = 1
        region = img[y0 : y0 + s, x0 : x0 + s]
        region[mask.astype(bool)] = colour
        bx0, by0, bx1, by1 = _box(mask.astype(bool))
        objects.append((cls, (x0 + bx0, y0 + by0, x0 + bx1, y0 + by1)))
    return img, objects, [box for _, box in objects]


@dataclass(frozen=True)
class Sample:
    """One generated image with what the reference lines need besides its labels.

    ``objects``: the labels, [(class, (x0, y0, x1, y1))] in pixels, x1/y1 exclusive. ``candidates``: the box of
    everything a detector blind to the rule would have to consider an object (context: every square drawn;
    neutral and farcue: the objects). ``cue``: farcue only, (class, box) of the cue as drawn in this image.
    """

    image: np.ndarray
    objects: list[tuple[int, tuple[int, int, int, int]]]
    candidates: list[tuple[int, int, int, int]]
    cue: tuple[int, tuple[int, int, int, int]] | None = None


def _strip_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A greyish textured strip (RGB uint8): smooth blotches, grey clutter rectangles and pixel noise."""
    import cv2

    gw, gh = max(4, width // 64), max(2, height // 32)
    grid = rng.integers(70, 175, size=(gh, gw, 1)).astype(np.float32)
    tint = rng.normal(0.0, 6.0, size=(gh, gw, 3)).astype(np.float32)
    img = cv2.resize(grid + tint, (width, height), interpolation=cv2.INTER_CUBIC)
    img = img + rng.normal(0.0, 5.0, size=(height, width, 3)).astype(np.float32)
    for _ in range(int(rng.integers(width // 128, width // 64 + 1))):
        w = int(rng.integers(16, max(17, width // 8)))
        h = int(rng.integers(8, max(9, height // 2)))
        x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        grey = float(rng.integers(60, 190))
        img[y0 : y0 + h, x0 : x0 + w] = 0.5 * img[y0 : y0 + h, x0 : x0 + w] + 0.5 * grey
    return np.clip(img, 0, 255).astype(np.uint8)


def farcue_reach(cfg: SyntheticConfig) -> float:
    """The distance the far rule keeps: ``rf_model``'s largest output-cell reach plus ``reach_slack``
    (``rule="far"``; the slack, two P5 cells by default, also caps a conv-only arm with one more 3x3 layer at
    P5, such as the same-place LocalBlock control), or the smallest reach every P3 input cell is guaranteed
    to have (``rule="near"``), in pixels."""
    from yolo_nonlocal.data import receptive_field as rf

    if cfg.rule == "far":
        return rf.baseline_reach(cfg.rf_model) + float(cfg.reach_slack)
    # a target's centre is at most half a P5 cell from the anchor of some cell of each level
    return rf.guaranteed_reach(cfg.rf_model) - 16.0


def _target_offsets(cfg: SyntheticConfig, reach: float, s: int, cue_inner_edge: int) -> tuple[int, int]:
    """Range of distances from the cue's inner edge (at ``cue_inner_edge`` px from its end of the strip) at
    which a target of side ``s`` may start: far: beyond reach + 6 s (the anchors that can detect the target
    or suppress its detection in NMS start 6 s before it); near: within _NEAR_SPAN px."""
    if cfg.rule == "far":
        return int(np.ceil(reach + 6 * s + _FAR_SLACK)), cfg.width - 2 - s - cue_inner_edge
    return 4, _NEAR_SPAN


def check_farcue_geometry(cfg: SyntheticConfig) -> float:
    """Raise ValueError when the strip cannot hold the rule for the largest target and the innermost cue;
    returns the reach used (pixels)."""
    if cfg.kind != "farcue":
        raise ValueError(f"kind={cfg.kind!r}: only farcue has a cue geometry")
    reach = farcue_reach(cfg)
    lo, hi = _target_offsets(cfg, reach, cfg.max_size, _CUE_INSET[1] + _CUE_SIZE[1])
    if hi < lo:
        raise ValueError(
            f"imgsz={cfg.width} is too narrow for rule={cfg.rule}: a {cfg.max_size} px target needs {lo} px from the cue "
            f"({cfg.rf_model}'s reach + reach_slack = {reach:.0f} px); use a wider strip (imgsz={-(-(cfg.width + lo - hi) // 32) * 32} or more)"
        )
    return reach


def _farcue_image(rng: np.random.Generator, cfg: SyntheticConfig, cue_class: int, reach: float) -> Sample:
    from yolo_nonlocal.data import receptive_field as rf

    W, H = cfg.width, cfg.image_height
    img = _strip_background(rng, W, H)
    side = int(rng.integers(0, 2))  # 0: the cue at the left end, 1: at the right end
    cs = int(rng.integers(_CUE_SIZE[0], _CUE_SIZE[1] + 1))
    inset = int(rng.integers(_CUE_INSET[0], _CUE_INSET[1] + 1))
    cx0 = inset if side == 0 else W - inset - cs
    cy0 = int(rng.integers(2, H - cs - 1))
    cue_box = (cx0, cy0, cx0 + cs, cy0 + cs)
    n = int(rng.integers(1, 4))
    sizes = [int(rng.integers(cfg.min_size, cfg.max_size + 1)) for _ in range(n)]
    boxes: list[tuple[int, int, int, int]] = []
    for s in sizes:
        lo_off, hi_off = _target_offsets(cfg, reach, s, cx0 + cs if side == 0 else W - cx0)
        if hi_off < lo_off:
            check_farcue_geometry(cfg)  # raises with the advice
            raise ValueError(f"imgsz={W}: no room for a {s} px target at rule={cfg.rule}")
        for _ in range(400):
            off = int(rng.integers(lo_off, hi_off + 1))
            x0 = cx0 + cs + off if side == 0 else cx0 - off - s
            y0 = int(rng.integers(2, H - s - 1))
            if all(x0 >= bx1 + 2 or bx0 >= x0 + s + 2 or y0 >= by1 + 2 or by0 >= y0 + s + 2 for bx0, by0, bx1, by1 in boxes):
                boxes.append((x0, y0, x0 + s, y0 + s))
                break
    spans = [(b[0], b[2]) for b in boxes]
    if cfg.rule == "far":
        rf.assert_cue_out_of_reach(spans, (cue_box[0], cue_box[2]), reach)
    else:
        rf.assert_cue_in_reach(spans, (cue_box[0], cue_box[2]), reach)
    for x0, y0, x1, y1 in boxes:
        img[y0:y1, x0:x1] = TARGET_COLOUR
    shown = 1 - cue_class if cfg.counterfactual else cue_class
    img[cue_box[1] : cue_box[3], cue_box[0] : cue_box[2]] = CUE_COLOURS[shown]
    objects = [(shown, b) for b in boxes]
    return Sample(img, objects, list(boxes), (shown, cue_box))


def generate_sample(cfg: SyntheticConfig, split: str, index: int) -> Sample:
    """Image ``index`` of ``split`` with its labels, its rule-blind candidates and (farcue) its cue."""
    if split not in _SPLIT_CODE:
        raise ValueError(f"split={split!r} must be 'train' or 'val'")
    key = [int(cfg.seed), _KIND_CODE[cfg.kind], _SPLIT_CODE[split], int(index), cfg.version]
    rng = np.random.default_rng(key)
    if cfg.kind == "farcue":
        # the class comes from its own stream: nothing else drawn for the image depends on it, and the
        # counterfactual (not part of the key) is the same image with only the cue repainted
        cue_class = int(np.random.default_rng([*key, 1]).integers(0, 2))
        return _farcue_image(rng, cfg, cue_class, farcue_reach(cfg))
    img, objects, candidates = _context_image(rng, cfg) if cfg.kind == "context" else _neutral_image(rng, cfg)
    return Sample(img, objects, candidates)


def generate_image(cfg: SyntheticConfig, split: str, index: int) -> tuple[np.ndarray, list[tuple[int, tuple]]]:
    """Image ``index`` of ``split`` as (RGB uint8 array, [(class, (x0, y0, x1, y1)), ...]) in pixels, x1/y1 exclusive."""
    sample = generate_sample(cfg, split, index)
    return sample.image, sample.objects


def _yolo_rows(objects: Iterable[tuple[int, tuple]], width: int, height: int) -> str:
    rows = []
    for cls, (x0, y0, x1, y1) in objects:
        rows.append(
            f"{cls} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} {(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}"
        )
    return "".join(r + "\n" for r in rows)


def _data_yaml(cfg: SyntheticConfig) -> dict:
    extra = {}
    if cfg.kind == "farcue":  # what the assertion was made against (the reach is computed from the model)
        from importlib.metadata import version

        extra["farcue_geometry"] = {
            "rule": cfg.rule, "rf_model": cfg.rf_model, "distance_px": farcue_reach(cfg),
            "meaning": ("far: every target's detecting/suppressing anchors are farther than distance_px from the cue"
                        if cfg.rule == "far" else "near: the cue lies within distance_px of every target's centre"),
            "ultralytics": version("ultralytics"),
        }  # fmt: skip
    return {**_base_data_yaml(cfg), **extra}


def _base_data_yaml(cfg: SyntheticConfig) -> dict:
    return {
        # no 'path': Ultralytics then resolves train/val next to this file, so the folder can move
        "train": "images/train",
        "val": "images/val",
        "names": dict(enumerate(cfg.names)),
        "synthetic": cfg.settings(),
        "train_args": {**FARCUE_TRAIN_ARGS, "imgsz": cfg.width} if cfg.kind == "farcue" else dict(TRAIN_ARGS),
    }


def make_dataset(out: str | Path, cfg: SyntheticConfig, *, force: bool = False, progress: bool = True) -> Path:
    """Write ``cfg``'s dataset under ``out`` (images/, labels/, data.yaml) and return the data.yaml path.

    A folder already holding the same dataset (same ``synthetic`` settings in its data.yaml and all files
    present) is reused as is. A folder holding anything else is refused unless ``force=True``, which
    removes only what this generator writes (images/, labels/, data.yaml) before writing.
    """
    import cv2
    import yaml

    out = Path(out)
    data_yaml = out / "data.yaml"
    if cfg.kind == "farcue":  # before anything is touched: a strip too narrow for the rule fails here
        check_farcue_geometry(cfg)
    if out.exists() and any(out.iterdir()):
        existing = None
        if data_yaml.is_file():
            try:
                existing = (yaml.safe_load(data_yaml.read_text()) or {}).get("synthetic")
            except yaml.YAMLError:
                existing = None
        complete = all(
            len(list((out / d / split).glob(f"*.{ext}"))) == n
            for split, n in (("train", cfg.n_train), ("val", cfg.n_val))
            for d, ext in (("images", "png"), ("labels", "txt"))
        )
        if existing == cfg.settings() and complete and not force:
            if progress:
                print(f"make-dataset: {out} already holds this dataset; reusing it", file=sys.stderr)
            return data_yaml
        if not force:
            raise FileExistsError(
                f"{out} is not empty and does not hold this exact dataset "
                f"({'different settings' if existing else 'no synthetic data.yaml'}); "
                "choose another out= or pass force=True (--force) to replace its images/, labels/ and data.yaml"
            )
        for d in ("images", "labels"):
            shutil.rmtree(out / d, ignore_errors=True)
        data_yaml.unlink(missing_ok=True)
    try:
        for split, n in (("train", cfg.n_train), ("val", cfg.n_val)):
            (out / "images" / split).mkdir(parents=True, exist_ok=True)
            (out / "labels" / split).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img, objects = generate_image(cfg, split, i)
                stem = f"{i:06d}"  # numeric stems: Ultralytics' COCO JSON then uses them as integer image ids
                if not cv2.imwrite(str(out / "images" / split / f"{stem}.png"), img[:, :, ::-1]):
                    raise OSError(f"could not write {out / 'images' / split / (stem + '.png')}")
                (out / "labels" / split / f"{stem}.txt").write_text(_yolo_rows(objects, cfg.width, cfg.image_height))
                if progress and ((i + 1) % 100 == 0 or i + 1 == n):
                    print(f"make-dataset: {cfg.kind} {split} {i + 1}/{n}", file=sys.stderr, end="\r")
            if progress:
                print(file=sys.stderr)
    except BaseException:
        # what this call wrote is incomplete: remove it, so the same command can simply be run again
        for d in ("images", "labels"):
            shutil.rmtree(out / d, ignore_errors=True)
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    # data.yaml last: its presence (with these settings) marks a complete dataset
    data_yaml.write_text(yaml.safe_dump(_data_yaml(cfg), sort_keys=False))
    return data_yaml


