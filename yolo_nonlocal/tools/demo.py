"""``make demo``: the package's main job end to end, small enough for a 2-core CPU in under 10 minutes.

It writes the built-in long-range context dataset (:mod:`yolo_nonlocal.data.synthetic`, ``kind=context``: only
the tiny square whose colour occurs exactly once is an object) under ``OUT/data``, then runs
:func:`yolo_nonlocal.tools.compare.compare` on YOLOv8n and YOLOv8n with Non-local blocks (``yolov8n-nl.yaml``)
with one seed and a short schedule, and leaves ``OUT/compare/compare.{md,csv,json,png}``. Running it again
reuses the finished runs.

The preset shows the workflow; it is far too short to be evidence: one seed, a few hundred images, a few
epochs from scratch (detectors trained from scratch typically need far more before their AP leaves zero).
``benchmarks/small_objects.py`` is the measurement protocol. The command is ``yolo-nonlocal demo``
(:mod:`yolo_nonlocal.cli.demo`); its key=value arguments override the preset, e.g.
``yolo-nonlocal demo epochs=30 seeds=3 device=0``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["PRESET", "DATASET_KEYS", "NOT_EVIDENCE", "demo", "summary"]

# Sized on a 2-core CPU, where Ultralytics trains with one thread (it uses cpu_count - 1), so both models
# train at once (jobs=2): `make demo` took 8.2 min from a fresh clone of 2 AVX2 cores, 2.1 of them the
# install (docs/compare.md, round 6).
PRESET: dict[str, Any] = {
    "n_train": 160,
    "n_val": 100,
    "dataset_imgsz": 256,
    "dataset_seed": 0,
    "model": "yolov8n-nl.yaml",
    "baseline": "yolov8n.yaml",
    "epochs": 10,
    "imgsz": 256,
    "batch": 8,
    "seeds": 1,
    "workers": 0,
    "warmup_epochs": 1,
    "latency_runs": 20,
    "jobs": 2,  # both models train at once: Ultralytics trains on cpu_count - 1 threads, one on 2 cores
    "device": "cpu",
}

DATASET_KEYS = ("n_train", "n_val", "dataset_imgsz", "dataset_seed")  # the dataset's; the rest go to compare

NOT_EVIDENCE = (
    "This demo shows the workflow only. One seed, {n_train} training images and {epochs} epochs from scratch\n"
    "are far too little for either detector to converge, so these numbers are NOT evidence for or against\n"
    "the Non-local block. The positive control that can show the block's effect (kind=farcue: a baseline\n"
    "first trained for 30 epochs, then both models fine-tuned from it) takes about 20 minutes a seed on\n"
    "2 CPU cores, twice the demo's budget, so the demo keeps this task. For the measurement run\n"
    "benchmarks/small_objects.py --preset quick --tasks farcue (several seeds, reference lines, controls);\n"
    "see docs/compare.md."
)


def demo(out: str | Path = "demo_runs", *, force: bool = False, **overrides: Any) -> dict[str, Any]:
    """Write the demo dataset under ``out/data``, compare the two models into ``out/compare``; returns compare.json.

    ``overrides`` replace :data:`PRESET` entries (typed values) or add any other compare / Ultralytics train
    argument. Raises ValueError / OSError naming what is wrong before training starts.
    """
    from yolo_nonlocal.data.synthetic import SyntheticConfig, make_dataset
    from yolo_nonlocal.tools.compare import compare, settings_from_args

    out = Path(out).resolve()
    preset = {**PRESET, **overrides}
    print(f"[demo] writing the context dataset under {out / 'data'} ...", flush=True)
    cfg = SyntheticConfig(
        kind="context",
        rule="singleton",
        n_train=int(preset["n_train"]),
        n_val=int(preset["n_val"]),
        imgsz=int(preset["dataset_imgsz"]),
        seed=int(preset["dataset_seed"]),
    )
    try:
        data_yaml = make_dataset(out / "data", cfg)  # reused when it already holds this dataset
    except FileExistsError:  # the demo's own folder, holding another preset's dataset: replace it
        data_yaml = make_dataset(out / "data", cfg, force=True)
    args = {k: v for k, v in preset.items() if k not in DATASET_KEYS}
    args.update(data=str(data_yaml), project=str(out / "compare"))
    print("[demo] compare " + " ".join(f"{k}={v}" for k, v in args.items()), flush=True)
    return compare(settings_from_args(args), force=force)


def summary(result: dict[str, Any], out: str | Path, seconds: float, n_train: int, epochs: int) -> str:
    """What the demo prints at the end: the table, where the reports are, the time, and why it is no evidence."""
    from yolo_nonlocal.tools.compare import result_table

    out = Path(out).resolve() / "compare"
    machine = result["machine"]
    return "\n".join([
        "", result_table(result), "",
        f"Chart: {out / 'compare.png'}   Report: {out / 'compare.md'}",
        f"Finished in {seconds / 60:.1f} min on {machine['cpu']} ({machine['device']}).", "",
        NOT_EVIDENCE.format(n_train=n_train, epochs=epochs),
    ])  # fmt: skip


if __name__ == "__main__":  # the earlier form `python -m yolo_nonlocal.tools.demo`, kept for one release
    import sys

    from yolo_nonlocal.cli.demo import main

    sys.exit(main(sys.argv[1:]))
