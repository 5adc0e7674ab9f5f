"""``yolo-nonlocal eval``: score a COCO predictions JSON against a YOLO-format dataset split.

    yolo-nonlocal eval data=DATA.yaml predictions=PRED.json [split=val] [json=OUT.json] [tiny=False]
                       [category_ids=auto|0|1|coco91] [backend=auto|pycocotools|faster-coco-eval] [max_dets=100]

Parses with :mod:`yolo_nonlocal.cli.args` and calls :func:`yolo_nonlocal.metrics.coco.evaluate_report`; prints
the table (``-`` where a range holds no ground truth), writes ``json=`` when given. Bad input exits with status 2
and a message naming the first offending entry.
"""

from __future__ import annotations

import sys
import warnings
from json import dumps
from pathlib import Path
from typing import Mapping

from yolo_nonlocal.cli.args import Arg, run

COMMAND = "eval"
DESCRIPTION = """\
Score a COCO results JSON (what Ultralytics' save_json=True and YOLOv5/YOLOv7's val.py --save-json write)
against the YOLO-format labels of a dataset split, with COCO's area ranges on original-image pixels."""
ARGS = (
    Arg("data", str, required=True, help="data YAML as Ultralytics reads it (path, train/val/test, names)"),
    Arg("predictions", str, required=True,
        help='COCO results JSON: [{"image_id": <file stem>, "category_id", "bbox": [x, y, w, h], "score"}, ...]'),
    Arg("split", str, "val", help="split to score"),
    Arg("json", str, None, help="write the stats here as JSON: AP, AP50, AP75, APs, APm, APl (+ APvt, APt) as "
                                "fractions"),
    Arg("tiny", bool, False, help="also report the AI-TOD tiny ranges: APvt (2-8 px), APt (8-16 px); APs/APm/APl "
                                  "stay COCO's"),
    Arg("category_ids", str, "auto",
        help="auto, 0 (YOLOv5/YOLOv7/old Ultralytics), 1 (current Ultralytics) or coco91 (COCO's 91 ids); auto "
             "reads them from the ids and warns when it cannot tell"),
    Arg("backend", str, "auto", help="auto (faster-coco-eval when installed), pycocotools, faster-coco-eval"),
    Arg("max_dets", int, 100, help="detections kept per image and class, by score (as COCO)"),
)


def format_stats(stats: Mapping[str, float], title: str = "") -> str:
    """The stats as a two-line table, in the metric names' order; ``-`` where a range holds no ground truth."""
    from yolo_nonlocal.metrics.coco import STAT_KEYS, TINY_STAT_KEYS
    from yolo_nonlocal.utils.tables import format_table

    keys = [k for k in (*STAT_KEYS, *TINY_STAT_KEYS) if k in stats]
    row = [None if stats[k] < 0 else f"{stats[k]:.4f}" for k in keys]
    return format_table(keys, [row], title=title, align=">" * len(keys))


def evaluate_command(data: str, predictions: str, split: str, json: str | None, tiny: bool, category_ids: str,
                     backend: str, max_dets: int) -> int:
    """Evaluate, print the table and the category-id warnings, write ``json``; returns the exit status."""
    from yolo_nonlocal.metrics.coco import CocoEvalError, evaluate_report
    from yolo_nonlocal.metrics.predictions import CategoryIdWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CategoryIdWarning)
        report = evaluate_report(data, predictions, split, category_ids=category_ids, tiny=tiny, backend=backend,
                                 max_dets=max_dets)
    for w in caught:
        print(f"yolo-nonlocal {COMMAND}: warning: {w.message}", file=sys.stderr)
    title = (f"COCO bbox AP ({report.backend}): {report.images} images, {report.objects} objects, "
             f"{report.detections} detections; category ids {report.convention}")
    print(format_stats(report.stats, title))
    if json:
        out = Path(json).expanduser()
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(dumps(report.stats, indent=2) + "\n", encoding="utf-8")
        except OSError as e:
            raise CocoEvalError(f"cannot write json={str(out)!r}: {e.strerror}") from None
        print(f"Saved {out}")
    return 0



def main(argv: list[str]) -> int:
    return run(COMMAND, argv, ARGS, evaluate_command, description=DESCRIPTION)
