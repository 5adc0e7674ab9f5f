"""Train a Non-local YOLO and its baseline the same way and compare their COCO AP, small-object AP included.

Why: a Non-local block costs compute; whether it buys small-object AP on a given dataset is an empirical
question that needs both models trained identically (same data, epochs, augmentations, seeds, device),
scored with the same COCO protocol, and the spread over seeds next to the difference.

What it does, for every seed and for both models:

1. trains through Ultralytics' own trainer (``ultralytics.YOLO(model).train(...)``) with identical
   arguments, ``seed=`` set per run and ``deterministic=True`` (Ultralytics' default);
2. validates the best checkpoint once more with ``save_json=True`` and scores its ``predictions.json``
   with :func:`yolo_nonlocal.metrics.coco.evaluate` (AP, AP50, AP75, APs, APm, APl);
3. measures parameters, GFLOPs *including the attention products* that a conv-only FLOP counter misses
   (:meth:`NonLocal.attention_macs`), and batch-1 inference latency on the device used.

Then it writes ``DIR/compare.json``, ``DIR/compare.csv``, ``DIR/compare.md`` (one entry per model: mean
and standard deviation over seeds) and ``DIR/compare.png`` (the metrics with error bars).

Every run lives in ``DIR/runs/<label>-seed<k>-<fingerprint>``: the fingerprint hashes the model, the
dataset (its data.yaml content), every train argument, the seed and the Ultralytics version. A run whose
``run.json`` says it finished is reused on the next invocation instead of retrained; a run that stopped
half-way is resumed from its ``last.pt``; changing any setting gives a new folder, so nothing is
overwritten. ``--force`` retrains (into the same folder).

A dataset written by :mod:`yolo_nonlocal.data.synthetic` carries ``train_args`` in its data.yaml (mosaic,
translate, scale and colour jitter off: they would cut the long-range cue out of the image); they are
applied to both models unless given on the command line, and printed.

This module holds the settings, the runs and :func:`compare`; :mod:`yolo_nonlocal.tools.cost` measures
params, GFLOPs and latency, :mod:`yolo_nonlocal.tools.compare_report` writes the reports. Python API:
``compare(settings_from_args({"model": ..., "baseline": ..., "data": ..., "seeds": 3, "epochs": 30}))``;
the command line (``yolo-nonlocal compare``, :mod:`yolo_nonlocal.cli.compare`) is a thin layer over it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yolo_nonlocal.tools.compare_report import (
    METRICS, chart, dataset_label, markdown, pct, result_table, summarise, write_csv,
)  # fmt: skip
from yolo_nonlocal.tools.cost import machine_info, measure_latency, model_cost
from yolo_nonlocal.utils.device import torch_device

__all__ = [
    "METRICS", "OWN_KEYS", "FORBIDDEN_TRAIN_ARGS", "CompareSettings", "compare", "settings_from_args",
    "check_train_arg", "model_cost", "measure_latency", "machine_info", "coco_metrics", "sha1_file",
    "dataset_label", "result_table",
]  # fmt: skip

COMPARE_VERSION = 1

# Arguments compare owns: they are not Ultralytics train arguments, or compare sets them per run.
OWN_KEYS = ("model", "baseline", "data", "seeds", "seed", "project", "latency_runs", "jobs")
# Ultralytics train arguments compare sets itself, with the reason a user cannot
FORBIDDEN_TRAIN_ARGS = {
    "name": "compare names every run itself (<label>-seed<k>-<fingerprint>)",
    "exist_ok": "compare decides whether a run folder is reused, resumed or retrained",
    "resume": "compare resumes an interrupted run by itself; just run the same command again",
    "mode": "compare always trains",
    "task": "compare trains detection models",
    "save_json": "compare runs its own COCO evaluation after training",
}
# Defaults compare uses unless the command line says otherwise: no plots (Ultralytics would try to fetch
# a font while offline), and seeded, deterministic training.
_DEFAULTS = {"plots": False, "deterministic": True}


def _log(msg: str) -> None:
    print(f"[compare] {msg}", file=sys.stderr, flush=True)


def sha1_file(path: Path) -> str:
    """The SHA-1 of a file's content (hex), read in 1 MiB chunks: run fingerprints and result caches use it."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _finite(v: Any) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


