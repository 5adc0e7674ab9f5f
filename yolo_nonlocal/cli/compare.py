"""``yolo-nonlocal compare``: train a Non-local model and its baseline alike and compare AP/APs.

    yolo-nonlocal compare model=yolov8n-nl.yaml baseline=yolov8n.yaml data=DATA [seeds=3] [project=DIR]
        [ANY ULTRALYTICS TRAIN ARG=VALUE ...] [force=True]

compare's own keys are typed here; every other key must be an Ultralytics train argument (checked against
Ultralytics' ``DEFAULT_CFG_DICT``, with a did-you-mean over both sets) and is typed the way Ultralytics'
own CLI types it (``smart_value``). The work is :func:`yolo_nonlocal.tools.compare.compare`.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

from yolo_nonlocal.cli.args import Arg, ArgumentError, run, suggest

COMMAND = "compare"
DESCRIPTION = """Train MODEL and BASELINE with identical Ultralytics train arguments for every seed, score the best
checkpoint of each run with COCO metrics (AP, AP50, AP75, APs, APm, APl), measure params, GFLOPs
(attention included) and batch-1 latency, and write DIR/compare.{md,csv,json,png} (mean and std over seeds)."""
EPILOG = """Any other key=value is an Ultralytics train argument given to both models (e.g. epochs=30 imgsz=256 batch=16
device=0 pretrained=base.pt lr0=0.01). A data.yaml with 'train_args' (the synthetic sets) contributes those
unless you override them. Finished runs are reused, interrupted ones resumed. See docs/compare.md."""


def seeds_value(text: str) -> int | list[int]:
    """``seeds=3`` (a count) or ``seeds=0,3,7`` / ``seeds=[0,3,7]`` (the seeds themselves)."""
    body = text.strip()
    listed = body.startswith(("[", "(")) or "," in body
    try:
        values = [int(t) for t in body.strip("[]()").split(",") if t.strip()]
    except ValueError:
        raise ValueError("must be a count (seeds=3) or a list of seeds (seeds=0,1,2)") from None
    if not values:
        raise ValueError("must be a count (seeds=3) or a list of seeds (seeds=0,1,2)")
    return values if listed else values[0]


SPEC = [
    Arg("model", required=True, help="the Non-local model: a YAML (yolov8n-nl.yaml, yolo11n-nl.yaml, ...) or a .pt"),
    Arg("baseline", required=True, help="the model it is compared with (yolov8n.yaml, ...)"),
    Arg("data", required=True, help="a dataset YAML (make one with 'yolo-nonlocal make-dataset')"),
    Arg("seeds", seeds_value, 1, "N seeds starting at seed=, or an explicit list seeds=0,3,7"),
    Arg("seed", int, 0, "the first seed of seeds=N"),
    Arg("project", str, "runs/compare", "output folder; runs go to DIR/runs/<model>-seed<k>-<fingerprint>"),
    Arg("latency_runs", int, 30, "timed batch-1 forward passes per model"),
    Arg("jobs", int, 1, "training runs at once, one process each (2 on a 2-core CPU, where Ultralytics trains on one)"),
    Arg("force", bool, False, "retrain runs that already finished (by default they are reused)"),
]
ALIASES = {"--force": "force=True"}


def train_args(command: str, own: Iterable[str], refused: Mapping[str, str] | None = None) -> Callable[[str, str], Any]:
    """The ``extra=`` of a command that passes Ultralytics train arguments on: typed as Ultralytics' CLI types
    them (``smart_value``); keys compare sets itself, keys in ``refused`` (with the reason) and keys that are
    neither the command's (``own``) nor Ultralytics' are refused, with a did-you-mean over both sets."""
    from yolo_nonlocal.tools.compare import FORBIDDEN_TRAIN_ARGS

    own = list(own)
    refused = {**FORBIDDEN_TRAIN_ARGS, **(refused or {})}

    def extra(key: str, text: str) -> Any:
        from ultralytics.cfg import DEFAULT_CFG_DICT, smart_value

        if key in refused:
            raise ArgumentError(f"{key}= cannot be set: {refused[key]}")
        if key not in DEFAULT_CFG_DICT:
            hint = suggest(key, dict.fromkeys([*own, *DEFAULT_CFG_DICT]))
            raise ArgumentError(f"{key!r} is neither a {command} argument nor an Ultralytics train argument{hint}")
        return smart_value(text)

    return extra


def parse_train_args(argv: Sequence[str]) -> dict[str, Any]:
    """``key=value`` Ultralytics train arguments as typed values (for scripts that take them as strings)."""
    from yolo_nonlocal.cli.args import parse

    return parse(argv, [], extra=train_args(COMMAND, []))


def _compare(model: str, baseline: str, data: str, seeds, seed: int, project: str, latency_runs: int, jobs: int,
             force: bool, **train_args: Any) -> int:
    from yolo_nonlocal.tools.compare import compare, result_table, settings_from_args

    settings = settings_from_args({
        "model": model, "baseline": baseline, "data": data, "seeds": seeds, "seed": seed, "project": project,
        "latency_runs": latency_runs, "jobs": jobs, **train_args,
    })  # fmt: skip
    result = compare(settings, force=force)
    print(result_table(result))
    out = settings.project
    print(f"\nwrote {out / 'compare.md'}, {out / 'compare.csv'}, {out / 'compare.json'}, {out / 'compare.png'}")
    return 0


def main(argv: list[str]) -> int:
    extra = train_args(COMMAND, (a.name for a in SPEC))
    return run(COMMAND, argv, SPEC, _compare, description=DESCRIPTION, epilog=EPILOG, aliases=ALIASES, extra=extra)
