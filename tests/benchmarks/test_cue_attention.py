"""benchmarks/cue_attention.py: the cue effect inside the blocks, on real farcue images and a real model."""

from __future__ import annotations

import pytest

import cue_attention as ca


def test_cells_overlapping_a_box():
    # 4 px cells on an 8 x 4 grid: a box over x 6..13, y 0..3 covers columns 1..3 of row 0
    assert ca._cells_overlapping((6, 0, 13, 3), 4.0, 4.0, 8, 4) == [1, 2, 3]
    assert ca._cells_overlapping((0, 0, 4, 8), 4.0, 4.0, 8, 4) == [0, 8]  # x1 exclusive: one column
    assert ca._cells_overlapping((30, 14, 40, 20), 4.0, 4.0, 8, 4) == [31]  # clipped to the grid


@pytest.fixture(scope="module")
def farcue_pair(tmp_path_factory):
    from yolo_nonlocal.data.synthetic import SyntheticConfig, make_dataset

    root = tmp_path_factory.mktemp("farcue")
    cfg = dict(kind="farcue", rule="far", n_train=1, n_val=16, seed=1000)
    make_dataset(root / "farcue-test-16-s1000", SyntheticConfig(**cfg), progress=False)
    make_dataset(root / "farcue-test-cf-16-s1000", SyntheticConfig(**cfg, counterfactual=True), progress=False)
    return root / "farcue-test-16-s1000", root / "farcue-test-cf-16-s1000"


def _checkpoint(tmp_path, gamma: float):
    import torch
    from ultralytics import YOLO

    from yolo_nonlocal.integrations.ultralytics.options import configure

    torch.manual_seed(0)
    model = configure(YOLO("yolov8n-nl.yaml"), init_gamma=gamma)
    path = tmp_path / f"g{gamma:g}.pt"
    model.save(str(path))
    return path


def test_identity_blocks_carry_no_cue_and_switched_on_blocks_do(farcue_pair, tmp_path):
    folder, cf = farcue_pair
    off = {r["layer"]: r for r in ca.measure(_checkpoint(tmp_path, 0.0), folder, cf, 3)}
    on = {r["layer"]: r for r in ca.measure(_checkpoint(tmp_path, 1.0), folder, cf, 3)}
    assert sorted(off) == sorted(on) == [10, 17] and off[10]["grid"] == (2, 32) and off[17]["grid"] == (8, 128)
    # the P5 block's input at the targets' cells comes from convolutions only: out of the cue's reach (the
    # generator's guarantee), so the repainted cue changes nothing there, in either model
    assert off[10]["effect_in"] == 0.0 and on[10]["effect_in"] == 0.0
    # identity blocks pass that on: nothing of the cue reaches a target cell anywhere
    assert off[10]["effect_out"] == 0.0 and off[17]["effect_in"] == 0.0 and off[17]["effect_out"] == 0.0
    # a switched-on block mixes every position into every other, the cue's cells too
    assert on[10]["effect_out"] > 1e-3
    for r in on.values():  # a softmax row sums to 1: the weight on the cue is a share of it
        assert 0.0 <= r["share"] <= 1.0 and r["targets"] > 0


def test_probe_finds_the_colour_where_the_features_hold_it_and_chance_where_they_do_not(farcue_pair, tmp_path):
    import torch
    from ultralytics import YOLO

    folder, _ = farcue_pair
    torch.manual_seed(0)
    model = YOLO("yolov8n.yaml")
    good = tmp_path / "random.pt"
    model.save(str(good))
    # a random first convolution keeps the colours apart (they differ in two channels): decodable
    assert ca.probe(good, folder, [0], 16)[0] >= 0.9
    with torch.no_grad():  # the same model with its first convolution blind to colour: every channel sees
        w = model.model.model[0].conv.weight  # the sum of R, G and B, which the two cue colours share
        w.copy_(w.mean(dim=1, keepdim=True).expand_as(w))
    blind = tmp_path / "blind.pt"
    model.save(str(blind))
    assert ca.probe(blind, folder, [0], 16)[0] <= 0.75
