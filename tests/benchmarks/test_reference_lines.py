"""benchmarks/reference_lines.py: the rule-blind cap computed exactly (against a hand count and against
COCOeval where its tie-breaking cannot matter), the oracle, and the baseline-localisation variant."""

from __future__ import annotations

import json

import numpy as np
import pytest

from yolo_nonlocal.data.synthetic import SyntheticConfig, generate_sample, make_dataset
from yolo_nonlocal.metrics.coco import evaluate

import reference_lines as rl  # noqa: E402  (tests/benchmarks/conftest.py puts benchmarks/ on sys.path)


def test_tied_cap_is_the_class_share_by_hand(tmp_path):
    far = make_dataset(tmp_path / "far", SyntheticConfig(kind="farcue", rule="far", n_train=1, n_val=30), progress=False)
    lines = rl.reference_lines(far, draws=2)
    assert lines["blind_tied"]["AP"] == pytest.approx(0.5) and lines["oracle"]["AP"] == pytest.approx(1.0)
    assert lines["blind_tied"]["AP"] <= lines["blind_random"]["AP"] + 2 * lines["blind_random"]["AP_std"] + 0.05
    cfg = SyntheticConfig(kind="context", rule="singleton", n_train=1, n_val=30, seed=4)
    ctx = make_dataset(tmp_path / "ctx", cfg, progress=False)
    singles = squares = 0
    for i in range(cfg.n_val):
        s = generate_sample(cfg, "val", i)
        singles += len(s.objects)
        squares += len(s.candidates)
    assert rl.tied_ap(rl.split_samples(ctx), nc=1)["AP"] == pytest.approx(singles / squares)
    neu = make_dataset(tmp_path / "neu", SyntheticConfig(kind="neutral", rule=None, n_train=1, n_val=10), progress=False)
    assert rl.tied_ap(rl.split_samples(neu), nc=3)["AP"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("jitter", [0, 2])
def test_tied_formula_equals_cocoeval_when_ties_put_every_miss_first(tmp_path, jitter):
    """One image, equal scores, every detection that is not a true positive listed before those that are (for
    every IoU threshold at once: non-objects first, then objects by rising IoU): COCOeval's stable sort then
    gives the single-point curve the formula computes."""
    cfg = SyntheticConfig(kind="context", rule="count", n_train=1, n_val=1, seed=2)
    data = make_dataset(tmp_path / "one", cfg, progress=False)
    samples = rl.split_samples(data)
    rng = np.random.default_rng(0)
    (img, objects, candidates), = samples
    located = {}
    for k, (x0, y0, x1, y1) in enumerate(candidates):
        dx, dy = (int(v) for v in rng.integers(-jitter, jitter + 1, size=2))
        located[(img, k)] = (x0 + dx, y0 + dy, x1 + dx, y1 + dy + (k % 2) * jitter)
    cls_of = {tuple(b): c for c, b in objects}
    dets = []
    for c in range(3):  # per class: the other classes' squares first, then class c's by rising IoU
        order = sorted(range(len(candidates)), key=lambda k: (cls_of.get(tuple(candidates[k])) == c,
                                                             rl._iou(located[(img, k)], candidates[k])))  # fmt: skip
        dets += [rl._det(img, c, located[(img, k)], 0.5) for k in order]
    coco = evaluate(str(data), dets, split="val", category_ids=0)
    mine = rl.tied_ap(samples, nc=3, located=located)
    assert mine["AP"] == pytest.approx(coco["AP"], abs=1e-9) and mine["AP50"] == pytest.approx(coco["AP50"], abs=1e-9)
    if jitter:
        assert mine["AP"] < rl.tied_ap(samples, nc=3)["AP"]


def test_own_boxes_lines_from_a_predictions_file(tmp_path):
    data = make_dataset(tmp_path / "far", SyntheticConfig(kind="farcue", rule="far", n_train=1, n_val=12), progress=False)
    samples = rl.split_samples(data)
    preds = []  # a 'baseline' that finds every target exactly but always says class 0, and one spurious box
    for img, objects, _ in samples:
        for _, (x0, y0, x1, y1) in objects:
            preds.append({"image_id": img, "category_id": 0, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": 0.9})
    preds.append({"image_id": 0, "category_id": 1, "bbox": [500, 10, 8, 8], "score": 0.3})
    path = tmp_path / "predictions.json"
    path.write_text(json.dumps(preds))
    lines = rl.reference_lines(data, predictions=path, draws=2, cache=tmp_path / "cache.json")
    assert lines["blind_tied_own_boxes"]["AP"] == pytest.approx(lines["blind_tied"]["AP"])
    assert lines["blind_tied_own_boxes"]["located"] == 1.0
    again = rl.reference_lines(data, predictions=path, draws=2, cache=tmp_path / "cache.json")
    assert again == json.loads((tmp_path / "cache.json").read_text())["lines"]
