"""The synthetic datasets: deterministic by seed, valid YOLO labels, sizes in range, and the context rule
re-derived from the written pixels (not from the generator's own bookkeeping)."""

from __future__ import annotations

import hashlib
import subprocess
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from yolo_nonlocal.data.synthetic import PALETTE, SyntheticConfig, generate_image, generate_sample, make_dataset



def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _read_labels(path: Path, imgsz: int) -> list[tuple[int, tuple[float, float, float, float]]]:
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split()
        assert len(parts) == 5, f"{path}: {line!r} is not 'cls xc yc w h'"
        c, xc, yc, w, h = int(parts[0]), *(float(v) for v in parts[1:])
        assert all(0.0 < v <= 1.0 for v in (xc, yc, w, h)), line
        assert 0.0 <= xc - w / 2 and xc + w / 2 <= 1.0 + 1e-6 and 0.0 <= yc - h / 2 and yc + h / 2 <= 1.0 + 1e-6
        rows.append((c, (xc * imgsz - w * imgsz / 2, yc * imgsz - h * imgsz / 2, w * imgsz, h * imgsz)))
    return rows


def _palette_squares(img_rgb: np.ndarray) -> list[tuple[int, tuple[int, int, int, int]]]:
    """(palette index, (x, y, w, h)) of every square drawn in an exact palette colour, found from the pixels."""
    found = []
    for k, colour in enumerate(PALETTE):
        mask = np.all(img_rgb == np.array(colour, np.uint8), axis=2).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
        for i in range(1, n):
            x, y, w, h, area = (int(v) for v in stats[i])
            if area >= 16:  # a real square (>= 4x4), never a stray background pixel
                assert area == w * h, "squares are drawn solid"
                found.append((k, (x, y, w, h)))
    return found


def test_palette_has_no_single_channel_shortcut():
    colours = np.array(PALETTE)
    assert len(set(PALETTE)) == 6
    assert len(set(colours.sum(axis=1))) == 1, "equal channel sums: brightness does not separate colours"
    for ch in range(3):
        values = Counter(colours[:, ch].tolist())
        assert all(n == 2 for n in values.values()), "each level occurs in exactly two colours per channel"
    for a in range(6):
        for b in range(a + 1, 6):
            assert int((colours[a] != colours[b]).sum()) >= 2


def test_same_seed_same_bytes_and_index_independent_of_n(tmp_path):
    cfg = SyntheticConfig(kind="context", n_train=6, n_val=3, seed=7)
    a = _digest(make_dataset(tmp_path / "a", cfg, progress=False).parent)
    b = _digest(make_dataset(tmp_path / "b", cfg, progress=False).parent)
    assert a == b and len(a) == 2 * 9 + 1
    more = SyntheticConfig(kind="context", n_train=9, n_val=3, seed=7)
    c = _digest(make_dataset(tmp_path / "c", more, progress=False).parent)
    assert all(c[k] == v for k, v in a.items() if k != "data.yaml"), "image i does not depend on n_train"
    other = SyntheticConfig(kind="context", n_train=6, n_val=3, seed=8)
    d = _digest(make_dataset(tmp_path / "d", other, progress=False).parent)
    assert sum(d[k] != a[k] for k in a if k.startswith("images")) == 9


@pytest.mark.parametrize("imgsz", [256, 320])
def test_singleton_rule_holds_in_pixels_and_labels(tmp_path, imgsz):
    cfg = SyntheticConfig(kind="context", rule="singleton", n_train=40, n_val=10, imgsz=imgsz, seed=3)
    root = make_dataset(tmp_path / "ctx", cfg, progress=False).parent
    negatives = 0
    for split, n in (("train", cfg.n_train), ("val", cfg.n_val)):
        for i in range(n):
            img = cv2.imread(str(root / "images" / split / f"{i:06d}.png"))[:, :, ::-1]
            assert img.shape == (imgsz, imgsz, 3)
            squares = _palette_squares(img)
            counts = Counter(k for k, _ in squares)
            assert 3 <= len(counts) <= 5 and len(squares) >= 5
            singles = [box for k, box in squares if counts[k] == 1]
            labels = _read_labels(root / "labels" / split / f"{i:06d}.txt", imgsz)
            assert len(singles) <= 1 and len(labels) == len(singles)
            negatives += not singles
            for (cls, (x, y, w, h)), (sx, sy, sw, sh) in zip(labels, singles):
                assert cls == 0
                assert np.allclose((x, y, w, h), (sx, sy, sw, sh), atol=1e-3 * imgsz)
                assert cfg.min_size <= w <= cfg.max_size and w == pytest.approx(h, abs=0.01)
            # every non-singleton colour has its twins far away: no local window decides the label
            for k in counts:
                centres = [(x + w / 2, y + h / 2) for kk, (x, y, w, h) in squares if kk == k]
                for a in range(len(centres)):
                    for b in range(a + 1, len(centres)):
                        assert np.hypot(*np.subtract(centres[a], centres[b])) >= imgsz / 4
    assert 0 < negatives < 0.4 * (cfg.n_train + cfg.n_val), "some images have no singleton, most have one"


