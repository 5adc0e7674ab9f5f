"""``yolo-nonlocal usage``: how far a trained model's Non-local blocks moved from the identity."""

from __future__ import annotations


def main(argv: list[str]) -> int:
    from yolo_nonlocal.tools.block_usage import cli

    return int(cli(list(argv)) or 0)
