"""Reference lines for the synthetic tasks: what a detector that cannot use the rule scores, and the oracle.

Why (issue 10 item 1): an arm's AP means little without the band it sits in. A detector that finds every
object but cannot see the rule's cue still scores: on the context task about 10 AP with exact boxes. So
every evidence table shows, per task and split:

``oracle``
    Every object with its exact box and true class, score 1 (COCO AP through
    :func:`yolo_nonlocal.metrics.coco.evaluate`; 100 unless the labels and the evaluator disagree).
``blind_tied`` (the cap)
    The best a rule-blind detector can do: every *candidate* (everything the rule might make an object:
    context, every square drawn; farcue and neutral, every object) with its exact box, once per class, all
    with the same score. A detector that cannot see the cue has class scores independent of the true class,
    so it can do no better than predict every class everywhere; with equal scores the precision-recall
    curve is one point (recall 1, precision n_c / N for class c), and COCO's 101-point AP of class c is
    n_c / N at every IoU threshold. COCOeval breaks ties by list order, so this value is computed exactly
    here; for farcue (2 balanced-or-not classes, every candidate an object) it is 1/2 whatever the split.
``blind_random``
    The same detections with a random score per candidate (shared by its classes, so still blind to the
    cue), scored by COCOeval: mean and std over ``draws``. Interpolation (precision is the maximum to the
    right) lifts a random order a little above the tied value; a rule-blind model sits in this band.
``blind_random_class``
    One detection per candidate with a class drawn at random, random score (COCOeval, mean over draws):
    what "class at random" gives, lower than predicting every class.
``blind_tied_own_boxes``, ``blind_random_own_boxes``
    The same two with the trained baseline's localisation: each candidate takes the box of the baseline's
    prediction (any class, any score) that overlaps it most (IoU >= 0.1; else the candidate is missed),
    then is scored rule-blind as above. ``tied`` uses the exact single-point formula with the IoU of each
    located candidate against its own box; ``random`` uses COCOeval.

Image ids are the numeric file stems the generator writes, so candidates are regenerated from the
``synthetic`` settings in the dataset's data.yaml (deterministic by seed), not read from files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["REFERENCE_NAMES", "split_samples", "reference_lines", "tied_ap", "rescore_blind"]

REFERENCE_NAMES = (
    "oracle", "blind_tied", "blind_random", "blind_random_class", "blind_tied_own_boxes", "blind_random_own_boxes",
)  # fmt: skip
_IOUS = np.linspace(0.5, 0.95, 10)
_RECALLS = np.linspace(0.0, 1.0, 101)
_MIN_IOU = 0.1  # a candidate "located" by the baseline: its best prediction overlaps it at least this much


def _cfg_of(data_yaml: str | Path):
    import yaml

    from yolo_nonlocal.data.synthetic import SyntheticConfig

    spec = yaml.safe_load(Path(data_yaml).read_text()) or {}
    settings = spec.get("synthetic")
    if not isinstance(settings, dict):
        raise ValueError(f"{data_yaml} has no 'synthetic' settings: reference lines need a generated dataset")
    return SyntheticConfig(**settings), spec


def split_samples(data_yaml: str | Path, split: str = "val") -> list[tuple[int, list, list]]:
    """[(image id, objects [(class, (x0, y0, x1, y1))], candidates [(x0, y0, x1, y1)])] of a generated split."""
    from yolo_nonlocal.data.synthetic import generate_sample

    cfg, _ = _cfg_of(data_yaml)
    n = cfg.n_train if split == "train" else cfg.n_val
    out = []
    for i in range(n):
        s = generate_sample(cfg, split, i)
        out.append((i, list(s.objects), list(s.candidates)))
    return out


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two (x0, y0, x1, y1) boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def tied_ap(samples: Sequence[tuple[int, list, list]], nc: int, located: dict | None = None) -> dict[str, float]:
    """AP and AP50 (fractions) of the tied rule-blind detector, exactly (one point on each PR curve).

    ``located`` maps (image id, candidate index) to the box a baseline gives that candidate (missing: not
    found); None means every candidate has its exact box. For class c and IoU threshold t: detections =
    the located candidates (each once per class), true positives = located class-c objects whose box has
    IoU >= t with their own; AP_c(t) = precision x (share of COCO's 101 recall points <= recall).
    """
    n_gt = np.zeros(nc)
    n_det = 0
    tp = np.zeros((len(_IOUS), nc))
    for img, objects, candidates in samples:
        cls_of = {tuple(box): c for c, box in objects}
        for k, cand in enumerate(candidates):
            c = cls_of.get(tuple(cand))
            if c is not None:
                n_gt[c] += 1
            box = cand if located is None else located.get((img, k))
            if box is None:
                continue
            n_det += 1
            if c is not None:
                tp[:, c] += _iou(box, cand) >= _IOUS - 1e-12
    present = n_gt > 0
    if not present.any() or n_det == 0:
        return {"AP": 0.0, "AP50": 0.0}
    precision = tp / n_det
    recall = np.divide(tp, n_gt, out=np.zeros_like(tp), where=n_gt > 0)
    covered = (_RECALLS[None, None, :] <= recall[:, :, None] + 1e-12).sum(axis=2) / len(_RECALLS)
    ap = precision * covered * (tp > 0)  # (T, K)
    return {"AP": float(ap[:, present].mean()), "AP50": float(ap[0, present].mean())}


def _coco(data_yaml: str | Path, split: str, dets: list[dict]) -> dict[str, float | None]:
    from yolo_nonlocal.metrics.coco import evaluate

    res = evaluate(str(data_yaml), dets, split=split, category_ids=0)
    return {k: (None if v is None or v < 0 else float(v)) for k, v in res.items() if k in ("AP", "AP50", "APs")}


def _det(img: int, cls: int, box: Sequence[float], score: float) -> dict:
    x0, y0, x1, y1 = (float(v) for v in box)
    return {"image_id": img, "category_id": int(cls), "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(score)}


def _locate(samples, predictions: Sequence[dict]) -> dict:
    """(image id, candidate index) -> the predicted box (x0, y0, x1, y1), any class, overlapping it most."""
    by_img: dict[Any, list] = {}
    for p in predictions:
        x, y, w, h = p["bbox"]
        by_img.setdefault(p["image_id"], []).append((x, y, x + w, y + h))
    located = {}
    for img, _, candidates in samples:
        boxes = by_img.get(img, []) or by_img.get(str(img), []) or by_img.get(f"{img:06d}", [])
        for k, cand in enumerate(candidates):
            best, best_iou = None, _MIN_IOU
            for b in boxes:
                v = _iou(b, cand)
                if v >= best_iou:
                    best, best_iou = b, v
            if best is not None:
                located[(img, k)] = best
    return located


def rescore_blind(samples, located: dict | None, nc: int, rng: np.random.Generator, one_class: bool = False) -> list[dict]:
    """Rule-blind detections: each located candidate once per class (or once, ``one_class``), random score."""
    dets = []
    for img, _, candidates in samples:
        for k, cand in enumerate(candidates):
            box = cand if located is None else located.get((img, k))
            if box is None:
                continue
            score = float(rng.uniform(0.01, 1.0))
            classes = [int(rng.integers(0, nc))] if one_class else range(nc)
            dets += [_det(img, c, box, score) for c in classes]
    return dets


def reference_lines(data_yaml: str | Path, split: str = "val", *, predictions: str | Path | None = None,
                    draws: int = 10, seed: int = 0, cache: str | Path | None = None) -> dict[str, dict]:
    """Every reference line of a generated split (see the module docstring): name -> {AP, AP50, APs, *_std}.

    ``predictions``: a COCO results JSON of the trained baseline on the same split (Ultralytics' val with
    ``save_json=True`` writes one) for the two ``own_boxes`` lines. ``cache``: a JSON file reused while the
    dataset settings, the predictions file and ``draws`` are the same.
    """
    import hashlib

    if draws < 1:
        raise ValueError(f"draws={draws} must be >= 1")
    cfg, spec = _cfg_of(data_yaml)
    stamp = {"synthetic": cfg.settings(), "split": split, "draws": draws, "seed": seed}
    if predictions is not None:
        stamp["predictions_sha1"] = hashlib.sha1(Path(predictions).read_bytes()).hexdigest()
    if cache is not None and Path(cache).is_file():
        cached = json.loads(Path(cache).read_text())
        if cached.get("stamp") == stamp:
            return cached["lines"]
    nc = len(cfg.names)
    samples = split_samples(data_yaml, split)
    rng = np.random.default_rng(seed)
    lines: dict[str, dict] = {}
    lines["oracle"] = _coco(data_yaml, split, [_det(i, c, b, 1.0) for i, objs, _ in samples for c, b in objs])
    lines["blind_tied"] = {**tied_ap(samples, nc), "exact": True}

    def band(located, one_class=False):
        runs = [_coco(data_yaml, split, rescore_blind(samples, located, nc, rng, one_class)) for _ in range(draws)]
        out = {}
        for k in ("AP", "AP50", "APs"):
            vals = [r[k] for r in runs if r.get(k) is not None]
            out[k] = float(np.mean(vals)) if vals else None
            out[f"{k}_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        return out

    lines["blind_random"] = band(None)
    lines["blind_random_class"] = band(None, one_class=True)
    if predictions is not None:
        located = _locate(samples, json.loads(Path(predictions).read_text()))
        n_cand = sum(len(c) for _, _, c in samples)
        lines["blind_tied_own_boxes"] = {**tied_ap(samples, nc, located), "exact": True,
                                         "located": len(located) / max(n_cand, 1)}  # fmt: skip
        lines["blind_random_own_boxes"] = band(located)
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        Path(cache).write_text(json.dumps({"stamp": stamp, "lines": lines}, indent=2))
    return lines