def test_count_rule_classes_are_colour_counts(tmp_path):
    cfg = SyntheticConfig(kind="context", rule="count", n_train=20, n_val=5, seed=1)
    root = make_dataset(tmp_path / "cnt", cfg, progress=False).parent
    seen = Counter()
    for i in range(cfg.n_train):
        img = cv2.imread(str(root / "images" / "train" / f"{i:06d}.png"))[:, :, ::-1]
        squares = _palette_squares(img)
        counts = Counter(k for k, _ in squares)
        expected = sorted((counts[k] - 1, box) for k, box in squares)
        labels = _read_labels(root / "labels" / "train" / f"{i:06d}.txt", cfg.imgsz)
        got = sorted((c, tuple(int(round(v)) for v in b)) for c, b in labels)
        assert got == expected
        seen.update(c for c, _ in got)
    assert set(seen) == {0, 1, 2}


def test_neutral_objects_sizes_and_classes(tmp_path):
    cfg = SyntheticConfig(kind="neutral", rule=None, n_train=30, n_val=5, seed=2, min_size=4, max_size=24)
    root = make_dataset(tmp_path / "neu", cfg, progress=False).parent
    classes = Counter()
    sizes = []
    for p in sorted((root / "labels" / "train").glob("*.txt")):
        rows = _read_labels(p, cfg.imgsz)
        assert 5 <= len(rows) <= 15
        for c, (_, _, w, h) in rows:
            classes[c] += 1
            sizes.append(max(w, h))
            assert cfg.min_size - 1 <= min(w, h) and max(w, h) <= cfg.max_size + 1e-6
    assert set(classes) == {0, 1, 2}
    assert min(sizes) <= 6 and max(sizes) >= 20, "sizes span the 4-24 px range"
    img, objects = generate_image(cfg, "train", 0)
    for cls, (x0, y0, x1, y1) in objects:  # a tight box: the object's own colour reaches all four sides
        patch = img[y0 - 1 : y1 + 1, x0 - 1 : x1 + 1].reshape(-1, 3)
        colours, n = np.unique(patch, axis=0, return_counts=True)
        mask = np.all(img == colours[n.argmax()], axis=2)[y0 - 1 : y1 + 1, x0 - 1 : x1 + 1]
        ys, xs = np.nonzero(mask)
        assert (xs.min(), ys.min(), xs.max(), ys.max()) == (1, 1, x1 - x0, y1 - y0), cls


def test_data_yaml_resolves_in_ultralytics_and_is_relocatable(tmp_path):
    from ultralytics.data.utils import check_det_dataset

    cfg = SyntheticConfig(kind="neutral", rule=None, n_train=3, n_val=2)
    data_yaml = make_dataset(tmp_path / "orig", cfg, progress=False)
    moved = tmp_path / "elsewhere"
    data_yaml.parent.rename(moved)
    data = check_det_dataset(str(moved / "data.yaml"))
    assert Path(data["train"]) == (moved / "images" / "train").resolve()
    assert data["names"] == {0: "square", 1: "disk", 2: "cross"} and data["nc"] == 3
    meta = yaml.safe_load((moved / "data.yaml").read_text())
    assert meta["train_args"]["mosaic"] == 0.0 and meta["synthetic"]["kind"] == "neutral"


