"""Tests of yolo_nonlocal.integrations.yolov5.rows: the NonLocal arguments a patched YOLOv5/YOLOv7 parse_model
builds from a row and the model YAML's nonlocal_init_* keys."""

from __future__ import annotations

import pytest
import torch

from yolo_nonlocal.integrations.ultralytics.options import NonLocalOptionError
from yolo_nonlocal.integrations.yolov5.rows import row_args
from yolo_nonlocal.nonlocal_block import NonLocal


def test_without_keys_the_row_is_passed_as_before():
    assert row_args(16, [2, "embedded_gaussian", True], {"nc": 2}) == [16, 2, "embedded_gaussian", True]
    assert row_args(16, [], None) == [16]
    block = NonLocal(*row_args(16, [], {}))
    assert torch.count_nonzero(block.w_z[1].weight) == 0  # the exact identity, the paper's init


def test_keys_reach_the_block_positionally():
    d = {"nonlocal_init_gamma": 0.3, "nonlocal_init_attention": "uniform"}
    args = row_args(32, [4, "embedded_gaussian", True], d)
    block = NonLocal(*args)  # the trees call m(*args): no keywords
    assert block.c1 == 32 and block.inter_channels == 8 and block.sub_sample
    assert torch.equal(block.w_z[1].weight, torch.full((32,), 0.3))
    assert torch.count_nonzero(block.phi.weight) == 0  # uniform maps at insertion
    assert torch.count_nonzero(block.theta.weight) > 0
    gamma_only = NonLocal(*row_args(32, [], {"nonlocal_init_gamma": "0.5"}))  # numeric strings, as YAML may give
    assert torch.equal(gamma_only.w_z[1].weight, torch.full((32,), 0.5))
    assert torch.count_nonzero(gamma_only.phi.weight) > 0  # random maps: the block's default


def test_uniform_maps_apply_to_embedded_gaussian_rows_only():
    d = {"nonlocal_init_gamma": 1.0, "nonlocal_init_attention": "uniform"}
    args = row_args(16, [2, "dot_product"], d)
    block = NonLocal(*args)  # NonLocal itself refuses uniform maps for dot_product
    assert block.mode == "dot_product" and torch.equal(block.w_z[1].weight, torch.ones(16))
    assert row_args(16, [2, "gaussian"], {"nonlocal_init_attention": "uniform"}) == [16, 2, "gaussian"]


@pytest.mark.parametrize(
    "d, args, match",
    [
        ({"nonlocal_lr_mult": 5}, [], r"'nonlocal_lr_mult' works in Ultralytics training only.*remove the key"),
        ({"nonlocal_init_gamma": "abc"}, [], r"'nonlocal_init_gamma' must be a finite number"),
        ({"nonlocal_init_attention": "zeros"}, [], r"'nonlocal_init_attention' must be one of random, uniform"),
        ({"nonlocal_init_gamma": 0.3}, [2, "embedded_gaussian", False, 2, None, None, "auto", 0.1], r"NonLocal row args"),
    ],
)
def test_bad_keys_and_rows_are_refused_with_the_key_named(d, args, match):
    with pytest.raises(NonLocalOptionError, match=match):
        row_args(16, args, d)
