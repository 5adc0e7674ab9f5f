"""The evidence protocol (issue 10): does a Non-local block let a detector use long-range context, and where not?

Tasks (generated offline by yolo_nonlocal.data.synthetic, deterministic by seed; test split from another
generator seed, never used to choose anything):
  farcue        the positive control: 1024 x 64 strips, targets whose class is the colour of a cue placed
                beyond the largest receptive-field reach of every yolov8n output cell that can detect them
                (asserted by the generator), so the yolov8n baseline is capped at the rule-blind line
  farcue-near   the same with the cue within every P3 cell's reach: the rule is learnable by the baseline
  context       only the tiny square whose colour occurs exactly once is an object (256 px images)
  neutral       tiny shapes, all labelled, no long-range cue (the block should not hurt)

Protocols, every arm and every seed trained the same way through Ultralytics' own trainer:
  finetune   the protocol users follow: for each seed the baseline is first trained from scratch on the task
             (--pretrain-epochs), then every arm (the baseline included, so both train equally long) is
             fine-tuned from that checkpoint with pretrained= for --finetune-epochs. Peers with another
             architecture (yolo11n, yolo12n) have no such checkpoint and are left out here.
  scratch    every arm from random initialisation for --epochs.

Arms (--arms): baseline (MODEL.yaml); nl (MODEL-nl.yaml as shipped: gamma 0.3, uniform maps, the P3 row's keys
sub-sampled); nl-g0-r (the paper's identity init with random maps, the shipped default before round 4);
nl-g<G>[-lr<M>] (the shipped -nl YAML with the model-YAML keys nonlocal_init_gamma=G and nonlocal_lr_mult=M set,
written to OUT/models/); nl-full[-g..][-lr..] (the same from MODEL-nl-full.yaml: the P3 row at full resolution,
the shipped rows before round 5); a trailing -u / -r (nl...-u) sets nonlocal_init_attention: uniform (phi zero: uniform attention maps at insertion)
/ random (the paper's code); without it the shipped YAML's value is kept; gc[-g..]
[-lr..] and local[-g..][-lr..] (MODEL-gc.yaml / MODEL-local.yaml when installed, else the -nl YAML with
GCNet's ContextBlock / the parameter-matched LocalBlock control in its NonLocal rows); yolo11n, yolo12n,
yolo26n (peers), p2 and nl-p2 (MODEL-p2.yaml, MODEL-nl-p2.yaml: the stride-4 head rows; peers and p2 arms
train from scratch only, as no checkpoint of theirs exists); any path to a model YAML.

Per run: best checkpoint (Ultralytics' best.pt, chosen on the validation split) scored on the test split with
COCO AP (yolo_nonlocal.metrics.coco); for farcue also on the counterfactual test set (the same images with
only the cue repainted) against the new labels (a model that uses the cue follows it) and the old ones; for
arms with NonLocal blocks, the same test AP with every block reset to the identity (W_z's BatchNorm weight
and bias zeroed). Per task: the reference lines of benchmarks/reference_lines.py on the test split (oracle;
the rule-blind cap, exact; the rule-blind band with random scores; the same with the baseline's own boxes).
Per arm: mean and std over seeds, and the paired difference arm - baseline (same task, protocol and seed)
with a 95% t-interval.

    python benchmarks/small_objects.py --preset smoke                      # 1 epoch, a few images: the plumbing
    python benchmarks/small_objects.py --preset quick --tasks farcue       # CPU-sized (see --plan for the runs)
    python benchmarks/small_objects.py --preset full --device 0            # the fuller measurement (GPU advised)
    python benchmarks/small_objects.py --preset quick --plan               # list the runs and what is finished
    python benchmarks/small_objects.py --merge OUT1 OUT2 --out OUT         # one report from several folders

Every run lives in OUT/runs/<task>/<arm>-s<seed>-<fingerprint> (the fingerprint hashes the model file,
the dataset, every train argument, the seed, the pretrained checkpoint and the Ultralytics version): a
finished run is reused, an interrupted one resumed from last.pt, a changed setting gets a new folder. The
results go to OUT/small_objects.md and OUT/small_objects.json.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # reference_lines.py next to this file

TASKS: dict[str, dict[str, Any]] = {
    "farcue": {"kind": "farcue", "rule": "far"},
    "farcue-near": {"kind": "farcue", "rule": "near"},
    "context": {"kind": "context", "rule": "singleton"},
    "neutral": {"kind": "neutral", "rule": None},
    "context-count": {"kind": "context", "rule": "count"},
}
PROTOCOLS = ("finetune", "scratch")
PEERS = ("yolo11n", "yolo12n", "yolo26n")
TEST_SEED_OFFSET = 1000  # the test split's generator seed is --data-seed + this
PRESETS: dict[str, dict[str, Any]] = {
    # the plumbing only: every stage runs once on a handful of images
    "smoke": {"tasks": "farcue,neutral", "protocols": "finetune,scratch", "arms": "baseline,nl", "seeds": 1,
              "epochs": 1, "pretrain_epochs": 1, "finetune_epochs": 1, "n_train": 16, "n_val": 8, "n_test": 16,
              "draws": 2},
    # CPU-sized (2 cores, 1024 x 64 strips, 160 training images: about 16 s an epoch when the machine is
    # quiet): a fine-tune arm-seed about 4-5 min, each seed's baseline pretraining about 8 min. A yolov8n
    # from scratch first detects these targets after about 12 epochs (val mAP50 0.24 at epoch 15), hence 30.
    "quick": {"tasks": "farcue,farcue-near,neutral", "protocols": "finetune", "arms": "baseline,nl-g0-r,nl",
              "seeds": 3, "epochs": 40, "pretrain_epochs": 30, "finetune_epochs": 15, "n_train": 160, "n_val": 80,
              "n_test": 160, "draws": 10},
    # the fuller measurement (GPU advised)
    "full": {"tasks": "farcue,farcue-near,context,neutral", "protocols": "finetune,scratch",
             "arms": "baseline,nl-g0-r,nl,nl-g0.3-r,nl-full,gc-g1,local-g0.3,yolo11n,yolo12n", "seeds": 5, "epochs": 60,
             "pretrain_epochs": 40, "finetune_epochs": 30, "n_train": 800, "n_val": 300, "n_test": 500, "draws": 20},
}  # fmt: skip
# Student's t quantiles t_{0.975, df} for df = 1..30 (95% two-sided intervals); larger df use the normal
# approximation with Cornish-Fisher terms, which is within 1e-3 there.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip
RUN_VERSION = 1


def _log(msg: str) -> None:
    print(f"[small_objects] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------------
# statistics
# ------------------------------------------------------------------------------------------------------


def t975(df: int) -> float:
    """Student's t 0.975 quantile with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"df={df} must be >= 1")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def paired_difference(arm: list[float | None], base: list[float | None]) -> dict[str, Any]:
    """Mean of the per-seed differences arm - base, their std, n and the 95% t-interval (None when n < 2)."""
    d = [a - b for a, b in zip(arm, base) if a is not None and b is not None]
    if not d:
        return {"mean": None, "std": None, "n": 0, "ci": None}
    mean = statistics.fmean(d)
    if len(d) < 2:
        return {"mean": mean, "std": None, "n": 1, "ci": None}
    sd = statistics.stdev(d)
    half = t975(len(d) - 1) * sd / math.sqrt(len(d))
    return {"mean": mean, "std": sd, "n": len(d), "ci": [mean - half, mean + half]}


def mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


# ------------------------------------------------------------------------------------------------------
# arms
# ------------------------------------------------------------------------------------------------------


@dataclass
class Arm:
    name: str
    spec: str | None  # a model YAML Ultralytics can build, or None when not available
    peer: bool = False  # another architecture: no fine-tune from the baseline's checkpoint
    note: str = ""


_NL_ARM = re.compile(r"^(?P<block>nl|gc|local)(?P<full>-full)?(?:-g(?P<g>\d+(?:\.\d+)?))?(?:-lr(?P<lr>\d+(?:\.\d+)?))?(?P<att>-u|-r)?$")


def _loadable(spec: str) -> bool:
    from ultralytics.nn.tasks import yaml_model_load

    try:
        yaml_model_load(spec)
        return True
    except (FileNotFoundError, OSError):
        return False


BLOCKS = {"gc": "ContextBlock", "local": "LocalBlock"}  # sibling modules of NonLocal in the package's table


def nl_variant_yaml(base_spec: str, out_dir: Path, init_gamma: float | None, lr_mult: float | None,
                    block: str | None = None, init_attention: str | None = None) -> Path:
    """Write ``base_spec`` (a shipped -nl YAML, e.g. yolov8n-nl.yaml) with the model-YAML keys
    ``nonlocal_init_gamma`` / ``nonlocal_lr_mult`` set, as ``out_dir/<stem>-g<G>-lr<M>.yaml`` (the scale letter
    stays in the name, so Ultralytics picks the same scale); returns the path. ``block="gc"`` / ``"local"``
    also puts GCNet's ContextBlock / the LocalBlock control (default arguments) in every NonLocal row: the
    same places, the sibling block (named ``<model>-gc...`` / ``<model>-local...``). ``init_attention`` sets
    the model-YAML key ``nonlocal_init_attention``
    (``"uniform"``: suffix ``-u``; ``"random"``: ``-r``)."""
    import yaml
    from ultralytics.nn.tasks import yaml_model_load

    d = dict(yaml_model_load(base_spec))
    stem = Path(base_spec).stem
    if block is not None:
        module = BLOCKS[block]
        rows = 0
        for part in ("backbone", "head"):
            new = []
            for row in d.get(part, []):
                if row[2] == "NonLocal":
                    row = [row[0], row[1], module, []]
                    rows += 1
                new.append(row)
            d[part] = new
        if not rows:
            raise ValueError(f"{base_spec} has no NonLocal row to replace with {module}")
        stem = stem.replace("-nl", f"-{block}")
    scale = d.pop("scale", None)
    d.pop("yaml_file", None)
    if scale and "scales" in d:
        d["scales"] = {scale: d["scales"][scale]}  # one scale: the file's name no longer has to say it
    suffix = ""
    if init_gamma is not None:
        d["nonlocal_init_gamma"] = float(init_gamma)
        suffix += f"-g{init_gamma:g}"
    if lr_mult is not None:
        d["nonlocal_lr_mult"] = float(lr_mult)
        suffix += f"-lr{lr_mult:g}"
    if init_attention is not None:
        d["nonlocal_init_attention"] = init_attention
        suffix += {"uniform": "-u", "random": "-r"}[init_attention]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stem}{suffix}.yaml"
    text = f"# generated by benchmarks/small_objects.py from {base_spec}\n" + yaml.safe_dump(d, sort_keys=False)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def resolve_arm(name: str, model: str, out: Path) -> Arm:
    """The arm called ``name`` for the baseline family ``model`` (e.g. yolov8n); see the module docstring."""
    if name == "baseline":
        return Arm(name, f"{model}.yaml")
    m = _NL_ARM.match(name)
    if m:
        full, block = bool(m.group("full")), m.group("block")
        base = f"{model}-nl-full.yaml" if full else f"{model}-nl.yaml"
        g = float(m.group("g")) if m.group("g") else None
        lr = float(m.group("lr")) if m.group("lr") else None
        attention = {"-u": "uniform", "-r": "random", None: None}[m.group("att")]
        plain = g is None and lr is None and attention is None  # no option: a shipped YAML if any
        if block == "nl" and plain:
            return Arm(name, base)
        if block != "nl" and (full or attention is not None):  # options of NonLocal that the siblings lack
            option = "-full (the P3 row's keys at full resolution)" if full else f"{m.group('att')} (the attention's init)"
            return Arm(name, None, note=f"cannot build it ({option} is a NonLocal option; {BLOCKS[block]} has none): arm skipped")
        if block != "nl" and plain and _loadable(f"{model}-{block}.yaml"):
            return Arm(name, f"{model}-{block}.yaml")  # a shipped sibling YAML wins over the generated one
        try:
            path = nl_variant_yaml(base, out / "models", g, lr, None if block == "nl" else block, attention)
        except (ValueError, FileNotFoundError) as e:
            return Arm(name, None, note=f"cannot build it ({e}): arm skipped")
        return Arm(name, str(path))
    if name in PEERS:
        return Arm(name, f"{name}.yaml", peer=True)
    if name in ("p2", "nl-p2"):  # the stride-4 head rows: another layer layout, so from scratch only
        return Arm(name, f"{model}-{name}.yaml", peer=True)
    if name.endswith((".yaml", ".yml")):
        if not Path(name).is_file() and not _loadable(name):
            raise FileNotFoundError(f"--arms {name}: no such model YAML")
        return Arm(Path(name).stem, str(Path(name).resolve()) if Path(name).is_file() else name)
    raise ValueError(f"unknown arm {name!r}; use baseline, nl[-full]|gc|local[-g<G>][-lr<M>][-u|-r], p2, nl-p2, {', '.join(PEERS)} or a .yaml")


