"""``yolo-nonlocal attention``: draw where a Non-local block looks for a query pixel."""

from __future__ import annotations


def main(argv: list[str]) -> int:
    from yolo_nonlocal.tools.attention_map import cli

    return int(cli(list(argv)) or 0)
