"""benchmarks/small_objects.py's logic that runs without training: the t-interval, the paired differences,
the generated -nl variant YAMLs (built by the real Ultralytics with the options set), arms, plan and report,
and one report merged from several output folders."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

import small_objects as so  # noqa: E402  (tests/benchmarks/conftest.py puts benchmarks/ on sys.path)


def test_t_quantiles_match_the_tables():
    assert so.t975(1) == 12.706 and so.t975(2) == 4.303 and so.t975(30) == 2.042
    for df, table in ((40, 2.021), (60, 2.000), (120, 1.980)):  # published values
        assert so.t975(df) == pytest.approx(table, abs=2e-3)
    with pytest.raises(ValueError):
        so.t975(0)


def test_paired_difference_by_hand():
    arm, base = [0.30, 0.34, 0.29], [0.25, 0.27, 0.26]
    d = [0.05, 0.07, 0.03]
    res = so.paired_difference(arm, base)
    half = 4.303 * statistics.stdev(d) / math.sqrt(3)
    assert res["n"] == 3 and res["mean"] == pytest.approx(0.05)
    assert res["ci"] == pytest.approx([0.05 - half, 0.05 + half])
    assert so.paired_difference([0.3, None], [0.2, 0.1]) == {"mean": pytest.approx(0.1), "std": None, "n": 1, "ci": None}


def test_nl_variant_yaml_is_built_with_its_options(tmp_path):
    from ultralytics import YOLO

    from yolo_nonlocal.nonlocal_block import NonLocal

    path = so.nl_variant_yaml("yolov8n-nl.yaml", tmp_path, 1.0, 5.0)
    assert path.name == "yolov8n-nl-g1-lr5.yaml"
    import yaml

    spec = yaml.safe_load(path.read_text())
    assert spec["nonlocal_init_gamma"] == 1.0 and spec["nonlocal_lr_mult"] == 5.0 and list(spec["scales"]) == ["n"]
    built, shipped = YOLO(str(path)).model, YOLO("yolov8n-nl.yaml").model
    assert sum(p.numel() for p in built.parameters()) == sum(p.numel() for p in shipped.parameters())
    blocks = [m for m in built.modules() if isinstance(m, NonLocal)]
    assert len(blocks) == 2 and all(float(b.w_z[1].weight.detach().min()) == 1.0 for b in blocks)
    assert so.nl_variant_yaml("yolov8n-nl.yaml", tmp_path, 1.0, 5.0) == path  # same content: the file is kept


def test_full_resolution_arm_differs_from_the_shipped_model_in_the_p3_row_only(tmp_path):
    from ultralytics import YOLO

    from yolo_nonlocal.nonlocal_block import NonLocal

    def blocks(model):
        return {i: m for i, m in enumerate(model.model) if isinstance(m, NonLocal)}

    assert so.resolve_arm("nl-full", "yolov8n", tmp_path).spec == "yolov8n-nl-full.yaml"  # the shipped file
    arm = so.resolve_arm("nl-full-g0.1", "yolov8n", tmp_path)
    assert Path(arm.spec).name == "yolov8n-nl-full-g0.1.yaml"
    full, shipped = blocks(YOLO(arm.spec).model), blocks(YOLO("yolov8n-nl.yaml").model)
    assert sorted(full) == sorted(shipped) == [10, 17]  # the shipped places: P5 after SPPF, the P3 neck output
    assert shipped[17].sub_sample and not shipped[10].sub_sample  # the shipped default: P3 keys sub-sampled
    assert not full[17].sub_sample and not full[10].sub_sample
    assert float(full[17].w_z[1].weight.detach().min()) == pytest.approx(0.1)
    for i in (10, 17):  # max pooling adds no parameter: the same blocks otherwise
        assert [p.shape for p in full[i].parameters()] == [p.shape for p in shipped[i].parameters()]
    with pytest.raises(ValueError, match="unknown arm"):
        so.resolve_arm("nl-g0.3-full", "yolov8n", tmp_path)  # one order: block, -full, -g, -lr
    gc = so.resolve_arm("gc-full", "yolov8n", tmp_path)  # ContextBlock has no key grid: skipped, saying why
    assert gc.spec is None and "NonLocal option" in gc.note


def test_uniform_attention_arm_writes_the_model_yaml_key(tmp_path):
    import yaml

    arm = so.resolve_arm("nl-g0.3-u", "yolov8n", tmp_path)
    assert Path(arm.spec).name == "yolov8n-nl-g0.3-u.yaml"
    spec = yaml.safe_load(Path(arm.spec).read_text())
    assert spec["nonlocal_init_attention"] == "uniform" and spec["nonlocal_init_gamma"] == 0.3
    assert so.resolve_arm("gc-g1-u", "yolov8n", tmp_path).spec is None  # no attention maps to make uniform


def test_arms_and_plan(tmp_path):
    assert so.resolve_arm("baseline", "yolov8n", tmp_path).spec == "yolov8n.yaml"
    assert so.resolve_arm("nl", "yolov8n", tmp_path).spec == "yolov8n-nl.yaml"
    g = so.resolve_arm("nl-g0.5", "yolov8n", tmp_path)
    assert Path(g.spec).name == "yolov8n-nl-g0.5.yaml"
    assert so.resolve_arm("yolo11n", "yolov8n", tmp_path).peer
    with pytest.raises(ValueError, match="unknown arm"):
        so.resolve_arm("nonlocal", "yolov8n", tmp_path)
    args = so.parse_args(["--preset", "smoke", "--out", str(tmp_path)])
    arms = [so.resolve_arm(a, "yolov8n", tmp_path) for a in ("baseline", "nl", "yolo11n")]
    runs = so.plan(["farcue"], ["finetune", "scratch"], arms, [0, 1], args)
    ft = [r for r in runs if r["protocol"] == "finetune"]
    assert {r["arm"] for r in ft} == {"baseline", "nl"}, "peers are not fine-tuned from the yolov8n checkpoint"
    assert [r["protocol"] for r in runs[:1]] == ["pretrain"] and len(runs) == 2 * (1 + 2 + 3)


def test_plan_reports_what_is_finished_partial_and_waiting(tmp_path, capsys):
    """--plan names the folders execute() trains into: after a pretraining's best.pt exists its fine-tunes get
    their folders (they hash that checkpoint); a started run reports the epochs in its results.csv."""
    argv = ["--preset", "smoke", "--tasks", "neutral", "--protocols", "finetune", "--arms", "baseline,nl",
            "--seeds", "1", "--out", str(tmp_path)]  # fmt: skip

    def plan_lines():
        assert so.main([*argv, "--plan"]) == 0
        return [line for line in capsys.readouterr().out.splitlines() if line.startswith("neutral")]

    assert all(line.endswith("to train") for line in plan_lines())  # no data yet: nothing can exist
    args = so.parse_args(argv)
    data = so.datasets("neutral", args, tmp_path)["trainval"]
    assert data == so.trainval_folder("neutral", args, tmp_path) / "data.yaml"
    lines = plan_lines()
    assert lines[0].endswith("to train") and all(x.endswith("after its pretraining") for x in lines[1:])
    arms = [so.resolve_arm(a, "yolov8n", tmp_path) for a in ("baseline", "nl")]
    steps = so.run_folders(tmp_path, "neutral", data, so._train_kwargs("neutral", data, args),
                           so.plan(["neutral"], ["finetune"], arms, [0], args), arms, args)  # fmt: skip
    r, _, _, pre = next(steps)
    assert r["protocol"] == "pretrain" and pre.name.startswith("pretrain-baseline-s0-")
    (pre / "weights").mkdir(parents=True)
    (pre / "weights" / "best.pt").write_bytes(b"a checkpoint")
    (pre / "run.json").write_text(json.dumps({"complete": True}))
    _, _, kw, ft = next(steps)  # computed now that the checkpoint exists, as in execute()
    assert kw["pretrained"] == str(pre / "weights" / "best.pt") and ft.name.startswith("baseline-s0-")
    ft.mkdir(parents=True)
    (ft / "run.json").write_text(json.dumps({"started": True, "complete": False}))
    (ft / "results.csv").write_text("epoch,time\n1,2.0\n")
    lines = plan_lines()
    assert lines[0].endswith(f"finished ({pre.name})")
    assert lines[1].endswith(f"partial: 1/{args.finetune_epochs} epochs ({ft.name}, resumed from last.pt)")
    assert lines[2].endswith("to train")
    (pre / "weights" / "best.pt").write_bytes(b"another checkpoint")  # a retrained pretraining: new fine-tune folders
    assert plan_lines()[1].endswith("to train")


def test_summary_and_markdown_from_records():
    arms = [so.Arm("baseline", "yolov8n.yaml"), so.Arm("nl-g1", "x.yaml")]
    recs = []
    for seed, (b, m) in enumerate([(0.20, 0.30), (0.22, 0.35), (0.21, 0.28)]):
        for arm, ap in (("baseline", b), ("nl-g1", m)):
            recs.append({"task": "farcue", "protocol": "finetune", "arm": arm, "seed": seed, "epochs": 10, "train_seconds": 60,
                         "test": {"AP": ap, "AP50": ap, "APs": ap}, "cf_new": {"AP": ap / 2}, "cf_old": {"AP": ap},
                         "val_mAP": ap, **({"gamma": {"mean": 0.3 + seed / 100}} if arm == "nl-g1" else {})})  # fmt: skip
    rows, diffs = so.summarise(recs, ["farcue"], ["finetune"], arms)
    assert [r["arm"] for r in rows] == ["baseline", "nl-g1"]
    d = next(x for x in diffs if x["metric"] == "test AP")
    assert d["mean"] == pytest.approx(0.10) and d["n"] == 3 and d["ci"][0] < 0.10 < d["ci"][1]
    result = {"args": {"preset": "t", "seed0": 0, "seeds": 3, "n_train": 1, "n_val": 1, "n_test": 1, "data_seed": 0,
                       "pretrain_epochs": 1, "finetune_epochs": 1, "epochs": 1, "train_arg": []},
              "machine": {"line": "here"}, "minutes": 1.0, "arms": [vars(a) for a in arms], "rows": rows, "differences": diffs,
              "references": {"farcue": {"exact": {"oracle": {"AP": 1.0, "AP50": 1.0}, "blind_tied": {"AP": 0.5, "AP50": 0.5}}}}}  # fmt: skip
    text = so.markdown(result)
    assert "| rule-blind cap: exact boxes, every class, equal scores (exact) | 50.0 | 50.0 |" in text
    assert "finetune / nl-g1: test AP +10.0 (95% CI [" in text and "Machine: here" in text
    row = next(line for line in text.splitlines() if line.startswith("| finetune | nl-g1 |"))
    assert "| 0.310 ± 0.010 |" in row  # gamma as it is (not in %): mean of 0.30, 0.31, 0.32
    assert next(line for line in text.splitlines() if line.startswith("| finetune | baseline |")).count("| - |") >= 1


def _fake_result(folder, seeds, aps, blind=0.5):
    """A small_objects.json as execute() writes it: baseline and nl runs of farcue/finetune for ``seeds``."""
    recs = []
    for seed, (b, m) in zip(seeds, aps):
        for arm, ap in (("baseline", b), ("nl", m)):
            run_dir = folder / "runs" / f"{arm}-s{seed}"
            run_dir.mkdir(parents=True)
            if arm == "baseline":  # reference_lines' cache of the own-boxes lines
                (run_dir / "refs.json").write_text(json.dumps({"stamp": "x", "lines": {
                    "blind_tied_own_boxes": {"AP": ap / 2, "AP50": ap}, "blind_random_own_boxes": {"AP": ap / 4, "AP50": ap}}}))
            recs.append({"task": "farcue", "protocol": "finetune", "arm": arm, "seed": seed, "epochs": 15,
                         "train_seconds": 60, "run_dir": str(run_dir), "test": {"AP": ap, "AP50": ap}, "val_mAP": ap})  # fmt: skip
    arms = [vars(so.Arm("baseline", "yolov8n.yaml")), vars(so.Arm("nl", "yolov8n-nl.yaml"))]
    result = {"args": {"preset": "quick", "seed0": seeds[0], "seeds": len(seeds), "n_train": 1, "n_val": 1, "n_test": 1,
                       "data_seed": 0, "pretrain_epochs": 30, "finetune_epochs": 15, "epochs": 40, "train_arg": []},
              "machine": {"line": f"machine of {folder.name}"}, "minutes": 2.0, "arms": arms, "runs": recs, "rows": [],
              "differences": [], "references": {"farcue": {"exact": {"oracle": {"AP": 1.0, "AP50": 1.0},
                                                                     "blind_tied": {"AP": blind, "AP50": blind}}}}}  # fmt: skip
    (folder / "small_objects.json").write_text(json.dumps(result))
    return recs


def test_merge_pairs_the_runs_of_several_folders_as_one_run_would(tmp_path, capsys):
    a = _fake_result(tmp_path / "a", [0, 1], [(0.40, 0.80), (0.42, 0.44)])
    b = _fake_result(tmp_path / "b", [2], [(0.41, 0.75)])
    assert so.main(["--merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "m")]) == 0
    merged = json.loads((tmp_path / "m" / "small_objects.json").read_text())
    arms = [so.Arm("baseline", "yolov8n.yaml"), so.Arm("nl", "yolov8n-nl.yaml")]
    rows, diffs = so.summarise(a + b, ["farcue"], ["finetune"], arms)
    d = next(x for x in merged["differences"] if x["metric"] == "test AP")
    assert d["n"] == 3 and d["seeds"] == [0, 1, 2]
    assert d == next(x for x in diffs if x["metric"] == "test AP")
    assert d["mean"] == pytest.approx(((0.80 - 0.40) + (0.44 - 0.42) + (0.75 - 0.41)) / 3)
    own = merged["references"]["farcue"]["finetune"]["blind_tied_own_boxes"]["AP"]
    assert own[0] == pytest.approx((0.40 + 0.42 + 0.41) / 6), "own-boxes lines over every folder's baselines"
    text = (tmp_path / "m" / "small_objects.md").read_text()
    assert "machine of a; machine of b" in text and "finetune / nl: test AP +25.3 (95% CI [" in text
    assert "| oracle: exact boxes, true classes | 100.0 | 100.0 |" in text


def test_merge_refuses_conflicting_runs_and_other_test_splits(tmp_path):
    _fake_result(tmp_path / "a", [0], [(0.40, 0.80)])
    _fake_result(tmp_path / "b", [0], [(0.40, 0.70)])
    _fake_result(tmp_path / "c", [1], [(0.40, 0.70)], blind=0.33)
    with pytest.raises(SystemExit, match="in two folders with different test AP"):
        so.main(["--merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "m")])
    with pytest.raises(SystemExit, match="test splits differ"):
        so.main(["--merge", str(tmp_path / "a"), str(tmp_path / "c"), "--out", str(tmp_path / "m")])
    with pytest.raises(SystemExit, match="does not exist"):
        so.main(["--merge", str(tmp_path / "nothing"), "--out", str(tmp_path / "m")])
    assert not (tmp_path / "m").exists(), "nothing is written for a refused merge"


def test_block_gammas_read_the_checkpoint(tmp_path):
    from ultralytics import YOLO

    assert so.block_gammas_from_model(YOLO("yolov8n.yaml").model) is None
    model = YOLO(str(so.nl_variant_yaml("yolov8n-nl.yaml", tmp_path, 0.25, None))).model
    blocks = [m for m in model.modules() if type(m).__name__ == "NonLocal"]
    blocks[1].w_z[1].weight.data[:2] = -0.75  # |gamma| is averaged: two channels of the P3 block at 0.75
    g = so.block_gammas_from_model(model)
    p3 = (0.25 * (blocks[1].c1 - 2) + 0.75 * 2) / blocks[1].c1
    assert g["per_block"] == pytest.approx([0.25, p3]) and g["mean"] == pytest.approx((0.25 + p3) / 2)


def test_cue_sensitivity_counts_only_near_target_changes(tmp_path):
    import json

    from yolo_nonlocal.data.synthetic import SyntheticConfig, generate_sample, make_dataset

    data = make_dataset(tmp_path / "t", SyntheticConfig(kind="farcue", rule="far", n_train=1, n_val=3), progress=False)
    dets = []
    for i in range(3):
        s = generate_sample(SyntheticConfig(kind="farcue", rule="far", n_train=1, n_val=3), "val", i)
        x0, y0, x1, y1 = s.candidates[0]
        dets.append({"image_id": i, "category_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": 0.8})
        cx0, cy0, cx1, cy1 = s.cue[1]  # a detection on the cue itself: far from every target, not counted
        dets.append({"image_id": i, "category_id": 1, "bbox": [cx0, cy0, cx1 - cx0, cy1 - cy0], "score": 0.5})
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(dets))
    moved = [dict(d) for d in dets]
    moved[1]["score"] = 0.1  # the far detection changes: ignored
    b.write_text(json.dumps(moved))
    assert so.cue_sensitivity(data, a, b) == {"near_detections": 3, "changed": 0, "share": 0.0}
    moved[0]["category_id"] = 2  # a near detection follows the cue
    b.write_text(json.dumps(moved))
    assert so.cue_sensitivity(data, a, b) == {"near_detections": 4, "changed": 2, "share": 0.5}


def test_drop_options_removes_both_spellings():
    argv = ["--preset", "smoke", "--jobs", "2", "--seeds=3", "--out", "x", "--tasks", "neutral", "--seed0=1"]
    assert so._drop_options(argv, ("--jobs", "--seed0", "--seeds", "--out")) == ["--preset", "smoke", "--tasks", "neutral"]


@pytest.mark.slow
def test_jobs_train_each_seed_in_its_own_process_and_merge(tmp_path):
    """--jobs 2 on the smoke preset: the real script in a subprocess, two seeds at once into OUT/seed-<k>,
    one merged report in OUT pairing both seeds."""
    import subprocess
    import sys

    script = Path(so.__file__).resolve()
    out = tmp_path / "so"
    cmd = [sys.executable, str(script), "--preset", "smoke", "--tasks", "neutral", "--protocols", "finetune",
           "--arms", "baseline,nl", "--seeds", "2", "--jobs", "2", "--out", str(out)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:] + "".join((out / f"seed-{k}" / "log.txt").read_text()[-2000:] for k in (0, 1)
                                                         if (out / f"seed-{k}" / "log.txt").is_file())  # fmt: skip
    assert r.stderr.count(": started; its output: ") == 2 and r.stderr.count(": finished") == 2
    for k in (0, 1):
        part = json.loads((out / f"seed-{k}" / "small_objects.json").read_text())
        assert {x["seed"] for x in part["runs"]} == {k}
    merged = json.loads((out / "small_objects.json").read_text())
    assert sorted({(x["arm"], x["seed"]) for x in merged["runs"]}) == [("baseline", 0), ("baseline", 1), ("nl", 0), ("nl", 1)]
    d = next(x for x in merged["differences"] if x["metric"] == "test AP" and x["arm"] == "nl")
    assert d["n"] == 2 and d["seeds"] == [0, 1]
    assert "finetune / nl: test AP" in (out / "small_objects.md").read_text()
    plan = subprocess.run([sys.executable, str(script), "--preset", "smoke", "--tasks", "neutral", "--protocols", "finetune",
                           "--arms", "baseline,nl", "--seeds", "1", "--out", str(out / "seed-1"), "--seed0", "1", "--plan"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    runs = [line for line in plan.stdout.splitlines() if line.startswith("neutral")]
    assert len(runs) == 3 and all(" finished (" in line for line in runs), plan.stdout  # the folders execute() trained