# ------------------------------------------------------------------------------------------------------
# runs
# ------------------------------------------------------------------------------------------------------


def _sha1(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def fingerprint(spec: str, data: Path, kwargs: dict, seed: int) -> str:
    import ultralytics

    content: dict[str, Any] = {"v": RUN_VERSION, "ultralytics": ultralytics.__version__, "seed": int(seed),
                               "spec": spec if not Path(spec).is_file() else _sha1(Path(spec)),
                               "data": _sha1(data), "kwargs": {k: kwargs[k] for k in sorted(kwargs)}}  # fmt: skip
    if kwargs.get("pretrained"):
        content["kwargs"] = {**content["kwargs"], "pretrained": _sha1(Path(kwargs["pretrained"]))}
    return hashlib.sha1(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:10]


def run_dir_for(out: Path, task: str, label: str, spec: str, data: Path, kwargs: dict, seed: int) -> Path:
    return out / "runs" / task / f"{label}-s{seed}-{fingerprint(spec, data, kwargs, seed)}"


def train(spec: str, data: Path, kwargs: dict, seed: int, run_dir: Path) -> dict:
    """Train (or reuse, or resume) one run; returns its record (weights, results.csv, train seconds)."""
    from ultralytics import YOLO

    record_path = run_dir / "run.json"
    best, last = run_dir / "weights" / "best.pt", run_dir / "weights" / "last.pt"
    record = json.loads(record_path.read_text()) if record_path.is_file() else None
    if record and record.get("complete") and best.is_file():
        _log(f"reusing {run_dir.name}")
        return record
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    args = {**kwargs, "data": str(data), "seed": int(seed), "project": str(run_dir.parent), "name": run_dir.name,
            "exist_ok": True}  # fmt: skip
    resumed = False
    if record is not None and record.get("started") and last.is_file():
        _log(f"resuming {run_dir.name} from last.pt")
        try:
            YOLO(str(last)).train(resume=True)
            resumed = True
        except Exception as e:  # e.g. it had finished; train again
            _log(f"cannot resume {run_dir.name} ({type(e).__name__}: {e}); training again")
    if not resumed:
        _log(f"training {spec} seed {seed} -> {run_dir}")
        record_path.write_text(json.dumps({"started": True, "complete": False}))
        YOLO(spec).train(**args)
    if not best.is_file():
        raise RuntimeError(f"training finished without {best}")
    record = {"complete": True, "spec": spec, "seed": seed, "weights": str(best), "results_csv": str(run_dir / "results.csv"),
              "train_seconds": round(time.time() - t0, 1), "epochs": kwargs.get("epochs"),
              "pretrained": kwargs.get("pretrained")}  # fmt: skip
    record_path.write_text(json.dumps(record, indent=2))
    return record


def best_val(results_csv: str | Path) -> dict[str, float | None]:
    """The validation mAP50-95 / mAP50 of the epoch Ultralytics kept as best.pt (highest fitness)."""
    path = Path(results_csv)
    if not path.is_file():
        return {"val_mAP": None, "val_mAP50": None, "best_epoch": None}
    with open(path) as f:
        rows = [{k.strip(): v for k, v in r.items()} for r in csv.DictReader(f)]

    def num(r, k):
        try:
            v = float(r.get(k, "nan"))
        except ValueError:
            return float("nan")
        return v

    best = max(rows, key=lambda r: 0.9 * num(r, "metrics/mAP50-95(B)") + 0.1 * num(r, "metrics/mAP50(B)"), default=None)
    if best is None:
        return {"val_mAP": None, "val_mAP50": None, "best_epoch": None}
    return {"val_mAP": num(best, "metrics/mAP50-95(B)"), "val_mAP50": num(best, "metrics/mAP50(B)"),
            "best_epoch": int(float(best.get("epoch", 0)))}  # fmt: skip


def _ablations() -> dict[str, Any]:
    """Test-time ablations of the NonLocal blocks that this checkout's yolo_nonlocal.tools.block_usage offers."""
    from yolo_nonlocal.tools import block_usage as bu

    out: dict[str, Any] = {}
    reset = getattr(bu, "reset_nonlocal_to_identity_", None) or getattr(bu, "disable_nonlocal_", None)
    if reset is not None:
        out["blocks_reset"] = ("fn", reset)
    if getattr(bu, "zero_nonlocal_gamma_", None) is not None:
        out["gamma_zero"] = ("fn", bu.zero_nonlocal_gamma_)
    if getattr(bu, "replace_y_by_spatial_mean", None) is not None:
        out["y_mean"] = ("ctx", bu.replace_y_by_spatial_mean)
    return out


def block_gammas(weights: str | Path) -> dict[str, Any] | None:
    """The mean |gamma| of W_z's BatchNorm in each NonLocal block of ``weights`` (model order), and their mean:
    how far training moved each block's output scale from its ``nonlocal_init_gamma``. None without blocks."""
    from ultralytics import YOLO

    return block_gammas_from_model(YOLO(str(weights)).model)


def block_gammas_from_model(model) -> dict[str, Any] | None:
    from yolo_nonlocal.nonlocal_block import NonLocal

    blocks = [m for m in model.modules() if isinstance(m, NonLocal)]
    if not blocks:
        return None
    per = [float(b.w_z[1].weight.detach().abs().mean()) for b in blocks]
    return {"per_block": per, "mean": statistics.fmean(per)}


def predict_split(weights: str | Path, data: Path, run_dir: Path, name: str, val_args: dict, ablation: str | None = None) -> Path:
    """Ultralytics val of ``weights`` on ``data``'s val split with save_json=True (optionally ablated); the
    predictions.json path, cached while the weights and the data are the same."""
    import contextlib

    from ultralytics import YOLO

    folder = run_dir / f"pred-{name}"
    stamp = {"weights": _sha1(Path(weights)), "data": _sha1(data), "ablation": ablation, "val_args": val_args}
    preds = folder / "predictions.json"
    stamp_path = folder / "stamp.json"
    if preds.is_file() and stamp_path.is_file() and json.loads(stamp_path.read_text()) == stamp:
        return preds
    model = YOLO(str(weights))
    ctx: Any = contextlib.nullcontext()
    if ablation is not None:
        how, fn = _ablations()[ablation]
        if how == "fn":
            fn(model.model)
        else:
            ctx = fn(model.model)
    with ctx:
        model.val(data=str(data), split="val", save_json=True, plots=False, verbose=False, project=str(run_dir),
                  name=f"pred-{name}", exist_ok=True, **val_args)  # fmt: skip
    if not preds.is_file():
        raise RuntimeError(f"validation of {weights} on {data} wrote no {preds}")
    stamp_path.write_text(json.dumps(stamp))
    return preds


def coco(data: Path, predictions: Path) -> dict[str, float | None]:
    from yolo_nonlocal.metrics.coco import evaluate

    res = evaluate(str(data), str(predictions), split="val", category_ids=1)  # Ultralytics writes class + 1
    return {k: (None if res.get(k) is None or res[k] < 0 else float(res[k])) for k in ("AP", "AP50", "APs")}


# ------------------------------------------------------------------------------------------------------
# the protocol
# ------------------------------------------------------------------------------------------------------


def trainval_folder(task: str, args: argparse.Namespace, out: Path) -> Path:
    """Where ``task``'s train/val split is written (its data.yaml inside): one name per size and generator seed."""
    return out / "data" / f"{task}-{args.n_train}-{args.n_val}-s{args.data_seed}"


def datasets(task: str, args: argparse.Namespace, out: Path) -> dict[str, Path]:
    """train/val, test (another generator seed) and, for farcue, the counterfactual test set."""
    from yolo_nonlocal.data.synthetic import SyntheticConfig, make_dataset

    spec = TASKS[task]
    base = {"kind": spec["kind"], "rule": spec["rule"]}
    ds = {"trainval": make_dataset(trainval_folder(task, args, out), SyntheticConfig(**base, n_train=args.n_train,
                                                                                     n_val=args.n_val, seed=args.data_seed),
                                   progress=False)}  # fmt: skip
    test_seed = args.data_seed + TEST_SEED_OFFSET
    test_cfg = {**base, "n_train": 1, "n_val": args.n_test, "seed": test_seed}
    ds["test"] = make_dataset(out / "data" / f"{task}-test-{args.n_test}-s{test_seed}", SyntheticConfig(**test_cfg), progress=False)
    if spec["kind"] == "farcue":
        ds["test_cf"] = make_dataset(out / "data" / f"{task}-test-cf-{args.n_test}-s{test_seed}",
                                     SyntheticConfig(**test_cfg, counterfactual=True), progress=False)  # fmt: skip
    return ds


def _train_kwargs(task: str, data: Path, args: argparse.Namespace) -> dict:
    from yolo_nonlocal.metrics.datasets import load_data_config

    kw = dict(load_data_config(data)["train_args"])  # the task's augmentations off, rect/imgsz for farcue
    kw.setdefault("imgsz", 256)
    kw.update({"batch": args.batch, "workers": args.workers, "plots": False, "deterministic": True, "val": True})
    if args.device is not None:
        kw["device"] = args.device
    kw.update(_kv(args.train_arg, "--train-arg"))
    return kw


def _kv(items: list[str], flag: str) -> dict[str, Any]:
    """KEY=VALUE strings as Ultralytics types them (its own smart_value); names checked against its config."""
    from ultralytics.cfg import DEFAULT_CFG_DICT, smart_value

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise SystemExit(f"{flag} {item!r} is not KEY=VALUE")
        if key not in DEFAULT_CFG_DICT:
            raise SystemExit(f"{flag} {item!r}: {key!r} is not an Ultralytics train argument")
        out[key] = smart_value(value)
    return out


def plan(tasks: list[str], protocols: list[str], arms: list[Arm], seeds: list[int], args: argparse.Namespace) -> list[dict]:
    """Every training run in order (pretraining first); ``pretrain_of`` links a fine-tune to its pretraining."""
    runs = []
    for task in tasks:
        for seed in seeds:
            if "finetune" in protocols:
                runs.append({"task": task, "protocol": "pretrain", "arm": "baseline", "seed": seed, "epochs": args.pretrain_epochs})
                for arm in arms:
                    if arm.spec and not arm.peer:
                        runs.append({"task": task, "protocol": "finetune", "arm": arm.name, "seed": seed,
                                     "epochs": args.finetune_epochs})  # fmt: skip
            if "scratch" in protocols:
                for arm in arms:
                    if arm.spec:
                        runs.append({"task": task, "protocol": "scratch", "arm": arm.name, "seed": seed, "epochs": args.epochs})
    return runs


def run_folders(out: Path, task: str, data: Path, kw: dict, runs: list[dict], arms: list[Arm], args: argparse.Namespace):
    """Yield ``(run, arm, train kwargs, folder)`` for ``task``'s runs in order, lazily: a fine-tune's folder hashes its
    pretraining's best.pt, so it is computed after that run is trained (by the caller, between two steps); while that
    checkpoint does not exist the folder is None."""
    pretrained: dict[int, Path] = {}
    for r in [r for r in runs if r["task"] == task]:
        arm = next(a for a in arms if a.name == r["arm"])  # the pretraining's arm is the baseline
        run_kw = {**kw, "epochs": r["epochs"]}
        label = "pretrain-baseline" if r["protocol"] == "pretrain" else arm.name
        if r["protocol"] == "scratch" and arm.name == "baseline":
            label = "pretrain-baseline"  # the same run as a pretraining of the same length: shared
        ready = True
        if r["protocol"] == "finetune":
            run_kw["pretrained"] = str(pretrained[r["seed"]])
            run_kw.update(_kv(args.finetune_arg, "--finetune-arg"))
            ready = pretrained[r["seed"]].is_file()
        run_dir = run_dir_for(out, task, label, arm.spec, data, run_kw, r["seed"]) if ready else None
        yield r, arm, run_kw, run_dir
        if r["protocol"] == "pretrain":
            pretrained[r["seed"]] = run_dir / "weights" / "best.pt"


def run_status(run_dir: Path | None, epochs: int) -> str:
    """What ``--plan`` says of one run: finished, partial (epochs in its results.csv), to train, or waiting."""
    if run_dir is None:
        return "after its pretraining"
    record_path = run_dir / "run.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    if record.get("complete") and (run_dir / "weights" / "best.pt").is_file():
        return f"finished ({run_dir.name})"
    if record.get("started"):
        csv = run_dir / "results.csv"
        done = max(len(csv.read_text().splitlines()) - 1, 0) if csv.is_file() else 0
        return f"partial: {done}/{epochs} epochs ({run_dir.name}, resumed from last.pt)"
    return "to train"


def cue_sensitivity(test_data: Path, preds: Path, preds_cf: Path, min_score: float = 0.01) -> dict[str, Any]:
    """How many detections near the targets change at all when only the cue is repainted.

    Near = the box overlaps a target's eligible anchor span (the cells that can detect the target or suppress
    its detection, :func:`yolo_nonlocal.data.receptive_field.eligible_anchor_span`). A detection is keyed by
    (image, class, box) as Ultralytics wrote it; it counts as changed when it is missing from the other run
    or its score moved by more than 1e-3. A model that cannot see the cue changes none of them; one that
    follows the cue changes their classes.
    """
    from reference_lines import split_samples

    from yolo_nonlocal.data.receptive_field import eligible_anchor_span

    spans = {img: [eligible_anchor_span(x0, x1) for x0, _, x1, _ in cands] for img, _, cands in split_samples(test_data)}

    def near(det: dict) -> bool:
        x, _, w, _ = det["bbox"]
        return any(x < b and x + w > a for a, b in spans.get(int(det["image_id"]), []))

    def keyed(path: Path) -> dict:
        return {(int(d["image_id"]), int(d["category_id"]), tuple(d["bbox"])): float(d["score"])
                for d in json.loads(Path(path).read_text()) if d["score"] >= min_score and near(d)}  # fmt: skip

    a, b = keyed(preds), keyed(preds_cf)
    keys = set(a) | set(b)
    changed = sum(1 for k in keys if k not in a or k not in b or abs(a[k] - b[k]) > 1e-3)
    return {"near_detections": len(keys), "changed": changed, "share": changed / len(keys) if keys else None}


def arm_reach(spec: str) -> dict[str, Any]:
    """The largest output-cell reach of an arm's model (px) and its global layers (attention-like)."""
    from yolo_nonlocal.data.receptive_field import receptive_fields

    try:
        fields = receptive_fields(spec)
    except (ValueError, TypeError) as e:  # a module the RF code has no rule for
        return {"reach": None, "global_layers": None, "reach_error": str(e)}
    glob = sorted({g for f in fields for g in f.global_layers})
    return {"reach": max(f.conv_head_reach for f in fields), "global_layers": glob}


def score_run(record: dict, ds: dict[str, Path], run_dir: Path, val_args: dict, is_farcue: bool) -> dict:
    """Test AP (and counterfactual, ablations) of one finished run, cached with its predictions."""
    scores: dict[str, Any] = dict(best_val(record["results_csv"]))
    w = record["weights"]
    test_preds = predict_split(w, ds["test"], run_dir, "test", val_args)
    scores["test"] = coco(ds["test"], test_preds)
    scores["test_predictions"] = str(test_preds)
    if is_farcue:
        cf = predict_split(w, ds["test_cf"], run_dir, "test_cf", val_args)
        scores["cf_new"] = coco(ds["test_cf"], cf)  # labels follow the repainted cue
        scores["cf_old"] = coco(ds["test"], cf)  # the same predictions against the original labels
        scores["cue_sensitivity"] = cue_sensitivity(ds["test"], test_preds, cf)
    gammas = block_gammas(w)  # None: no NonLocal block, nothing to ablate
    if gammas is not None:
        scores["gamma"] = gammas
        for name in _ablations():
            scores[name] = coco(ds["test"], predict_split(w, ds["test"], run_dir, f"test_{name}", val_args, ablation=name))
    return scores


def own_box_lines(own: list[dict]) -> dict:
    """Mean and std over seeds of the two rule-blind lines drawn with each baseline's own boxes."""
    return {k: {m: mean_std([o[k].get(m) for o in own]) for m in ("AP", "AP50")}
            for k in ("blind_tied_own_boxes", "blind_random_own_boxes") if own}  # fmt: skip


def execute(args: argparse.Namespace) -> dict:
    from reference_lines import reference_lines

    from yolo_nonlocal.utils.machine import describe_machine, machine_info

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    tasks = _split(args.tasks, TASKS, "task")
    protocols = _split(args.protocols, PROTOCOLS, "protocol")
    arm_names = [a.strip() for a in args.arms.split(",") if a.strip()]
    if "baseline" not in arm_names:
        arm_names.insert(0, "baseline")  # the pairs and the fine-tune start need it
    arms = [resolve_arm(a, args.model, out) for a in arm_names]
    seeds = list(range(args.seed0, args.seed0 + args.seeds))
    runs = plan(tasks, protocols, arms, seeds, args)
    t_start = time.time()
    records: list[dict] = []
    references: dict[str, dict] = {}
    for task in tasks:
        ds = datasets(task, args, out)
        kw = _train_kwargs(task, ds["trainval"], args)
        val_args = {k: kw[k] for k in ("imgsz", "batch", "device", "rect") if k in kw}
        val_args.setdefault("rect", True)
        is_farcue = TASKS[task]["kind"] == "farcue"
        for r, arm, run_kw, run_dir in run_folders(out, task, ds["trainval"], kw, runs, arms, args):
            rec = train(arm.spec, ds["trainval"], run_kw, r["seed"], run_dir)
            if r["protocol"] == "pretrain":
                continue
            scores = score_run(rec, ds, run_dir, val_args, is_farcue)
            records.append({**r, "spec": arm.spec, "run_dir": str(run_dir), "train_seconds": rec["train_seconds"],
                            "pretrained": run_kw.get("pretrained"), **scores})  # fmt: skip
        # reference lines on the test split; the own-boxes lines from each seed's baseline predictions
        refs: dict[str, Any] = {"exact": reference_lines(ds["test"], draws=args.draws, cache=out / "refs" / f"{task}.json")}
        for protocol in protocols:
            base = [x for x in records if x["task"] == task and x["protocol"] == protocol and x["arm"] == "baseline"]
            own = [reference_lines(ds["test"], predictions=x["test_predictions"], draws=args.draws,
                                   cache=Path(x["run_dir"]) / "refs.json") for x in base]  # fmt: skip
            refs[protocol] = own_box_lines(own)
        references[task] = refs
    rows, diffs = summarise(records, tasks, protocols, arms)
    reach = {a.name: arm_reach(a.spec) for a in arms if a.spec}
    for task in tasks:
        if TASKS[task] == {"kind": "farcue", "rule": "far"}:
            from yolo_nonlocal.data.synthetic import SyntheticConfig, farcue_reach

            references[task]["cue_distance"] = farcue_reach(SyntheticConfig(kind="farcue", rule="far"))
    machine = {"line": describe_machine(args.device), **machine_info(args.device)}
    result = {"args": vars(args), "machine": machine, "minutes": (time.time() - t_start) / 60,
              "arms": [{**vars(a), **reach.get(a.name, {})} for a in arms], "references": references, "rows": rows, "differences": diffs,
              "runs": records}  # fmt: skip
    (out / "small_objects.json").write_text(json.dumps(result, indent=2, default=str))
    text = markdown(result)
    (out / "small_objects.md").write_text(text + "\n")
    print(text)
    print(f"\nwrote {out / 'small_objects.md'} and {out / 'small_objects.json'}")
    return result


def merge(folders: list[str], out: str) -> dict:
    """One report from the ``small_objects.json`` of several output folders (runs split over processes or
    machines, e.g. two queues on the two cores of a machine where Ultralytics trains on one): the runs of
    all of them, summarised and paired by seed as one invocation would. A (task, protocol, arm, seed) given
    twice with different test AP is refused. The own-boxes reference lines are recomputed from each
    baseline's cached ``refs.json``; the exact ones must agree (the same test split)."""
    results = []
    for f in folders:
        path = Path(f) / "small_objects.json" if Path(f).is_dir() else Path(f)
        if not path.is_file():
            raise SystemExit(f"--merge: {path} does not exist (a folder written by this script, or its small_objects.json)")
        results.append(json.loads(path.read_text()))
    records: dict[tuple, dict] = {}
    for res in results:
        for r in res["runs"]:
            key = (r["task"], r["protocol"], r["arm"], r["seed"])
            if key in records and _metric(records[key], ("test", "AP")) != _metric(r, ("test", "AP")):
                raise SystemExit(f"--merge: {key} is in two folders with different test AP; keep one of them")
            records.setdefault(key, r)
    recs = list(records.values())
    tasks = list(dict.fromkeys(t for res in results for t in res["references"]))
    protocols = [p for p in PROTOCOLS if any(r["protocol"] == p for r in recs)]
    arm_dicts = {a["name"]: a for res in results for a in res["arms"]}
    arms = [Arm(a["name"], a["spec"], a.get("peer", False), a.get("note", "")) for a in arm_dicts.values()]
    references: dict[str, dict] = {}
    for task in tasks:
        refs = [res["references"][task] for res in results if task in res["references"]]
        exact = refs[0]["exact"]
        if any(json.dumps(r["exact"], sort_keys=True) != json.dumps(exact, sort_keys=True) for r in refs[1:]):
            raise SystemExit(f"--merge: the folders' {task} test splits differ (their exact reference lines do); "
                             "merge only runs of the same preset and --data-seed")  # fmt: skip
        references[task] = {k: v for k, v in refs[0].items() if k not in PROTOCOLS}
        for protocol in protocols:
            own = [json.loads((Path(r["run_dir"]) / "refs.json").read_text())["lines"] for r in recs
                   if r["task"] == task and r["protocol"] == protocol and r["arm"] == "baseline"
                   and (Path(r["run_dir"]) / "refs.json").is_file()]  # fmt: skip
            references[task][protocol] = own_box_lines(own)
    rows, diffs = summarise(recs, tasks, protocols, arms)
    seeds = sorted({r["seed"] for r in recs})
    # one line per machine (the load average differs from run to run)
    lines = list(dict.fromkeys(re.sub(r", load average [\d.]+", "", res["machine"]["line"]) for res in results))
    args = {**results[0]["args"], "seed0": seeds[0], "seeds": seeds[-1] - seeds[0] + 1, "merged": folders}
    result = {"args": args, "machine": {"line": "; ".join(lines), "sources": [res["machine"] for res in results]},
              "minutes": sum(res["minutes"] for res in results), "arms": [{**a} for a in arm_dicts.values()],
              "references": references, "rows": rows, "differences": diffs, "runs": recs}  # fmt: skip
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "small_objects.json").write_text(json.dumps(result, indent=2, default=str))
    text = markdown(result) + f"\n\nMerged from: {', '.join(folders)} (seeds {', '.join(map(str, seeds))})."
    (dest / "small_objects.md").write_text(text + "\n")
    print(text)
    print(f"\nwrote {dest / 'small_objects.md'} and {dest / 'small_objects.json'}")
    return result


