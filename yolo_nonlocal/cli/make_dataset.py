"""``yolo-nonlocal make-dataset``: write the offline synthetic small-object datasets.

    yolo-nonlocal make-dataset kind=context out=datasets/context n_train=800 n_val=300 imgsz=256 seed=0
    yolo-nonlocal make-dataset kind=farcue rule=far out=datasets/farcue n_train=800 n_val=300

Parses with :mod:`yolo_nonlocal.cli.args` and calls :func:`yolo_nonlocal.data.synthetic.make_dataset`; prints
the data.yaml path. Bad settings (including a farcue cue that would fall inside the baseline's reach) exit
with status 2 and a message that says what to change.
"""

from __future__ import annotations

from yolo_nonlocal.cli.args import Arg, run

COMMAND = "make-dataset"
DESCRIPTION = """\
Write a deterministic synthetic small-object dataset (PNG images, YOLO labels, data.yaml) under OUT.
  kind=context|neutral|farcue
  kind=context   tiny coloured squares; rule=singleton labels the one whose colour occurs exactly once
                 in the image, rule=count labels every square with how often its colour occurs
  kind=neutral   tiny squares/disks/crosses, all labelled: no long-range cue (the control set)
  kind=farcue    the positive control: imgsz x height strips (default 1024 x 64), small targets whose class
                 is the colour of one cue; rule=far puts the cue beyond the reach of every rf_model output
                 cell that can detect a target (asserted), rule=near within it; counterfactual=True repaints
                 only the cue and flips the labels. Train with rect=True at imgsz = the strip width."""
EPILOG = """\
Objects are min_size..max_size px (4..24). Rerunning with the same settings reuses the folder; force=True
(--force) replaces a folder holding a different dataset. See docs/datasets.md."""
ARGS = (
    Arg("out", str, required=True, help="output folder: images/{train,val}, labels/{train,val}, data.yaml"),
    Arg("kind", str, "context", help="context, neutral or farcue", choices=("context", "neutral", "farcue")),
    Arg("rule", str, None, help="context: singleton (default) or count; farcue: far (default) or near"),
    Arg("n_train", int, 800, help="training images"),
    Arg("n_val", int, 300, help="validation images"),
    Arg("imgsz", int, None, help="context/neutral: square side, 128..1024 (default 256); farcue: strip width (1024)"),
    Arg("seed", int, 0, help="dataset seed (image i of a split depends only on it, the kind and i)"),
    Arg("min_size", int, 6, help="smallest object side in px"),
    Arg("max_size", int, 16, help="largest object side in px"),
    Arg("p_negative", float, 0.1, help="context/singleton: share of images without a singleton"),
    Arg("height", int, None, help="farcue: strip height, a multiple of 32 (default 64)"),
    Arg("counterfactual", bool, False, help="farcue: the same images with only the cue repainted, labels flipped"),
    Arg("rf_model", str, None, help="farcue: the conv-only baseline whose reach the cue must exceed (yolov8n.yaml)"),
    Arg("reach_slack", float, None, help="farcue rule=far: px kept beyond rf_model's reach (default 64)"),
    Arg("force", bool, False, help="replace a folder that holds a different dataset (only images/, labels/, data.yaml)"),
    Arg("quiet", bool, False, help="no progress output"),
)
ALIASES = {"--force": "force=True", "--quiet": "quiet=True"}


def make_dataset_command(out: str, kind: str, rule: str | None, force: bool, quiet: bool, **settings) -> int:
    """Build the config (the rule's default follows the kind), write or reuse the dataset, print data.yaml's path."""
    from yolo_nonlocal.data.synthetic import SyntheticConfig, make_dataset

    if rule is None:
        rule = {"context": "singleton", "farcue": "far"}.get(kind)
    settings = {k: v for k, v in settings.items() if v is not None}
    cfg = SyntheticConfig(kind=kind, rule=rule, **settings)
    print(make_dataset(out, cfg, force=force, progress=not quiet))
    return 0


def main(argv: list[str]) -> int:
    return run(COMMAND, argv, ARGS, make_dataset_command, description=DESCRIPTION, epilog=EPILOG, aliases=ALIASES,
               errors=(ValueError, OSError))  # CueInReachError and FileExistsError are among these