def test_cli_reuse_refuse_force_and_errors(tmp_path, console_script, run_cli):
    out = tmp_path / "ds"
    args = ["make-dataset", "kind=context", f"out={out}", "n_train=4", "n_val=2", "seed=5"]
    r = subprocess.run([console_script, *args], capture_output=True, text=True, check=True)  # the one smoke test
    assert Path(r.stdout.strip()) == out / "data.yaml"
    before = _digest(out)
    r = run_cli(*args)
    assert r.returncode == 0 and "reusing" in r.stderr and _digest(out) == before

    r = run_cli(*args[:-1], "seed=6")
    assert r.returncode == 2 and "--force" in r.stderr
    assert _digest(out) == before, "a refused run loses nothing"
    r = run_cli(*args[:-1], "seed=6", "--force")
    assert r.returncode == 0 and _digest(out) != before
    assert yaml.safe_load((out / "data.yaml").read_text())["synthetic"]["seed"] == 6

    for bad, message in (
        (["kind=lines", f"out={out}"], "kind='lines'"),
        (["kind=context", f"out={out}", "max_size=40"], "max_size=40"),
        (["kind=context", f"out={out}", "n_train=ten"], "n_train='ten' must be an integer"),
        (["kind=context", f"out={out}", "colour=red"], "unknown argument 'colour'"),
        (["kind=neutral", f"out={out}", "rule=count"], "rule= applies to kind=context and kind=farcue only"),
        (["kind=context"], "missing out="),
    ):
        r = run_cli("make-dataset", *bad)
        assert r.returncode == 2 and message in r.stderr, (bad, r.stderr)
        assert r.stderr.startswith("yolo-nonlocal make-dataset: error: "), r.stderr
    r = run_cli("make-dataset", "--help")
    assert r.returncode == 0 and "kind=context|neutral" in r.stdout


@pytest.mark.parametrize(
    "config, kind, rule",
    [("context", "context", "singleton"), ("context-count", "context", "count"), ("neutral", "neutral", None),
     ("farcue", "farcue", "far"), ("farcue-near", "farcue", "near")],
)
def test_shipped_dataset_configs_match_the_generator(tmp_path, config, kind, rule):
    """datasets/<config>.yaml finds a set generated into datasets/<config>/ as its comment says."""
    import shutil

    from ultralytics.data.utils import check_det_dataset

    from yolo_nonlocal.data.synthetic import TRAIN_ARGS

    repo = Path(__file__).resolve().parents[2]
    shutil.copy(repo / "datasets" / f"{config}.yaml", tmp_path / f"{config}.yaml")
    cfg = SyntheticConfig(kind=kind, rule=rule, n_train=2, n_val=1)
    written = make_dataset(tmp_path / config, cfg, progress=False)
    data = check_det_dataset(str(tmp_path / f"{config}.yaml"))
    assert Path(data["train"]) == (tmp_path / config / "images" / "train").resolve()
    assert list(data["names"].values()) == cfg.names
    shipped = yaml.safe_load((tmp_path / f"{config}.yaml").read_text())["train_args"]
    assert shipped == yaml.safe_load(written.read_text())["train_args"]
    if kind != "farcue":
        assert shipped == TRAIN_ARGS


# ------------------------------------------------------------------------------------------------------
# kind=farcue: the positive control (issue 10)
# ------------------------------------------------------------------------------------------------------