METRICS = {"test AP": ("test", "AP"), "test AP50": ("test", "AP50"), "test APs": ("test", "APs"),
           "cf AP (new labels)": ("cf_new", "AP"), "cf AP (old labels)": ("cf_old", "AP"),
           "blocks reset AP": ("blocks_reset", "AP"), "gamma zeroed AP": ("gamma_zero", "AP"),
           "y by its mean AP": ("y_mean", "AP"), "near-target dets changed by the cue": ("cue_sensitivity", "share"),
           "final mean abs(gamma)": ("gamma", "mean")}  # fmt: skip


def _metric(rec: dict, key: tuple[str, str]) -> float | None:
    part = rec.get(key[0])
    return part.get(key[1]) if isinstance(part, dict) else None


def summarise(records: list[dict], tasks: list[str], protocols: list[str], arms: list[Arm]) -> tuple[list[dict], list[dict]]:
    rows, diffs = [], []
    for task in tasks:
        for protocol in protocols:
            base = {r["seed"]: r for r in records if r["task"] == task and r["protocol"] == protocol and r["arm"] == "baseline"}
            for arm in arms:
                rs = sorted((r for r in records if r["task"] == task and r["protocol"] == protocol and r["arm"] == arm.name),
                            key=lambda r: r["seed"])  # fmt: skip
                if not rs:
                    continue
                row: dict[str, Any] = {"task": task, "protocol": protocol, "arm": arm.name, "spec": arm.spec,
                                       "seeds": [r["seed"] for r in rs], "epochs": rs[0]["epochs"],
                                       "minutes_per_run": statistics.fmean(r["train_seconds"] for r in rs) / 60}  # fmt: skip
                for label, key in METRICS.items():
                    row[label] = mean_std([_metric(r, key) for r in rs])
                row["val mAP (best epoch)"] = mean_std([r.get("val_mAP") for r in rs])
                rows.append(row)
                if arm.name == "baseline" or not base:
                    continue
                for label in ("test AP", "test AP50", "cf AP (new labels)"):
                    seeds = [r["seed"] for r in rs if r["seed"] in base]
                    d = paired_difference([_metric(r, METRICS[label]) for r in rs if r["seed"] in base],
                                          [_metric(base[s], METRICS[label]) for s in seeds])  # fmt: skip
                    if d["n"]:
                        diffs.append({"task": task, "protocol": protocol, "arm": arm.name, "metric": label, "seeds": seeds, **d})
    return rows, diffs


