"""``make demo``: the package's main job end to end, small enough for a 2-core CPU in under 10 minutes.

It writes the built-in long-range context dataset (:mod:`yolo_nonlocal.data.synthetic`, ``kind=context``: only
the tiny square whose colour occurs exactly once is an object) under ``./demo_runs/data``, then runs
:func:`yolo_nonlocal.tools.compare.compare` on YOLOv8n and YOLOv8n with Non-local blocks (``yolov8n-nl.yaml``)
with one seed and a short schedule, prints the table with AP and APs for both models, and leaves
``demo_runs/compare/compare.{md,csv,json,png}``. Running it again reuses the finished runs.

The preset shows the workflow; it is far too short to be evidence: one seed, a few hundred images, a few
epochs from scratch (detectors trained from scratch typically need far more before their AP leaves zero).
``benchmarks/small_objects.py`` is the measurement protocol. Key=value arguments override the preset,
e.g. ``python -m yolo_nonlocal.tools.demo epochs=30 seeds=3 device=0``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

__all__ = ["PRESET", "main"]

# Sized on a 2-core CPU, where Ultralytics trains with one thread (it uses cpu_count - 1): about
# 15 s per epoch of 160 images at 256 px for YOLOv8n, a third more with the blocks; both models with
# their evaluations take about 5-6 minutes on an otherwise idle machine.
PRESET: dict[str, object] = {
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
    "device": "cpu",
}

_DATASET_KEYS = {"n_train", "n_val", "dataset_imgsz", "dataset_seed"}

NOT_EVIDENCE = (
    "This demo shows the workflow only. One seed, {n_train} training images and {epochs} epochs from scratch\n"
    "are far too little for either detector to converge, so these numbers are NOT evidence for or against\n"
    "the Non-local block. For a measurement, run benchmarks/small_objects.py (several seeds, the neutral\n"
    "control, fine-tuning from a trained baseline) on a GPU; see docs/compare.md."
)


def main(argv: list[str] | None = None) -> int:
    """Generate the demo dataset, run the comparison and print the table; returns an exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in {"-h", "--help", "help"} for a in argv):
        print(__doc__)
        print("preset:", " ".join(f"{k}={v}" for k, v in PRESET.items()))
        return 0
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    out = Path(os.environ.get("YOLO_NONLOCAL_DEMO_DIR", "demo_runs")).resolve()

    preset = dict(PRESET)
    extra: list[str] = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            print(f"demo: argument {arg!r} is not key=value (for example epochs=30)", file=sys.stderr)
            return 2
        if key in _DATASET_KEYS:
            try:
                preset[key] = int(value)
            except ValueError:
                print(f"demo: {key}={value!r} must be an integer", file=sys.stderr)
                return 2
        elif key in preset:
            preset[key] = value
        else:
            extra.append(arg)  # any other compare / Ultralytics argument

    t0 = time.time()
    from yolo_nonlocal.data.synthetic import SyntheticConfig, make_dataset

    print(f"[demo] writing the context dataset under {out / 'data'} ...", flush=True)
    try:
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
    except (ValueError, OSError) as e:
        print(f"demo: {e}", file=sys.stderr)
        return 2

    from yolo_nonlocal.tools import compare as cmp

    args = [f"{k}={v}" for k, v in preset.items() if k not in _DATASET_KEYS] + extra
    args += [f"data={data_yaml}", f"project={out / 'compare'}"]
    print(f"[demo] yolo-nonlocal compare {' '.join(args)}", flush=True)
    try:
        kv, flags = cmp._parse(args)
        settings = cmp.settings_from_args(kv)
    except (ValueError, TypeError, SyntaxError, FileNotFoundError) as e:
        print(f"demo: {e}", file=sys.stderr)
        return 2
    result = cmp.compare(settings, force="--force" in flags)
    minutes = (time.time() - t0) / 60
    print()
    print(cmp.format_table(result))
    print()
    print(f"Chart: {out / 'compare' / 'compare.png'}   Report: {out / 'compare' / 'compare.md'}")
    print(f"Finished in {minutes:.1f} min on {result['machine']['cpu']} ({result['machine']['device']}).")
    print()
    print(NOT_EVIDENCE.format(n_train=preset["n_train"], epochs=preset["epochs"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
