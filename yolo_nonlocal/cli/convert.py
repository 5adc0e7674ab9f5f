"""``yolo-nonlocal convert``: VisDrone / AI-TOD annotations to YOLO format."""

from __future__ import annotations


def main(argv: list[str]) -> int:
    from yolo_nonlocal.data.converters import main

    return int(main(list(argv)) or 0)