def _pct(ms: Any) -> str:
    if not ms or ms[0] is None:
        return "-"
    mean, std = ms
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")


RAW_METRICS = {"final mean abs(gamma)"}  # shown as they are, not in %


def _plain(ms: Any) -> str:
    if not ms or ms[0] is None:
        return "-"
    mean, std = ms
    return f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")


def markdown(result: dict) -> str:
    args = result["args"]
    lines = [f"# Small-object evidence (benchmarks/small_objects.py, preset {args.get('preset')})", "",
             f"Machine: {result['machine']['line']}", ""]  # fmt: skip
    for task, refs in result["references"].items():
        ex = refs["exact"]
        lines += [f"## {task}", "", "Reference lines on the test split (COCO AP / AP50 in %):", "",
                  "| reference | AP | AP50 |", "|---|---:|---:|"]  # fmt: skip
        for name, label in (("oracle", "oracle: exact boxes, true classes"),
                            ("blind_tied", "rule-blind cap: exact boxes, every class, equal scores (exact)"),
                            ("blind_random", "rule-blind, exact boxes, every class, random scores (mean ± std)"),
                            ("blind_random_class", "rule-blind, exact boxes, one random class each")):  # fmt: skip
            v = ex.get(name, {})
            lines.append(f"| {label} | {_pct((v.get('AP'), v.get('AP_std')))} | {_pct((v.get('AP50'), v.get('AP50_std')))} |")
        for protocol in (p for p in PROTOCOLS if p in refs):
            for name, label in (("blind_tied_own_boxes", "rule-blind cap with the baseline's own boxes"),
                                ("blind_random_own_boxes", "rule-blind band with the baseline's own boxes")):  # fmt: skip
                v = refs[protocol].get(name)
                if v:
                    lines.append(f"| {label} ({protocol}, mean ± std over seeds) | {_pct(v['AP'])} | {_pct(v['AP50'])} |")
        task_rows = [r for r in result["rows"] if r["task"] == task]
        shown = [m for m in METRICS if any(r.get(m) and r[m][0] is not None for r in task_rows)]
        if refs.get("cue_distance") is not None:
            lines += ["", f"Who can see the cue: the generator keeps it more than {refs['cue_distance']:.0f} px from every "
                          "anchor that can detect (or suppress the detection of) a target."]  # fmt: skip
            for a in result["arms"]:
                if a.get("global_layers"):
                    lines.append(f"- {a['name']}: yes, through its attention-like layers {a['global_layers']}")
                elif a.get("reach") is not None:
                    capped = a["reach"] <= refs["cue_distance"]
                    lines.append(f"- {a['name']}: {'no' if capped else 'NOT excluded'}: its conv reach is {a['reach']:.0f} px"
                                 + ("" if capped else " (beyond the cue distance: not capped by construction)"))  # fmt: skip
        cols = ["protocol", "arm", "seeds", "epochs", *shown, "val mAP (best epoch)", "min / run"]
        lines += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in task_rows:
            cells = [r["protocol"], r["arm"], str(len(r["seeds"])), str(r["epochs"])]
            cells += [_plain(r.get(m)) if m in RAW_METRICS else _pct(r.get(m)) for m in shown]
            cells += [_pct(r["val mAP (best epoch)"]), f"{r['minutes_per_run']:.1f}"]
            lines.append("| " + " | ".join(cells) + " |")
        ds = [d for d in result["differences"] if d["task"] == task]
        if ds:
            lines += ["", "Paired differences, arm - baseline (same protocol and seed), points of AP:", ""]
            for d in ds:
                ci = f"95% CI [{100 * d['ci'][0]:+.1f}, {100 * d['ci'][1]:+.1f}]" if d["ci"] else "one seed: no interval"
                lines.append(f"- {d['protocol']} / {d['arm']}: {d['metric']} {100 * d['mean']:+.1f} ({ci}, n={d['n']})")
        lines.append("")
    notes = [a for a in result["arms"] if a.get("note")]
    lines += [f"- {a['name']}: {a['note']}" for a in notes]
    lines += [
        "",
        f"Settings: seeds {args['seed0']}..{args['seed0'] + args['seeds'] - 1}; n_train={args['n_train']}, n_val={args['n_val']}, "
        f"n_test={args['n_test']} (test generator seed {args['data_seed'] + TEST_SEED_OFFSET}); finetune = baseline "
        f"{args['pretrain_epochs']} epochs from scratch, then {args['finetune_epochs']} epochs per arm from it; scratch = "
        f"{args['epochs']} epochs; train args {' '.join(args['train_arg']) or 'none'} beyond the task's data.yaml "
        f"train_args (fine-tunes also {' '.join(args.get('finetune_arg') or []) or 'nothing more'}); Ultralytics' defaults "
        "otherwise (optimizer=auto, 3 warmup epochs). Test AP: best.pt (chosen on validation) on the held-out test split. cf = the counterfactual test "
        "set (only the cue repainted): a model that uses the cue scores high against the new labels and low against "
        "the old ones; one that ignores the cue scores about the same against both. Near-target dets changed by the "
        "cue = the share of detections (score >= 0.01) near the targets, where the cells that can detect them sit, "
        "that change at all when only the cue is repainted: 0 for a model that cannot see the cue. Ablations of the NonLocal arms "
        "at test time: blocks reset = W_z's BatchNorm weight and bias zeroed (the block is the identity); gamma "
        "zeroed = its weight only (the learned constant beta stays); y by its mean = every position gets the same "
        f"context (removes only the query dependence). Final mean abs(gamma): W_z's BatchNorm weight in the best "
        f"checkpoint, averaged over the blocks (its start is the arm's nonlocal_init_gamma). {result['minutes']:.1f} min in all.",
    ]
    return "\n".join(lines)


