"""The evidence protocol: does a Non-local block buy small-object AP, and where does it not?

Tasks (generated offline by yolo_nonlocal.data.synthetic, deterministic by seed):
  context   only the tiny square whose colour occurs exactly once is an object (a long-range cue)
  neutral   tiny shapes, all labelled, no long-range cue (the control: the block should not hurt)

Protocols, each a `yolo_nonlocal.tools.compare` run (identical Ultralytics train arguments, several seeds):
  scratch   MODEL.yaml vs MODEL-nl.yaml, both from random initialisation
  finetune  the paper's protocol: MODEL.yaml is first trained from scratch (--pretrain-epochs, seed 0);
            then MODEL-nl.yaml starts from those weights (pretrained=, indices remapped by the package's
            Ultralytics integration, the blocks start as the identity, so training starts from the
            baseline's exact function) and is fine-tuned for --finetune-epochs, against fine-tuning the
            baseline alone from the same weights for the same epochs
  p2        MODEL-p2.yaml (the usual small-object fix: a stride-4 head) vs MODEL-nl-p2.yaml, from scratch

Reported per row: mean and standard deviation over seeds of COCO AP and APs (coco_eval on the best
checkpoint, selected on the same validation set for both models), the mean validation AP of the last 5
epochs (free of that selection), the best checkpoint's AP and APs on a held-out test set (--n-test images
from another generator seed, never used to choose anything: the numbers to judge by), and
epochs-to-threshold: the first epoch whose validation AP (per-epoch coco/AP column, else Ultralytics'
mAP50-95) reaches --threshold times the best per-epoch AP any run of that task and protocol reached
(never reached: counted as epochs + 1 and marked). For the Non-local rows, two checks of
whether the trained model uses its blocks at all (yolo_nonlocal.tools.block_usage): the AP of the same checkpoints
with every block reset to the identity, and each block's residual norm(W_z y)/norm(x) on validation images
(0 for a fresh block). The table names the machine.

    python benchmarks/small_objects.py                                   # the full protocol (GPU advised)
    python benchmarks/small_objects.py --tasks context --protocols scratch --seeds 2 --epochs 8 \\
        --n-train 200 --n-val 100 --device cpu                           # a small CPU configuration

Runs are reused when the script is run again with the same settings (compare's fingerprints).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

TASKS = {"context": ("context", "singleton"), "neutral": ("neutral", None)}
PROTOCOLS = ("scratch", "finetune", "p2")
TEST_SEED_OFFSET = 1000  # the held-out test set's generator seed is --data-seed + this
LAST = 5  # the 'AP last epochs' column: mean validation AP of the last LAST epochs (no best-epoch selection)


def _log(msg: str) -> None:
    print(f"[small_objects] {msg}", file=sys.stderr, flush=True)


def _per_epoch_ap(results_csv: str | Path) -> list[float]:
    """Validation AP per epoch from an Ultralytics results.csv (coco/AP when present)."""
    path = Path(results_csv)
    if not path.is_file():
        return []
    with open(path) as f:
        rows = [{k.strip(): v for k, v in r.items()} for r in csv.DictReader(f)]
    if not rows:
        return []
    key = "coco/AP" if "coco/AP" in rows[0] else "metrics/mAP50-95(B)"
    out = []
    for r in rows:
        try:
            v = float(r[key])
        except (TypeError, ValueError, KeyError):
            v = float("nan")
        out.append(v if v >= 0 else float("nan"))
    return out


def _epochs_to(curve: list[float], target: float) -> int | None:
    for i, v in enumerate(curve, 1):
        if v == v and v >= target:
            return i
    return None


def _fmt(mean: float | None, std: float | None, scale: float = 100.0, digits: int = 1) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    return f"{scale * mean:.{digits}f} ± {scale * (std or 0.0):.{digits}f}"


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None and v == v]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _pretrain(model: str, data: Path, args: argparse.Namespace, common: dict, out: Path) -> Path:
    """Train the baseline once from scratch (seed 0) for the finetune protocol; reuse a finished run."""
    from ultralytics import YOLO

    run = out / f"{Path(model).stem}-e{args.pretrain_epochs}-{args.imgsz}"
    best = run / "weights" / "best.pt"
    done = run / "done.json"
    if best.is_file() and done.is_file() and json.loads(done.read_text()).get("data") == str(data):
        _log(f"pretrained baseline: reusing {best}")
        return best
    _log(f"pretraining {model} from scratch for {args.pretrain_epochs} epochs -> {run}")
    YOLO(model).train(
        data=str(data), epochs=args.pretrain_epochs, seed=0, project=str(run.parent), name=run.name, exist_ok=True,
        **common,
    )  # fmt: skip
    done.write_text(json.dumps({"data": str(data)}))
    return best


def _score(weights: Path, data: Path, run_dir: Path, name: str, common: dict, blocks_off: bool = False) -> dict:
    """COCO metrics of a checkpoint on the 'val' split of ``data`` (optionally with every NonLocal block reset
    to the identity, the ablation), cached in run_dir/name.json while the weights and data are the same."""
    from ultralytics import YOLO

    from yolo_nonlocal.tools import compare as cmp
    from yolo_nonlocal.tools.block_usage import disable_nonlocal_

    cache = run_dir / f"{name}.json"
    stamp = {"weights_sha1": cmp._sha1_file(weights), "data": str(data), "blocks_off": blocks_off}
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("stamp") == stamp:
            return cached["metrics"]
    model = YOLO(str(weights))
    if blocks_off:
        disable_nonlocal_(model)
    val_args = {k: common[k] for k in ("imgsz", "batch", "device", "workers") if k in common}
    model.val(
        data=str(data), split="val", save_json=True, plots=False, verbose=False, project=str(run_dir), name=name,
        exist_ok=True, **val_args,
    )  # fmt: skip
    metrics = cmp._coco_metrics(str(data), run_dir / name / "predictions.json", "val")
    cache.write_text(json.dumps({"stamp": stamp, "metrics": metrics}, indent=2))
    return metrics


def _block_evidence(run: dict, images: Path, common: dict) -> dict:
    """Is a trained Non-local model using its blocks? Their residual norm(W_z y)/norm(x) on up to 100 images,
    with the median of the same measure for the model's own shortcut bottlenecks, for scale."""
    from yolo_nonlocal.tools import compare as cmp
    from yolo_nonlocal.tools.block_usage import block_usage

    run_dir, weights = Path(run["run_dir"]), Path(run["weights"])
    cache = run_dir / "block_usage.json"
    stamp = {"weights_sha1": cmp._sha1_file(weights), "images": str(images)}
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("stamp") == stamp:
            return cached
    usage, shortcuts = block_usage(str(weights), images, imgsz=int(common["imgsz"]), max_images=100, shortcuts=True)
    out = {
        "stamp": stamp,
        "residual": {str(u.layer): u.residual for u in usage},
        "gamma": {str(u.layer): u.gamma for u in usage},
        "shortcut_residual_median": statistics.median(shortcuts.values()) if shortcuts else None,
    }
    cache.write_text(json.dumps(out, indent=2))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="context,neutral", help="comma list of: " + ", ".join(TASKS))
    p.add_argument("--protocols", default="scratch,finetune,p2", help="comma list of: " + ", ".join(PROTOCOLS))
    p.add_argument("--model", default="yolov8n", help="baseline family: MODEL.yaml, MODEL-nl.yaml, MODEL-p2.yaml, MODEL-nl-p2.yaml")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=60, help="epochs of the scratch and p2 protocols")
    p.add_argument("--pretrain-epochs", type=int, default=60, help="finetune protocol: baseline pretraining")
    p.add_argument("--finetune-epochs", type=int, default=20, help="finetune protocol: epochs after inserting the blocks")
    p.add_argument("--n-train", type=int, default=800)
    p.add_argument("--n-val", type=int, default=300)
    p.add_argument("--n-test", type=int, default=500, help="held-out test images (another generator seed); 0: none")
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default=None, help="Ultralytics device (cpu, 0, ...); default: Ultralytics' choice")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threshold", type=float, default=0.5, help="epochs-to-threshold: fraction of the best AP")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the generated datasets")
    p.add_argument("--out", default="benchmarks/runs/small_objects", help="output folder (runs are reused)")
    p.add_argument("--train-arg", action="append", default=[], metavar="KEY=VALUE", help="extra Ultralytics train argument (repeatable)")
    args = p.parse_args(argv)

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    protocols = [t.strip() for t in args.protocols.split(",") if t.strip()]
    bad = [t for t in tasks if t not in TASKS] + [q for q in protocols if q not in PROTOCOLS]
    if bad:
        p.error(f"unknown task/protocol {bad}; tasks: {', '.join(TASKS)}; protocols: {', '.join(PROTOCOLS)}")
    if args.n_test < 0:
        p.error("--n-test must be >= 0")
    if args.seeds < 1 or args.epochs < 1 or args.pretrain_epochs < 1 or args.finetune_epochs < 1:
        p.error("--seeds and every --*epochs must be >= 1")

    from yolo_nonlocal.tools import compare as cmp
    from yolo_nonlocal.data.synthetic import SyntheticConfig, load_data_yaml, make_dataset

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    common = {"imgsz": args.imgsz, "batch": args.batch, "workers": args.workers, "plots": False}
    if args.device is not None:
        common["device"] = args.device
    extra_kv, _ = cmp._parse(args.train_arg)
    common.update(extra_kv)
    m = args.model
    t_start = time.time()
    rows: list[dict] = []
    for task in tasks:
        kind, rule = TASKS[task]
        cfg = SyntheticConfig(kind=kind, rule=rule, n_train=args.n_train, n_val=args.n_val, imgsz=256, seed=args.data_seed)
        ds_dir = out / "data" / f"{task}-{args.n_train}-{args.n_val}-s{args.data_seed}"
        data = make_dataset(ds_dir, cfg, progress=False)
        test_data = None
        if args.n_test:  # a held-out set from another generator seed: no checkpoint is chosen on it
            test_cfg = SyntheticConfig(
                kind=kind, rule=rule, n_train=1, n_val=args.n_test, imgsz=256, seed=args.data_seed + TEST_SEED_OFFSET
            )
            test_dir = out / "data" / f"{task}-test-{args.n_test}-s{args.data_seed + TEST_SEED_OFFSET}"
            test_data = make_dataset(test_dir, test_cfg, progress=False)
        for protocol in protocols:
            pairs = {
                "scratch": (f"{m}.yaml", f"{m}-nl.yaml", args.epochs, None),
                "p2": (f"{m}-p2.yaml", f"{m}-nl-p2.yaml", args.epochs, None),
                "finetune": (f"{m}.yaml", f"{m}-nl.yaml", args.finetune_epochs, "pretrain"),
            }
            base, model, epochs, pre = pairs[protocol]
            kv = {**common, "epochs": epochs}
            if pre:
                pre_common = {**load_data_yaml(data).get("train_args", {}), **common}
                kv["pretrained"] = str(_pretrain(base, data, args, pre_common, out / "pretrain" / task))
            project = out / task / protocol
            _log(f"{task} / {protocol}: {base} vs {model}, {args.seeds} seeds, {epochs} epochs -> {project}")
            settings = cmp.settings_from_args(
                {**kv, "model": model, "baseline": base, "data": str(data), "seeds": args.seeds, "project": str(project)}
            )
            result = cmp.compare(settings)
            curves = {
                e["model"]: [_per_epoch_ap(r["results_csv"]) for r in e["runs"]] for e in result["models"]
            }
            best = max((v for cs in curves.values() for c in cs for v in c if v == v), default=float("nan"))
            target = args.threshold * best if best == best and best > 0 else float("nan")
            for e in result["models"]:
                evidence, off, test = [], [], []
                score_data = test_data or data  # the ablation is scored where the models are judged
                if test_data is not None:
                    _log(f"{task} / {protocol}: {e['model']} on the held-out test set ({args.n_test} images)")
                    test = [_score(Path(r["weights"]), test_data, Path(r["run_dir"]), "coco_test", common) for r in e["runs"]]
                if e["role"] == "model":
                    _log(f"{task} / {protocol}: block residuals and AP with the blocks off for {e['model']}")
                    evidence = [_block_evidence(r, ds_dir / "images" / "val", common) for r in e["runs"]]
                    name = "coco_test_blocks_off" if test_data is not None else "coco_val_blocks_off"
                    off = [
                        _score(Path(r["weights"]), score_data, Path(r["run_dir"]), name, common, blocks_off=True)
                        for r in e["runs"]
                    ]
                off_ap = _mean_std([v["AP"] for v in off])
                off_aps = _mean_std([v["APs"] for v in off])
                test_ap = _mean_std([v["AP"] for v in test])
                test_aps = _mean_std([v["APs"] for v in test])
                layers = sorted({k for v in evidence for k in v["residual"]}, key=int)
                residual = {k: statistics.fmean(v["residual"][k] for v in evidence) for k in layers}
                shortcut = [v["shortcut_residual_median"] for v in evidence if v.get("shortcut_residual_median") is not None]
                reached = [_epochs_to(c, target) if target == target else None for c in curves[e["model"]]]
                ett = [r if r is not None else epochs + 1 for r in reached]
                ett_mean, ett_std = _mean_std([float(v) for v in ett]) if target == target else (None, None)
                tail = [statistics.fmean(c[-LAST:]) for c in curves[e["model"]] if c and all(v == v for v in c[-LAST:])]
                tail_mean, tail_std = _mean_std(tail)
                rows.append(
                    {
                        "task": task,
                        "protocol": protocol,
                        "model": e["model"],
                        "role": e["role"],
                        "seeds": len(e["seeds"]),
                        "epochs": epochs,
                        "AP": e["AP"],
                        "AP_std": e["AP_std"],
                        "APs": e["APs"],
                        "APs_std": e["APs_std"],
                        "AP50": e["AP50"],
                        "AP_last": tail_mean,
                        "AP_last_std": tail_std,
                        "AP50_std": e["AP50_std"],
                        "epochs_to_threshold": ett_mean,
                        "epochs_to_threshold_std": ett_std,
                        "threshold_never_reached": sum(r is None for r in reached),
                        "threshold_AP": target if target == target else None,
                        "AP_test": test_ap[0],
                        "AP_test_std": test_ap[1],
                        "APs_test": test_aps[0],
                        "APs_test_std": test_aps[1],
                        "AP_blocks_off": off_ap[0],
                        "AP_blocks_off_std": off_ap[1],
                        "APs_blocks_off": off_aps[0],
                        "APs_blocks_off_std": off_aps[1],
                        "block_residual": residual,
                        "shortcut_residual_median": statistics.fmean(shortcut) if shortcut else None,
                        "params": e["params"],
                        "gflops": e["gflops"],
                        "latency_ms": e["latency_ms"],
                        "train_seconds": e["train_seconds"],
                    }
                )
    machine = cmp.machine_info(args.device)
    elapsed = (time.time() - t_start) / 60
    table = _table(rows, args, machine, elapsed)
    print(table)
    (out / "small_objects.md").write_text(table + "\n")
    (out / "small_objects.json").write_text(
        json.dumps({"args": vars(args), "machine": machine, "minutes": elapsed, "rows": rows}, indent=2, default=str)
    )
    print(f"\nwrote {out / 'small_objects.md'} and {out / 'small_objects.json'}")
    return 0


