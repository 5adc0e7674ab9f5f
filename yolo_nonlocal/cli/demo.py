"""``yolo-nonlocal demo``: the main job end to end on the built-in synthetic dataset."""

from __future__ import annotations


def main(argv: list[str]) -> int:
    from yolo_nonlocal.tools.demo import main

    return int(main(list(argv)) or 0)