def _split(text: str, known, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in known]
    if bad:
        raise SystemExit(f"unknown {what} {bad}; known: {', '.join(known)}")
    return items


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick", help="defaults for everything below")
    p.add_argument("--tasks", help="comma list of: " + ", ".join(TASKS))
    p.add_argument("--protocols", help="comma list of: " + ", ".join(PROTOCOLS))
    p.add_argument("--arms", help="comma list: baseline, nl[-full][-g<G>][-lr<M>][-u|-r], gc, local, yolo11n, yolo12n, a .yaml")
    p.add_argument("--model", default="yolov8n", help="baseline family: MODEL.yaml and MODEL-nl.yaml")
    p.add_argument("--seeds", type=int, help="number of seeds (>= 3 for an interval worth reading)")
    p.add_argument("--seed0", type=int, default=0, help="first seed")
    p.add_argument("--epochs", type=int, help="scratch protocol epochs")
    p.add_argument("--pretrain-epochs", type=int, help="finetune protocol: the baseline's training from scratch")
    p.add_argument("--finetune-epochs", type=int, help="finetune protocol: epochs of every arm from it")
    p.add_argument("--n-train", type=int)
    p.add_argument("--n-val", type=int)
    p.add_argument("--n-test", type=int)
    p.add_argument("--draws", type=int, help="random-score draws of the rule-blind band")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="cpu", help="Ultralytics device (cpu, 0, ...)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--data-seed", type=int, default=0, help="generator seed of train/val (test: + 1000)")
    p.add_argument("--out", help="output folder (default benchmarks/runs/small_objects-<preset>)")
    p.add_argument("--train-arg", action="append", default=[], metavar="KEY=VALUE", help="extra Ultralytics train argument")
    p.add_argument("--finetune-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra Ultralytics train argument of the fine-tune runs only (e.g. warmup_epochs=0)")
    p.add_argument("--plan", action="store_true", help="print the runs, which are finished, partial (epochs done) or still to train, and stop")
    p.add_argument("--jobs", type=int, default=1, help="seeds trained at once, each by its own process into "
                   "OUT/seed-<k>, then merged into OUT (2 on a 2-core CPU: Ultralytics trains on cpu_count - 1 threads)")
    p.add_argument("--merge", nargs="+", metavar="DIR", help="write one report (to --out) from the runs of these "
                   "output folders, e.g. two queues run side by side on a 2-core CPU (Ultralytics trains on one core)")
    args = p.parse_args(argv)
    for k, v in PRESETS[args.preset].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.out is None:
        args.out = f"benchmarks/runs/small_objects-{args.preset}"
    if args.seeds < 1 or min(args.epochs, args.pretrain_epochs, args.finetune_epochs) < 1:
        p.error("--seeds and every --*epochs must be >= 1")
    if args.jobs < 1:
        p.error("--jobs must be >= 1")
    if min(args.n_train, args.n_val, args.n_test) < 1 or args.draws < 1:
        p.error("--n-train, --n-val, --n-test and --draws must be >= 1")
    _kv(args.train_arg, "--train-arg")  # refuse a typo before hours of training
    _kv(args.finetune_arg, "--finetune-arg")
    return args


