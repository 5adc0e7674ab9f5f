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

Command line (``yolo-nonlocal make-dataset``)::

    yolo-nonlocal make-dataset kind=context out=datasets/context n_train=800 n_val=300 imgsz=256 seed=0
    yolo-nonlocal make-dataset kind=neutral out=datasets/neutral
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
    "PALETTE",
    "GENERATOR_VERSION",
    "SyntheticConfig",
    "generate_image",
    "make_dataset",
    "cli",
]

GENERATOR_VERSION = 1
KINDS = ("context", "neutral")
RULES = ("singleton", "count")

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

_CLASS_NAMES = {
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

_SPLIT_CODE = {"train": 0, "val": 1}
_KIND_CODE = {"context": 0, "neutral": 1}


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that determines a generated dataset (it is written to data.yaml as ``synthetic``)."""

    kind: str = "context"
    rule: str | None = "singleton"  # context only
    n_train: int = 800
    n_val: int = 300
    imgsz: int = 256
    seed: int = 0
    min_size: int = 6
    max_size: int = 16
    p_negative: float = 0.1  # context/singleton: share of images without a singleton
    version: int = GENERATOR_VERSION

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} is not supported; use one of {', '.join(KINDS)}")
        if self.kind == "context" and self.rule not in RULES:
            raise ValueError(f"rule={self.rule!r} is not supported for kind=context; use one of {', '.join(RULES)}")
        if self.kind == "neutral" and self.rule is not None:
            raise ValueError("rule= applies to kind=context only; leave it out for kind=neutral")
        for name in ("n_train", "n_val"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1 (Ultralytics needs images in both splits)")
        if not 128 <= self.imgsz <= 1024:
            raise ValueError(f"imgsz={self.imgsz} must be within 128..1024 (the task is designed for 256-320 px)")
        if not 4 <= self.min_size <= self.max_size <= 24:
            raise ValueError(
                f"object sizes min_size={self.min_size}, max_size={self.max_size} must satisfy 4 <= min_size <= max_size <= 24"
            )
        if not 0.0 <= self.p_negative < 1.0:
            raise ValueError(f"p_negative={self.p_negative} must be within [0, 1)")

    @property
    def names(self) -> list[str]:
        return list(_CLASS_NAMES[(self.kind, self.rule if self.kind == "context" else None)])


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


def _context_image(rng: np.random.Generator, cfg: SyntheticConfig) -> tuple[np.ndarray, list[tuple[int, tuple]]]:
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
    objects = []
    for (x0, y0), s, g in zip(corners, sizes, groups):
        img[y0 : y0 + s, x0 : x0 + s] = PALETTE[g]
        box = (x0, y0, x0 + s, y0 + s)
        if cfg.rule == "singleton":
            if count_of[g] == 1:
                objects.append((0, box))
        else:
            objects.append((count_of[g] - 1, box))
    return img, objects


def _neutral_image(rng: np.random.Generator, cfg: SyntheticConfig) -> tuple[np.ndarray, list[tuple[int, tuple]]]:
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
    return img, objects


def generate_image(cfg: SyntheticConfig, split: str, index: int) -> tuple[np.ndarray, list[tuple[int, tuple]]]:
    """Image ``index`` of ``split`` as (RGB uint8 array, [(class, (x0, y0, x1, y1)), ...]) in pixels, x1/y1 exclusive."""
    if split not in _SPLIT_CODE:
        raise ValueError(f"split={split!r} must be 'train' or 'val'")
    rng = np.random.default_rng([int(cfg.seed), _KIND_CODE[cfg.kind], _SPLIT_CODE[split], int(index), cfg.version])
    return _context_image(rng, cfg) if cfg.kind == "context" else _neutral_image(rng, cfg)


def _yolo_rows(objects: Iterable[tuple[int, tuple]], imgsz: int) -> str:
    rows = []
    for cls, (x0, y0, x1, y1) in objects:
        rows.append(
            f"{cls} {(x0 + x1) / 2 / imgsz:.6f} {(y0 + y1) / 2 / imgsz:.6f} {(x1 - x0) / imgsz:.6f} {(y1 - y0) / imgsz:.6f}"
        )
    return "".join(r + "\n" for r in rows)


def _data_yaml(cfg: SyntheticConfig) -> dict:
    return {
        # no 'path': Ultralytics then resolves train/val next to this file, so the folder can move
        "train": "images/train",
        "val": "images/val",
        "names": dict(enumerate(cfg.names)),
        "synthetic": asdict(cfg),
        "train_args": dict(TRAIN_ARGS),
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
        if existing == asdict(cfg) and complete and not force:
            if progress:
                print(f"make-dataset: {out} already holds this dataset; reusing it", file=sys.stderr)
            return data_yaml
        if not force:
            raise FileExistsError(
                f"{out} is not empty and does not hold this exact dataset "
                f"({'different settings' if existing else 'no synthetic data.yaml'}); "
                "choose another out= or pass --force to replace its images/, labels/ and data.yaml"
            )
        for d in ("images", "labels"):
            shutil.rmtree(out / d, ignore_errors=True)
        data_yaml.unlink(missing_ok=True)
    for split, n in (("train", cfg.n_train), ("val", cfg.n_val)):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img, objects = generate_image(cfg, split, i)
            stem = f"{i:06d}"  # numeric stems: Ultralytics' COCO JSON then uses them as integer image ids
            if not cv2.imwrite(str(out / "images" / split / f"{stem}.png"), img[:, :, ::-1]):
                raise OSError(f"could not write {out / 'images' / split / (stem + '.png')}")
            (out / "labels" / split / f"{stem}.txt").write_text(_yolo_rows(objects, cfg.imgsz))
            if progress and ((i + 1) % 100 == 0 or i + 1 == n):
                print(f"make-dataset: {cfg.kind} {split} {i + 1}/{n}", file=sys.stderr, end="\r")
        if progress:
            print(file=sys.stderr)
    # data.yaml last: its presence (with these settings) marks a complete dataset
    data_yaml.write_text(yaml.safe_dump(_data_yaml(cfg), sort_keys=False))
    return data_yaml


_USAGE = """usage: yolo-nonlocal make-dataset kind=context|neutral out=DIR [n_train=800] [n_val=300] [imgsz=256]
                                  [seed=0] [rule=singleton|count] [min_size=6] [max_size=16]
                                  [p_negative=0.1] [--force]

Write a deterministic synthetic small-object dataset (PNG images, YOLO labels, data.yaml) under DIR.
  kind=context   tiny coloured squares; rule=singleton labels the one whose colour occurs exactly once
                 in the image, rule=count labels every square with how often its colour occurs
  kind=neutral   tiny squares/disks/crosses, all labelled: no long-range cue (the control set)
Objects are min_size..max_size px (4..24). Rerunning with the same settings reuses the folder;
--force replaces a folder holding a different dataset. See docs/datasets.md."""

_INT_KEYS = {"n_train", "n_val", "imgsz", "seed", "min_size", "max_size"}
_FLOAT_KEYS = {"p_negative"}
_STR_KEYS = {"kind", "rule", "out"}


def _parse(argv: list[str]) -> tuple[dict, set[str]]:
    kv: dict = {}
    flags: set[str] = set()
    for arg in argv:
        if arg.startswith("--"):
            if arg not in {"--force", "--help", "--quiet"}:
                raise ValueError(f"unknown flag {arg!r}; known flags: --force, --quiet, --help")
            flags.add(arg)
            continue
        if arg in {"-h", "help"}:
            flags.add("--help")
            continue
        key, sep, value = arg.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"argument {arg!r} is not key=value (for example n_train=800)")
        if key not in _INT_KEYS | _FLOAT_KEYS | _STR_KEYS:
            known = ", ".join(sorted(_INT_KEYS | _FLOAT_KEYS | _STR_KEYS))
            raise ValueError(f"unknown argument {key!r}; known: {known}")
        if key in kv:
            raise ValueError(f"argument {key!r} is given twice")
        try:
            kv[key] = int(value) if key in _INT_KEYS else float(value) if key in _FLOAT_KEYS else value
        except ValueError:
            kind = "an integer" if key in _INT_KEYS else "a number"
            raise ValueError(f"{key}={value!r} must be {kind}") from None
    return kv, flags


def cli(argv: list[str]) -> int:
    """``yolo-nonlocal make-dataset``: write a synthetic dataset; prints the data.yaml path."""
    try:
        kv, flags = _parse(list(argv))
    except ValueError as e:
        print(f"make-dataset: {e}\n\n{_USAGE}", file=sys.stderr)
        return 2
    if "--help" in flags:
        print(_USAGE)
        return 0
    if "out" not in kv:
        print(f"make-dataset: out=DIR is required\n\n{_USAGE}", file=sys.stderr)
        return 2
    out = kv.pop("out")
    kind = kv.get("kind", "context")
    if kind == "context":
        kv.setdefault("rule", "singleton")
    else:
        kv.setdefault("rule", None)
    try:
        cfg = SyntheticConfig(**kv)
        path = make_dataset(out, cfg, force="--force" in flags, progress="--quiet" not in flags)
    except (ValueError, FileExistsError, OSError) as e:
        print(f"make-dataset: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


def load_data_yaml(path: str | Path) -> dict:
    """The parsed data.yaml (used by compare to pick up ``train_args``); a clear error when missing."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data={path} does not exist; pass the data.yaml of a YOLO dataset")
    return yaml.safe_load(path.read_text()) or {}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(cli(sys.argv[1:]))
