"""``yolo-nonlocal demo``: the main job end to end on the built-in synthetic dataset (``make demo``).

    yolo-nonlocal demo [epochs=30] [seeds=3] [device=0] [n_train=160] ... [ANY ULTRALYTICS TRAIN ARG=VALUE]

Every key of :data:`yolo_nonlocal.tools.demo.PRESET` can be overridden, typed like its preset value; any
other key is an Ultralytics train argument (as for ``compare``). The output folder is ``demo_runs`` in the
current directory, or ``$YOLO_NONLOCAL_DEMO_DIR``. The work is :func:`yolo_nonlocal.tools.demo.demo`.
"""

from __future__ import annotations

import os
import time
from typing import Any

from yolo_nonlocal.cli.args import Arg, run
from yolo_nonlocal.cli.compare import seeds_value, train_args
from yolo_nonlocal.tools.demo import PRESET

COMMAND = "demo"
DESCRIPTION = """Write the built-in long-range context dataset, train YOLOv8n with and without Non-local blocks on it
(one seed, a short schedule, both at once, on the CPU), print AP and APs of both and leave
demo_runs/compare/compare.{md,csv,json,png}. It shows the workflow; it is not evidence, and says so."""
EPILOG = """Any other key=value is an Ultralytics train argument given to both models. Output: ./demo_runs, or
$YOLO_NONLOCAL_DEMO_DIR. Running it again reuses the finished runs."""

_HELP = {
    "n_train": "training images of the generated dataset",
    "n_val": "validation images",
    "dataset_imgsz": "size of the generated images",
    "dataset_seed": "seed of the generator",
    "model": "the Non-local model",
    "baseline": "the model it is compared with",
    "seeds": "N seeds, or a list seeds=0,1,2",
}


def _arg(key: str, default: Any) -> Arg:
    kind = seeds_value if key == "seeds" else type(default)
    return Arg(key, kind, default, _HELP.get(key, "as for compare / Ultralytics"))


SPEC = [_arg(k, v) for k, v in PRESET.items()] + [Arg("force", bool, False, "retrain runs that already finished")]
ALIASES = {"--force": "force=True"}
REFUSED = {
    "data": "the demo writes its own dataset (n_train=, n_val=, dataset_imgsz=, dataset_seed= shape it)",
    "project": "the demo writes to ./demo_runs, or to $YOLO_NONLOCAL_DEMO_DIR",
}


def _demo(force: bool, **values: Any) -> int:
    from yolo_nonlocal.tools.demo import demo, summary

    out = os.environ.get("YOLO_NONLOCAL_DEMO_DIR", "demo_runs")
    t0 = time.time()
    result = demo(out, force=force, **values)
    print(summary(result, out, time.time() - t0, values["n_train"], values["epochs"]))
    return 0


def main(argv: list[str]) -> int:
    os.environ.setdefault("YOLO_OFFLINE", "1")  # before Ultralytics is imported: the demo never goes online
    os.environ.setdefault("MPLBACKEND", "Agg")
    extra = train_args(COMMAND, (a.name for a in SPEC), REFUSED)
    return run(COMMAND, argv, SPEC, _demo, description=DESCRIPTION, epilog=EPILOG, aliases=ALIASES, extra=extra)