def _drop_options(argv: list[str], names: tuple[str, ...]) -> list[str]:
    """``argv`` without the options ``names`` and their values (``--x V`` and ``--x=V``)."""
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in names:
            skip = True
        elif not a.startswith(tuple(n + "=" for n in names)):
            kept.append(a)
    return kept


def run_jobs(args: argparse.Namespace, argv: list[str]) -> None:
    """``--jobs N``: every seed by its own process of this script into OUT/seed-<k> (its output in log.txt
    there), N at a time, then one report merged from them into OUT. Each seed's runs are the same as in a
    plain invocation (seeded, one torch thread each on a 2-core CPU), in other folders."""
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    out = Path(args.out).resolve()
    base = _drop_options(argv, ("--jobs", "--seed0", "--seeds", "--out"))
    seeds = list(range(args.seed0, args.seed0 + args.seeds))

    def one(seed: int) -> Path:
        folder = out / f"seed-{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), *base, "--seed0", str(seed), "--seeds", "1", "--out", str(folder)]
        _log(f"seed {seed}: started; its output: {folder / 'log.txt'}")
        with open(folder / "log.txt", "a") as log:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
        if rc != 0:
            raise SystemExit(f"seed {seed} failed (exit {rc}); see {folder / 'log.txt'}")
        _log(f"seed {seed}: finished")
        return folder

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        folders = list(pool.map(one, seeds))
    merge([str(f) for f in folders], str(out))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.jobs > 1 and not args.plan and not args.merge:
        run_jobs(args, argv)
        return 0
    if args.merge:
        merge(args.merge, args.out)
        return 0
    if args.plan:
        out = Path(args.out).resolve()
        arm_names = [a.strip() for a in args.arms.split(",") if a.strip()]
        arms = [resolve_arm(a, args.model, out) for a in (["baseline"] if "baseline" not in arm_names else []) + arm_names]
        runs = plan(_split(args.tasks, TASKS, "task"), _split(args.protocols, PROTOCOLS, "protocol"), arms,
                    list(range(args.seed0, args.seed0 + args.seeds)), args)  # fmt: skip
        status: dict[int, str] = {}
        for task in sorted({r["task"] for r in runs}):
            data = trainval_folder(task, args, out) / "data.yaml"
            if data.is_file():  # the folders hash the data: without it every run of the task is still to train
                for r, _, _, run_dir in run_folders(out, task, data, _train_kwargs(task, data, args), runs, arms, args):
                    status[id(r)] = run_status(run_dir, r["epochs"])
        for r in runs:
            print(f"{r['task']:<12} {r['protocol']:<9} {r['arm']:<14} seed {r['seed']}  {r['epochs']} epochs  "
                  f"{status.get(id(r), 'to train')}")  # fmt: skip
        shared = sum(1 for r in runs if r["protocol"] == "scratch" and r["arm"] == "baseline"
                     and r["epochs"] == args.pretrain_epochs and "finetune" in args.protocols.split(","))  # fmt: skip
        print(f"{len(runs) - shared} training runs ({shared} scratch baselines shared with the pretraining)")
        for a in arms:
            if a.note:
                print(f"note: {a.name}: {a.note}")
        return 0
    execute(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
