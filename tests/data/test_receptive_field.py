"""yolo_nonlocal.data.receptive_field: the interval arithmetic against a hand count, the analytic field of
every Detect level against the gradient of a randomly initialised model (exact, cell by cell, borders
included), and attention layers reported as global."""

from __future__ import annotations

import pytest

from yolo_nonlocal.data.receptive_field import (
    IntervalMap,
    assert_cue_in_reach,
    cell_intervals,
    empirical_field,
    eligible_anchor_span,
    receptive_fields,
)


def test_interval_map_matches_a_hand_count():
    m = IntervalMap.image(8).window(3, 2, 1, 1)  # a 3x3 stride-2 'same' conv: cell i sees 2i-1..2i+1
    assert m.lo.tolist() == [0, 1, 3, 5] and m.hi.tolist() == [1, 3, 5, 7] and m.stride == 2
    m = m.window(3, 1, 1, 1)  # then a 3x3 stride-1 conv: one more cell on each side (6 px at stride 2)
    assert m.lo.tolist() == [0, 0, 1, 3] and m.hi.tolist() == [3, 5, 7, 7]
    up = m.upsample(2)
    assert up.lo.tolist() == [0, 0, 0, 0, 1, 1, 3, 3] and up.stride == 1
    d = IntervalMap.image(9).window(3, 1, 2, 2)  # dilation 2, padding 2: cell i sees i-2, i, i+2
    assert d.lo[4] == 2 and d.hi[4] == 6 and d.lo[0] == 0 and d.hi[0] == 2
    assert eligible_anchor_span(100, 110) == (40.0, 170.0)  # 2w to detect it at IoU 0.5, 2w/0.5 more to suppress that
    assert eligible_anchor_span(100, 110, nms_iou=1.0) == (60.0, 150.0)


@pytest.fixture(scope="module")
def yolov8n():
    from ultralytics import YOLO

    return YOLO("yolov8n.yaml").model


@pytest.mark.parametrize("level", [0, 1, 2])
@pytest.mark.parametrize("head", [False, True])
def test_analytic_field_equals_the_gradient_support_of_yolov8n(yolov8n, level, head):
    width = 1408  # wide enough for unclipped P5 head cells (1263 px)
    anchors, lo, hi = cell_intervals(yolov8n, width, level=level, head=head)
    n = len(anchors)
    assert n == width // (8 * 2**level)
    cells = (0, n // 2, n // 2 + 1, n - 1) if head else (n // 2, n // 2 + 1)  # borders; both upsampling parities
    for cell in cells:
        assert empirical_field(yolov8n, level=level, head=head, width=width, height=32, cell=cell) == (
            cell, int(lo[cell]), int(hi[cell])
        )
    assert any(hi[c] - lo[c] + 1 < width for c in cells), "some tested cell's field is narrower than the input"


def test_yolov8n_numbers_and_attention_models_are_global():
    v8 = receptive_fields("yolov8n.yaml")
    assert [f.level for f in v8] == ["P3", "P4", "P5"] and [f.stride for f in v8] == [8, 16, 32]
    assert [f.head_size for f in v8] == [911, 1039, 1263] and max(f.head_reach for f in v8) == 663.0
    assert not any(f.is_global for f in v8)
    v11 = receptive_fields("yolo11n.yaml")
    assert all(f.global_layers == (10,) for f in v11)  # C2PSA
    assert all(f.conv_head_reach < 1000 for f in v11)  # its conv-only path is local
    # the gradient of a yolo11n output cell reaches every column: attention really is global
    assert empirical_field("yolo11n.yaml", level=0, width=1536, height=32)[1:] == (0, 1535)
    nl = receptive_fields("yolov8n-nl.yaml")  # this package's NonLocal rows (10: after SPPF, 17: on P3)
    assert nl[0].global_layers == (10, 17) and nl[0].conv_head_size == v8[0].head_size
    # the shipped P3 row sub-samples its keys with a ceil-mode pool: on the global path, so the same fields
    full = receptive_fields("yolov8n-nl-full.yaml")
    assert [(f.global_layers, f.conv_head_size, f.conv_head_reach) for f in full] == [
        (f.global_layers, f.conv_head_size, f.conv_head_reach) for f in nl
    ]


def test_a_ceil_mode_pool_outside_attention_is_refused_naming_its_layer():
    from ultralytics import YOLO

    model = YOLO("yolov8n.yaml").model
    model.model[9].m.ceil_mode = True  # SPPF's max-pool: its geometry would be used, and ceil mode is not modelled
    with pytest.raises(ValueError, match=r"layer 9 \(SPPF\).*ceil_mode=True"):
        receptive_fields(model)


def test_assert_cue_in_reach():
    assert_cue_in_reach([(100, 110)], (300, 320), reach=300)
    with pytest.raises(ValueError, match="does not see the cue"):
        assert_cue_in_reach([(100, 110)], (300, 420), reach=300)