def _table(rows: list[dict], args: argparse.Namespace, machine: dict, minutes: float) -> str:
    test = bool(getattr(args, "n_test", 0))
    head = ["task", "protocol", "model", "seeds", "epochs", "val AP (%)", "val APs (%)", f"val AP, last {LAST} epochs (%)"]
    head += ["test AP (%)", "test APs (%)"] if test else []
    head += ["AP blocks off (%)", "block residual (%)", "epochs to threshold", "params (M)", "GFLOPs", "latency ms"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ett = "n/a" if r["epochs_to_threshold"] is None else f"{r['epochs_to_threshold']:.1f} ± {r['epochs_to_threshold_std']:.1f}"
        if r["threshold_never_reached"]:
            ett += f" ({r['threshold_never_reached']} never)"
        off = _fmt(r.get("AP_blocks_off"), r.get("AP_blocks_off_std")) if r.get("AP_blocks_off") is not None else "-"
        res = ", ".join(f"L{k} {100 * v:.1f}" for k, v in (r.get("block_residual") or {}).items()) or "-"
        cells = [r["task"], r["protocol"], r["model"], str(r["seeds"]), str(r["epochs"]), _fmt(r["AP"], r["AP_std"]),
                 _fmt(r["APs"], r["APs_std"]), _fmt(r.get("AP_last"), r.get("AP_last_std"))]  # fmt: skip
        if test:
            cells += [_fmt(r.get("AP_test"), r.get("AP_test_std")), _fmt(r.get("APs_test"), r.get("APs_test_std"))]
        cells += [off, res, ett, f"{r['params'] / 1e6:.2f}", f"{r['gflops']:.2f}", f"{r['latency_ms']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Differences (model - baseline, AP points; 'within noise' when |d| <= 2 x the larger seed std):"]
    by_key: dict[tuple, dict] = {}
    for r in rows:
        by_key.setdefault((r["task"], r["protocol"]), {})[r["role"]] = r
    for (task, protocol), pair in by_key.items():
        b, mdl = pair.get("baseline"), pair.get("model")
        if not b or not mdl:
            continue
        parts = []
        for k in ("AP", "APs", "AP_last", "AP_test", "APs_test"):
            if b.get(k) is None or mdl.get(k) is None:
                continue
            d = mdl[k] - b[k]
            noise = 2 * max(b[f"{k}_std"] or 0.0, mdl[f"{k}_std"] or 0.0)
            verdict = "within noise" if abs(d) <= noise or b["seeds"] < 2 else ("better" if d > 0 else "worse")
            label = {"AP": "val AP", "APs": "val APs", "AP_last": f"val AP last {LAST} epochs", "AP_test": "test AP",
                     "APs_test": "test APs"}[k]  # fmt: skip
            parts.append(f"{label} {100 * d:+.1f} ({verdict})")
        judged = "AP_test" if mdl.get("AP_test") is not None else "AP"
        if mdl.get("AP_blocks_off") is not None and mdl.get(judged) is not None:
            parts.append(
                f"{mdl['model']} with its blocks reset to the identity: {'test AP' if judged == 'AP_test' else 'val AP'} "
                f"{100 * (mdl['AP_blocks_off'] - mdl[judged]):+.1f}"
            )
        if mdl.get("shortcut_residual_median") is not None:
            parts.append(f"residual of its own shortcut bottlenecks, for scale: median {100 * mdl['shortcut_residual_median']:.0f}%")
        lines.append(f"- {task} / {protocol}: " + ", ".join(parts))
    lines += [
        "",
        f"Settings: tasks {args.tasks}; protocols {args.protocols}; n_train={args.n_train}, n_val={args.n_val}, "
        f"imgsz={args.imgsz}, batch={args.batch}, seeds={args.seeds}"
        + (f", epochs={args.epochs}" if {"scratch", "p2"} & set(args.protocols.split(",")) else "")
        + (f", pretrain={args.pretrain_epochs}, finetune={args.finetune_epochs}" if "finetune" in args.protocols else "")
        + (f", train args {' '.join(args.train_arg)} (both models)" if args.train_arg else "")
        + f"; epochs to threshold = first epoch with AP >= {args.threshold} x the best per-epoch AP of that task and "
        f"protocol (a run that never gets there counts as epochs + 1); val AP, val APs from the best checkpoint "
        f"(chosen on the validation set it is scored on, for both models alike); val AP last {LAST} epochs = the mean "
        f"per-epoch validation AP of the last {LAST} epochs, free of that selection; "
        + (f"test AP, APs = the best checkpoint on {args.n_test} held-out images (generator seed "
           f"{args.data_seed + TEST_SEED_OFFSET}); " if test else "")
        + f"AP blocks off = the Non-local checkpoints scored on the {'test' if test else 'validation'} set with every "
        f"block reset to the identity (W_z's BatchNorm zeroed); block residual = mean "
        f"norm(W_z y)/norm(x) per NonLocal layer L on up to 100 validation images (0 for a fresh block); "
        f"{minutes:.1f} min in all.",
        f"Machine: {machine.get('platform')}; CPU {machine.get('cpu')} ({machine.get('cpu_count')} cores, "
        f"{machine.get('torch_threads')} torch threads); device {machine.get('device')}"
        f"{' ' + machine['accelerator'] if machine.get('accelerator') else ''}; torch {machine.get('torch')}; "
        f"ultralytics {machine.get('ultralytics')}.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
