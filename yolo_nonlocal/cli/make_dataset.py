"""``yolo-nonlocal make-dataset``: write the offline synthetic small-object datasets."""

from __future__ import annotations


def main(argv: list[str]) -> int:
    from yolo_nonlocal.data.synthetic import cli

    return int(cli(list(argv)) or 0)