@dataclass
class CompareSettings:
    """One comparison: the two models, the dataset, the seeds and the train arguments both get."""

    model: str
    baseline: str
    data: str
    project: Path
    seeds: list[int] = field(default_factory=lambda: [0])
    train_args: dict[str, Any] = field(default_factory=dict)  # epochs, imgsz, device, batch, ...
    latency_runs: int = 30
    jobs: int = 1  # training runs at once, each in its own process (see compare())

    def labels(self) -> tuple[str, str]:
        """Short names for the two models (file stems; disambiguated when they coincide)."""
        m, b = Path(self.model).stem, Path(self.baseline).stem
        if m == b:
            m, b = f"{m}-model", f"{b}-baseline"
        return m, b


def coco_metrics(data: str, predictions: Path, split: str) -> dict[str, float | None]:
    """The COCO box metrics (:data:`METRICS`, fractions) of a predictions JSON; None where COCO has no score."""
    try:
        from yolo_nonlocal.metrics.coco import evaluate
    except ImportError as e:  # pragma: no cover - ships with the package
        raise RuntimeError(f"compare needs yolo_nonlocal.metrics.coco for the COCO metrics: {e}") from e
    res = evaluate(data, str(predictions), split=split)
    out = {k: _finite(res.get(k)) for k in METRICS}
    # COCO reports -1 for an area range without ground truth (APm/APl on tiny-object sets): not a score
    return {k: (None if v is None or v < 0 else v) for k, v in out.items()}


# ----------------------------------------------------------------------------------------------------------
# one run
# ----------------------------------------------------------------------------------------------------------


def _fingerprint(model: str, data: str, train_args: dict[str, Any], seed: int) -> tuple[str, dict]:
    import ultralytics

    def ident(spec: str) -> dict:
        p = Path(spec)
        return {"spec": spec, "sha1": sha1_file(p)} if p.is_file() else {"spec": spec}

    content = {
        "compare_version": COMPARE_VERSION,
        "ultralytics": ultralytics.__version__,
        "model": ident(model),
        "data": ident(data),
        "seed": int(seed),
        "train_args": {k: train_args[k] for k in sorted(train_args)},
    }
    pretrained = train_args.get("pretrained")
    if isinstance(pretrained, str) and Path(pretrained).is_file():
        content["pretrained_sha1"] = sha1_file(Path(pretrained))
    blob = json.dumps(content, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:10], content


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _run_dir(settings: CompareSettings, spec: str, label: str, seed: int) -> tuple[Path, dict]:
    fp, content = _fingerprint(spec, settings.data, dict(settings.train_args), seed)
    return settings.project / "runs" / f"{label}-seed{seed}-{fp}", content


def _run_one_logged(log: str, *job: Any) -> dict[str, Any]:
    """:func:`_run_one` in a worker process, its output (Ultralytics' included) appended to ``log``."""
    import os

    Path(log).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return _run_one(*job)


def _label_caches(data: str) -> list[Path] | None:
    """The label caches Ultralytics writes for the train and val splits of ``data`` (beside the first image's
    label folder: ``labels/train.cache``), or None when the splits cannot be listed."""
    from yolo_nonlocal.metrics.datasets import label_file_for, load_data_config, split_image_files

    try:
        cfg = load_data_config(data)
        firsts = [split_image_files(cfg, split)[:1] for split in ("train", "val")]
    except Exception:  # an unusual layout: the caller falls back to waiting for a finished epoch
        return None
    if not all(firsts):
        return None
    return [Path(label_file_for(f[0])).parent.with_suffix(".cache") for f in firsts]


def _caches_written(caches: list[Path] | None, since: float) -> bool:
    """Whether every cache was written after ``since`` and not in the last 2 s (complete). A cache from
    before may be stale, and a stale one is rewritten by every run that reads it: it does not count."""
    if not caches:
        return False
    now = time.time()
    try:
        return all(since <= c.stat().st_mtime < now - 2 for c in caches)
    except OSError:
        return False


def _epochs_done(run_dir: Path) -> int:
    try:
        return max(0, len((run_dir / "results.csv").read_text().splitlines()) - 1)
    except OSError:
        return 0


