"""Wall time of ``compare`` with its two training runs one after the other (``jobs=1``) and at once (``jobs=2``).

On a CPU, Ultralytics trains with ``cpu_count - 1`` torch threads (at most 8): one thread on a 2-core
machine, which leaves a core idle while a run trains. ``jobs=2`` gives that core the other run. This script
trains yolov8n and yolov8n-nl on the built-in context set (``n_train`` images, ``epochs`` epochs, fresh
folders every time) both ways, alternating (jobs=1, jobs=2, jobs=1, ...) so that a change of machine load
hits both, and prints each wall time and the ratio of the medians. Run it on an otherwise idle machine.

    python benchmarks/parallel_runs.py                 # 2 repeats of each, about 5 minutes on 2 cores
    python benchmarks/parallel_runs.py --repeats 3 --epochs 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--n-train", type=int, default=64)
    p.add_argument("--imgsz", type=int, default=256)
    args = p.parse_args(argv)

    from yolo_nonlocal.data.synthetic import SyntheticConfig, make_dataset
    from yolo_nonlocal.utils.machine import describe_machine

    exe = Path(sys.executable).with_name("yolo-nonlocal")
    if not exe.is_file():
        raise SystemExit(f"no yolo-nonlocal console script beside {sys.executable}: install the package first")
    print(f"Machine: {describe_machine('cpu')}; os.cpu_count() = {os.cpu_count()}")
    times: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(Path(tmp) / "cfg")}
        cfg = SyntheticConfig(kind="context", n_train=args.n_train, n_val=32, imgsz=args.imgsz, seed=0)
        data = make_dataset(Path(tmp) / "data", cfg, progress=False)
        for i in range(args.repeats):
            for jobs in (1, 2):
                cmd = [str(exe), "compare", "model=yolov8n-nl.yaml", "baseline=yolov8n.yaml", f"data={data}",
                       f"epochs={args.epochs}", f"imgsz={args.imgsz}", "batch=8", "workers=0", "device=cpu",
                       "latency_runs=1", f"jobs={jobs}", f"project={Path(tmp) / f'r{i}-j{jobs}'}"]  # fmt: skip
                t0 = time.perf_counter()
                r = subprocess.run(cmd, capture_output=True, text=True, env=env)
                dt = time.perf_counter() - t0
                if r.returncode:
                    raise SystemExit(f"compare jobs={jobs} failed:\n{r.stderr[-3000:]}")
                times[jobs].append(dt)
                print(f"repeat {i}: jobs={jobs}: {dt:.1f} s", flush=True)
    m1, m2 = statistics.median(times[1]), statistics.median(times[2])
    print(f"\nmedian wall time: jobs=1 {m1:.1f} s, jobs=2 {m2:.1f} s; jobs=2 / jobs=1 = {m2 / m1:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