def _farcue_parts(img_rgb: np.ndarray) -> tuple[int, tuple[int, int, int, int], list[tuple[int, int, int, int]]]:
    """(cue class, cue box, target boxes) found from the pixels alone; boxes as (x0, y0, x1, y1), x1/y1 exclusive."""
    from yolo_nonlocal.data.synthetic import CUE_COLOURS, TARGET_COLOUR

    def blobs(colour):
        mask = np.all(img_rgb == np.array(colour, np.uint8), axis=2).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
        return [(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h, a in stats[1:] if a >= 16]

    cues = [(k, b) for k, c in enumerate(CUE_COLOURS) for b in blobs(c)]
    assert len(cues) == 1, f"exactly one cue is drawn, found {cues}"
    return cues[0][0], cues[0][1], blobs(TARGET_COLOUR)


def test_farcue_deterministic_by_seed_and_index(tmp_path):
    cfg = SyntheticConfig(kind="farcue", rule="far", n_train=4, n_val=2, seed=3)
    a = _digest(make_dataset(tmp_path / "a", cfg, progress=False).parent)
    b = _digest(make_dataset(tmp_path / "b", cfg, progress=False).parent)
    assert a == b and len(a) == 2 * 6 + 1
    more = SyntheticConfig(kind="farcue", rule="far", n_train=6, n_val=2, seed=3)
    c = _digest(make_dataset(tmp_path / "c", more, progress=False).parent)
    assert all(c[k] == v for k, v in a.items() if k != "data.yaml")
    d = _digest(make_dataset(tmp_path / "d", SyntheticConfig(kind="farcue", rule="far", n_train=4, n_val=2, seed=4), progress=False).parent)
    assert sum(d[k] != a[k] for k in a if k.startswith("images")) == 6
    meta = yaml.safe_load((tmp_path / "a" / "data.yaml").read_text())
    assert meta["train_args"]["rect"] is True and meta["train_args"]["imgsz"] == 1024
    assert meta["synthetic"]["rf_model"] == "yolov8n.yaml" and meta["names"] == {0: "orange_cue", 1: "blue_cue"}


def test_farcue_labels_follow_the_cue_and_the_cue_is_beyond_every_cell_that_can_detect_a_target(tmp_path):
    """Re-derived from the written pixels and labels, with the exact per-cell receptive fields of yolov8n at
    the strip's width, at the native grid alignment and at the 16 px shift of Ultralytics' rect letterbox."""
    from yolo_nonlocal.data.receptive_field import cell_intervals

    cfg = SyntheticConfig(kind="farcue", rule="far", n_train=40, n_val=1, seed=0)
    root = make_dataset(tmp_path / "far", cfg, progress=False).parent
    fields = [cell_intervals("yolov8n.yaml", 1024 + 32, level=lvl, head=True) for lvl in range(3)]
    classes = Counter()
    for i in range(cfg.n_train):
        img = cv2.imread(str(root / "images" / "train" / f"{i:06d}.png"))[:, :, ::-1]
        assert img.shape == (64, 1024, 3)
        cue_class, (c0, _, c1, _), targets = _farcue_parts(img)
        labels = _read_labels_wh(root / "labels" / "train" / f"{i:06d}.txt", 1024, 64)
        assert sorted(tuple(int(round(v)) for v in box) for _, box in labels) == sorted(
            (x0, y0, x1 - x0, y1 - y0) for x0, y0, x1, y1 in targets
        )
        assert {c for c, _ in labels} == {cue_class}, "every target's class is the cue's colour"
        classes[cue_class] += 1
        for shift in (0, 16):  # the input's left padding (Ultralytics' rect validation adds 16 px at 1024)
            for anchors, lo, hi in fields:
                for x0, _, x1, _ in targets:
                    w = x1 - x0
                    # anchors that can detect it at IoU >= 0.5 (2w) or suppress that in NMS at IoU >= 0.5 (4w more)
                    eligible = (anchors - shift >= x0 - 6 * w) & (anchors - shift <= x1 + 6 * w)
                    sees = (lo[eligible] - shift < c1) & (hi[eligible] - shift >= c0)
                    assert not sees.any(), f"image {i}: a cell that can detect the target at {x0} sees the cue"
    assert min(classes.values()) >= 10, classes


def _read_labels_wh(path: Path, width: int, height: int):
    rows = []
    for line in path.read_text().splitlines():
        c, xc, yc, w, h = line.split()
        xc, yc, w, h = float(xc) * width, float(yc) * height, float(w) * width, float(h) * height
        rows.append((int(c), (xc - w / 2, yc - h / 2, w, h)))
    return rows


def test_farcue_assertion_fires_when_the_cue_comes_closer(monkeypatch):
    from yolo_nonlocal.data import synthetic
    from yolo_nonlocal.data.receptive_field import CueInReachError, assert_cue_out_of_reach, baseline_reach

    reach = baseline_reach("yolov8n.yaml")
    assert reach == 663.0  # P5 class/box outputs of yolov8n; the empirical test in test_receptive_field agrees
    sample = generate_sample(SyntheticConfig(kind="farcue", rule="far"), "train", 0)
    spans = [(b[0], b[2]) for b in sample.candidates]
    cue = (sample.cue[1][0], sample.cue[1][2])
    margin = assert_cue_out_of_reach(spans, cue, reach)
    assert margin >= 64, "the default reach_slack of 64 px is kept too"
    toward = 1 if cue[0] < spans[0][0] else -1  # move the cue toward the targets by margin + 1 px
    with pytest.raises(CueInReachError, match="within 663 px"):
        assert_cue_out_of_reach(spans, (cue[0] + toward * (margin + 1), cue[1] + toward * (margin + 1)), reach)
    # the generator itself refuses to write an image whose targets it was told to place too close
    monkeypatch.setattr(synthetic, "_FAR_SLACK", -180.0)  # 64 px slack and 116 px more of the reach given up
    with pytest.raises(CueInReachError):
        for i in range(40):
            generate_sample(SyntheticConfig(kind="farcue", rule="far"), "train", i)


def test_farcue_counterfactual_differs_only_in_the_cue_pixels_and_flips_the_labels():
    for rule in ("far", "near"):
        for i in range(10):
            a = generate_sample(SyntheticConfig(kind="farcue", rule=rule), "val", i)
            b = generate_sample(SyntheticConfig(kind="farcue", rule=rule, counterfactual=True), "val", i)
            x0, y0, x1, y1 = a.cue[1]
            assert b.cue == (1 - a.cue[0], a.cue[1])
            diff = np.any(a.image != b.image, axis=2)
            inside = np.zeros_like(diff)
            inside[y0:y1, x0:x1] = True
            assert diff[inside].all() and not diff[~inside].any(), "only (and all of) the cue's pixels change"
            assert b.objects == [(1 - c, box) for c, box in a.objects]


def test_farcue_near_cue_lies_inside_every_level_of_every_target_cell():
    from yolo_nonlocal.data.receptive_field import cell_intervals

    fields = [cell_intervals("yolov8n.yaml", 1024, level=lvl) for lvl in range(3)]
    for i in range(20):
        s = generate_sample(SyntheticConfig(kind="farcue", rule="near"), "train", i)
        c0, c1 = s.cue[1][0], s.cue[1][2]
        for x0, _, x1, _ in s.candidates:
            for anchors, lo, hi in fields:  # the cell whose anchor is nearest the target's centre
                k = int(np.argmin(np.abs(anchors - (x0 + x1) / 2)))
                assert lo[k] <= c0 and hi[k] >= c1 - 1


def test_farcue_config_and_cli_errors(tmp_path, run_cli):
    with pytest.raises(ValueError, match="rule='singleton' is not supported for kind=farcue"):
        SyntheticConfig(kind="farcue")
    with pytest.raises(ValueError, match="too narrow"):
        generate_sample(SyntheticConfig(kind="farcue", rule="far", imgsz=512), "train", 0)
    with pytest.raises(ValueError, match="apply to kind=farcue only"):
        SyntheticConfig(kind="context", counterfactual=True)
    with pytest.raises(ValueError, match="whole image"):
        generate_sample(SyntheticConfig(kind="farcue", rule="far", rf_model="yolo11n.yaml"), "train", 0)
    r = run_cli("make-dataset", "kind=farcue", f"out={tmp_path}/x", "counterfactual=maybe")
    assert r.returncode == 2 and "counterfactual='maybe' is not a boolean" in r.stderr
    r = run_cli("make-dataset", "kind=farcue", f"out={tmp_path}/y", "n_train=2", "n_val=1")
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load((tmp_path / "y" / "data.yaml").read_text())["synthetic"]["rule"] == "far"


def test_a_failed_write_leaves_nothing_and_a_narrow_strip_is_refused_before_writing(tmp_path, monkeypatch):
    from yolo_nonlocal.data import synthetic

    real = synthetic.generate_image

    def failing(cfg, split, index):
        if split == "val":
            raise OSError("disk full (simulated)")
        return real(cfg, split, index)

    monkeypatch.setattr(synthetic, "generate_image", failing)
    cfg = SyntheticConfig(kind="neutral", rule=None, n_train=3, n_val=2)
    with pytest.raises(OSError, match="simulated"):
        make_dataset(tmp_path / "ds", cfg, progress=False)
    assert not (tmp_path / "ds").exists(), "the incomplete folder is removed"
    monkeypatch.setattr(synthetic, "generate_image", real)
    assert make_dataset(tmp_path / "ds", cfg, progress=False).is_file(), "the same command then simply works"
    with pytest.raises(ValueError, match=r"too narrow for rule=far: a 16 px target needs 824 px .*imgsz=896 or more"):
        make_dataset(tmp_path / "narrow", SyntheticConfig(kind="farcue", rule="far", imgsz=512), progress=False)
    assert not (tmp_path / "narrow").exists()