def _run_parallel(settings: CompareSettings, plan: list[tuple], force: bool) -> list[dict[str, Any]]:
    """The runs of ``plan``, ``settings.jobs`` at a time, each in a fresh (spawned) process.

    On a CPU, Ultralytics trains with ``cpu_count - 1`` threads (one thread on 2 cores), so one run leaves a
    core idle for another (benchmarks/parallel_runs.py measures what that gains). Each worker writes its
    output to its run folder's ``train.log``; this process prints the epochs done. Two processes must not
    write Ultralytics' label caches at once, so the second run starts once the first has written them
    (``labels/train.cache`` and ``labels/val.cache``), or else once it has finished an epoch. Results are
    the same as one at a time: every run is seeded.
    """
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    total = settings.train_args.get("epochs")
    caches = _label_caches(settings.data)
    t_start = time.time()
    jobs = []
    for i, (seed, role, spec, label) in enumerate(plan, 1):
        run_dir, _ = _run_dir(settings, spec, label, seed)
        jobs.append((f"({i}/{len(plan)})", label, seed, run_dir, (settings, role, spec, label, seed, force)))
    futures: dict[int, Any] = {}
    finished: set[int] = set()
    epochs: dict[int, int] = {}
    with ProcessPoolExecutor(max_workers=settings.jobs, mp_context=mp.get_context("spawn")) as pool:
        while len(finished) < len(jobs):
            n = len(futures)
            ready = n == 0 or futures[n - 1].done() or _epochs_done(jobs[n - 1][3]) > 0 or _caches_written(caches, t_start)
            if n < len(jobs) and ready:
                step, label, seed, run_dir, job = jobs[n]
                _log(f"{step} {label} seed {seed}: handed to a worker process; its output: {run_dir / 'train.log'}")
                futures[n] = pool.submit(_run_one_logged, str(run_dir / "train.log"), *job, step)
                continue
            for k, f in futures.items():
                step, label, seed, run_dir, _ = jobs[k]
                if k in finished:
                    continue
                if f.done():
                    finished.add(k)
                    try:
                        rec = f.result()
                    except Exception as e:
                        for g in futures.values():
                            g.cancel()  # the runs not started yet; those going on finish and are kept for reuse
                        tail = "".join((run_dir / "train.log").read_text(errors="replace").splitlines(True)[-20:])
                        _log(f"{step} {label} seed {seed} failed; waiting for the runs still going (kept for reuse)")
                        raise RuntimeError(
                            f"{step} {label} seed {seed} failed ({type(e).__name__}: {e}); the end of "
                            f"{run_dir / 'train.log'}:\n{tail}"
                        ) from e
                    _log(f"{step} {label} seed {seed}: AP {pct(rec.get('AP'))}  APs {pct(rec.get('APs'))}"
                         + ("  (reused)" if rec.get("reused") else f"  ({rec['train_seconds']:.0f} s training)"))
                elif (done := _epochs_done(run_dir)) != epochs.get(k, 0):
                    epochs[k] = done
                    _log(f"{step} {label} seed {seed}: epoch {epochs[k]}" + (f"/{total}" if total else "") + " done")
            going = [f for k, f in futures.items() if k not in finished]
            if going:
                wait(going, timeout=1 if len(futures) < len(jobs) else 5, return_when=FIRST_COMPLETED)
    return [futures[k].result() for k in range(len(jobs))]


def _run_one(
    settings: CompareSettings, role: str, spec: str, label: str, seed: int, force: bool, step: str
) -> dict[str, Any]:
    from ultralytics import YOLO

    args = dict(settings.train_args)
    run_dir, content = _run_dir(settings, spec, label, seed)
    record_path = run_dir / "run.json"
    best, last = run_dir / "weights" / "best.pt", run_dir / "weights" / "last.pt"
    record = _read_json(record_path)
    if record and record.get("complete") and best.is_file() and not force:
        _log(f"{step} {label} seed {seed}: reusing the finished run in {run_dir}")
        # the cost is counted again by this version (a record from an older one may hold a stale count)
        record.update(model_cost(YOLO(str(best)).model, int(args.get("imgsz", 640))))
        record["reused"] = True
        return record

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "fingerprint.json").write_text(json.dumps(content, indent=2, sort_keys=True, default=str))
    t0 = time.time()
    if last.is_file() and not force and record is not None and record.get("started"):
        _log(f"{step} {label} seed {seed}: resuming the interrupted run from {last}")
        try:
            YOLO(str(last)).train(resume=True)
        except Exception as e:  # an unusable checkpoint (e.g. it finished but run.json was not written)
            _log(f"{step} {label} seed {seed}: cannot resume ({type(e).__name__}: {e}); training again")
            YOLO(spec).train(**_train_kwargs(settings, args, run_dir, seed))
    else:
        _log(f"{step} training {label} ({role}: {spec}) seed {seed} -> {run_dir}")
        record_path.write_text(json.dumps({"started": True, "complete": False}))
        YOLO(spec).train(**_train_kwargs(settings, args, run_dir, seed))
    train_s = time.time() - t0
    if not best.is_file():
        raise RuntimeError(f"training {label} seed {seed} finished without {best}; see the log above")

    _log(f"{step} {label} seed {seed}: COCO evaluation of {best.name}")
    trained = YOLO(str(best))
    imgsz = int(args.get("imgsz", 640))
    val_args = {
        k: args[k] for k in ("imgsz", "batch", "device", "workers", "half", "single_cls", "classes", "rect") if k in args
    }
    trained.val(
        data=settings.data,
        split="val",
        save_json=True,
        plots=False,
        verbose=False,
        project=str(run_dir),
        name="coco_val",
        exist_ok=True,
        **val_args,
    )
    predictions = run_dir / "coco_val" / "predictions.json"
    if not predictions.is_file():
        raise RuntimeError(f"validation of {best} wrote no {predictions}")
    metrics = coco_metrics(settings.data, predictions, "val")
    cost = model_cost(trained.model, imgsz)
    record = {
        "complete": True,
        "role": role,
        "model": spec,
        "label": label,
        "seed": seed,
        "run_dir": str(run_dir),
        "weights": str(best),
        "results_csv": str(run_dir / "results.csv"),
        "train_seconds": round(train_s, 1),
        **metrics,
        **cost,
        "device": str(torch_device(args.get("device"))),
    }
    record_path.write_text(json.dumps(record, indent=2))
    _log(
        f"{step} {label} seed {seed}: AP {pct(metrics['AP'])}  APs {pct(metrics['APs'])}  "
        f"({train_s:.0f} s training)"
    )
    return record


