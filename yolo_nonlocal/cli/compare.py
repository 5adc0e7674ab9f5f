"""``yolo-nonlocal compare``: train a Non-local model and its baseline alike and compare AP/APs."""

from __future__ import annotations


def main(argv: list[str]) -> int:
    from yolo_nonlocal.tools.compare import cli

    return int(cli(list(argv)) or 0)
