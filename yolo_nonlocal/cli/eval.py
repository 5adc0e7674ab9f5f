"""``yolo-nonlocal eval``: score a COCO predictions JSON against a YOLO-format dataset."""

from __future__ import annotations


def main(argv: list[str]) -> int:
    from yolo_nonlocal.metrics.coco import cli

    return int(cli(list(argv)) or 0)