def _train_kwargs(settings: CompareSettings, args: dict, run_dir: Path, seed: int) -> dict:
    return {
        **args,
        "data": settings.data,
        "seed": int(seed),
        "project": str(run_dir.parent),
        "name": run_dir.name,
        "exist_ok": True,
    }


def compare(settings: CompareSettings, *, force: bool = False) -> dict[str, Any]:
    """Run (or reuse) every training run of ``settings`` and write the reports; returns compare.json's content."""
    settings.project = Path(settings.project).resolve()
    settings.project.mkdir(parents=True, exist_ok=True)
    label_m, label_b = settings.labels()
    plan = [(seed, role, spec, label) for seed in settings.seeds for role, spec, label in (
        ("baseline", settings.baseline, label_b),
        ("model", settings.model, label_m),
    )]
    if settings.jobs > 1 and len(plan) > 1:
        records = _run_parallel(settings, plan, force)
    else:
        records = [_run_one(settings, role, spec, label, seed, force, f"({i}/{len(plan)})")
                   for i, (seed, role, spec, label) in enumerate(plan, 1)]  # fmt: skip
    entries = [
        summarise(records, "baseline", settings.baseline, label_b),
        summarise(records, "model", settings.model, label_m),
    ]
    # latency: both models (first seed's best checkpoints) timed in turns now, on the device used
    from ultralytics import YOLO

    imgsz = int(settings.train_args.get("imgsz", 640))
    _log(f"timing batch-1 inference of both models ({settings.latency_runs} passes each, in turns)")
    nets = {e["model"]: YOLO(e["runs"][0]["weights"]).model for e in entries}
    timing = measure_latency(nets, imgsz, settings.train_args.get("device"), runs=settings.latency_runs)
    for e in entries:
        e.update(timing[e["model"]])
    machine = machine_info(settings.train_args.get("device"))
    result = {
        "settings": {
            "model": settings.model,
            "baseline": settings.baseline,
            "data": settings.data,
            "seeds": settings.seeds,
            "train_args": settings.train_args,
        },
        "machine": machine,
        "models": entries,
    }
    out = settings.project
    (out / "compare.json").write_text(json.dumps(result, indent=2, default=str))
    write_csv(out / "compare.csv", entries)
    (out / "compare.md").write_text(markdown(settings, entries, machine))
    chart(out / "compare.png", settings, entries)
    return result


# ----------------------------------------------------------------------------------------------------------
# settings from plain values (the Python API the command line and the demo call)
# ----------------------------------------------------------------------------------------------------------


def check_train_arg(key: str) -> None:
    """Refuse ``key`` unless it is a compare argument or an Ultralytics train argument compare lets through.

    The ValueError says why (``name=``: compare names its runs) or suggests the closest names of both sets.
    """
    from ultralytics.cfg import DEFAULT_CFG_DICT

    if key in FORBIDDEN_TRAIN_ARGS:
        raise ValueError(f"{key}= cannot be set: {FORBIDDEN_TRAIN_ARGS[key]}")
    if key not in OWN_KEYS and key not in DEFAULT_CFG_DICT:
        close = difflib.get_close_matches(key, list(dict.fromkeys([*OWN_KEYS, *DEFAULT_CFG_DICT])), n=3)
        hint = f"; did you mean {' or '.join(k + '=' for k in close)}?" if close else ""
        raise ValueError(f"{key!r} is neither a compare argument nor an Ultralytics train argument{hint}")


