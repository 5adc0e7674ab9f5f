"""``yolo-nonlocal convert``: VisDrone-DET / AI-TOD annotations to YOLO labels, in place (see docs/datasets.md).

    yolo-nonlocal convert format=visdrone root=datasets/VisDrone    # root holds VisDrone2019-DET-*
    yolo-nonlocal convert format=aitod root=datasets/AI-TOD         # root holds images/ and annotations/

Parses with :mod:`yolo_nonlocal.cli.args` and calls :mod:`yolo_nonlocal.data.converters`; prints one line of
counts a split. Bad input exits with status 2 and says which file and line is wrong.
"""

from __future__ import annotations

import sys
from typing import Sequence

from yolo_nonlocal.cli.args import Arg, run

COMMAND = "convert"
FORMAT_NAMES = ("visdrone", "aitod")
DESCRIPTION = """\
Write YOLO labels next to the images of an unpacked VisDrone-DET or AI-TOD dataset (nothing downloads);
AI-TOD also gets the image lists train.txt, val.txt, trainval.txt, test.txt."""
ARGS = (
    Arg("format", str, required=True, choices=FORMAT_NAMES, help="visdrone or aitod"),
    Arg("root", str, required=True, help="the dataset folder (VisDrone: holds VisDrone2019-DET-*; AI-TOD: holds "
                                         "images/ and annotations/)"),
)


def convert_command(format: str, root: str) -> int:
    """Convert the dataset at ``root`` and print what was kept and skipped, a split a line."""
    from pathlib import Path

    from yolo_nonlocal.data.converters import FORMATS

    result = FORMATS[format](Path(root).expanduser())
    for part, stats in result.items():
        print(f"{part}: " + ", ".join(f"{k} {v}" for k, v in stats.items() if k != "names"))
    return 0


def main(argv: list[str]) -> int:
    return run(COMMAND, argv, ARGS, convert_command, description=DESCRIPTION, positional="root")


def legacy_main(argv: Sequence[str]) -> int:
    """``python -m yolo_nonlocal.data.converters visdrone ROOT``, the form of earlier releases (kept for one)."""
    argv = list(argv)
    if argv and argv[0] in FORMAT_NAMES:
        print(f"note: this is now 'yolo-nonlocal convert format={argv[0]} root=...'", file=sys.stderr)
        argv[0] = f"format={argv[0]}"
    return main(argv)