def _seeds(kv: dict[str, Any]) -> list[int]:
    first = kv.pop("seed", None)
    first = 0 if first is None else first
    seeds = kv.pop("seeds", None)
    seeds = 1 if seeds is None else seeds
    if not isinstance(first, int) or first < 0:
        raise ValueError(f"seed={first!r} must be a non-negative integer")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"seeds={seeds} must be >= 1 (the number of seeds) or a list like seeds=0,1,2")
        return list(range(first, first + seeds))
    if isinstance(seeds, (list, tuple)) and seeds and all(isinstance(s, int) and s >= 0 for s in seeds):
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds={list(seeds)} repeats a seed")
        return [int(s) for s in seeds]
    raise ValueError(f"seeds={seeds!r} must be a count (seeds=3) or a list of non-negative integers (seeds=0,1,2)")


def settings_from_args(kv: dict[str, Any]) -> CompareSettings:
    """Validate plain values and build the comparison (the data.yaml's ``train_args`` merged in).

    ``kv`` holds ``model``, ``baseline``, ``data`` (required), ``seeds`` (a count, or a list of seeds),
    ``seed`` (the first seed of a count), ``project``, ``latency_runs``, ``jobs`` (training runs at once,
    each in its own process; 1 runs them here, one after the other), and any Ultralytics train argument
    (typed values: ``epochs=3``, not ``"3"``). Raises ValueError / FileNotFoundError naming what is wrong,
    before anything is written.
    """
    from ultralytics.cfg import check_cfg

    kv = dict(kv)
    missing = [k for k in ("model", "baseline", "data") if kv.get(k) is None]
    if missing:
        raise ValueError(f"missing {', '.join(k + '=' for k in missing)} (see --help)")
    for key in kv:
        check_train_arg(key)
    data = Path(str(kv.pop("data"))).expanduser()
    if not data.is_file():
        raise FileNotFoundError(
            f"data={data} does not exist; pass a dataset YAML (make one with 'yolo-nonlocal make-dataset')"
        )
    seeds = _seeds(kv)
    latency_runs = kv.pop("latency_runs", None)
    latency_runs = 30 if latency_runs is None else latency_runs
    if not isinstance(latency_runs, int) or latency_runs < 1:
        raise ValueError(f"latency_runs={latency_runs!r} must be a positive integer")
    jobs = kv.pop("jobs", None)
    jobs = 1 if jobs is None else jobs
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs={jobs!r} must be a positive integer (training runs at once, one process each)")
    model, baseline = str(kv.pop("model")), str(kv.pop("baseline"))
    project = Path(str(kv.pop("project", None) or "runs/compare")).expanduser()
    for name, spec in (("model", model), ("baseline", baseline)):
        if spec.endswith(".pt") and not Path(spec).is_file():
            raise FileNotFoundError(f"{name}={spec} does not exist (compare never downloads weights)")
        if spec.endswith((".yaml", ".yml")):
            from ultralytics.nn.tasks import yaml_model_load

            try:  # resolves names like yolov8n-nl.yaml the way training will, before anything runs
                yaml_model_load(spec)
            except FileNotFoundError as e:
                raise FileNotFoundError(f"{name}={spec} is not a model YAML Ultralytics can find ({e})") from None
    pretrained = kv.get("pretrained")
    if isinstance(pretrained, str) and not Path(pretrained).is_file():
        raise FileNotFoundError(f"pretrained={pretrained} does not exist (compare never downloads weights)")
    if isinstance(pretrained, str):
        kv["pretrained"] = str(Path(pretrained).resolve())

    from yolo_nonlocal.metrics.datasets import load_data_config

    suggested = load_data_config(data)["train_args"]
    applied = {k: v for k, v in suggested.items() if k not in kv}
    if applied:
        _log(f"{data.name} asks for train args {applied} (override any of them on the command line)")
    train_args = {**_DEFAULTS, **applied, **kv}
    try:
        check_cfg(dict(train_args), hard=True)
    except (TypeError, SyntaxError) as e:  # a value of the wrong type for Ultralytics: the user's argument
        raise ValueError(str(e)) from None
    return CompareSettings(
        model=model,
        baseline=baseline,
        data=str(data.resolve()),
        project=project,
        seeds=seeds,
        train_args=train_args,
        latency_runs=latency_runs,
        jobs=jobs,
    )
