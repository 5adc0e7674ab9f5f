"""The `yolo-nonlocal` command: one entry point, one module per sub-command.

Sub-commands take Ultralytics-style ``key=value`` arguments (and flags where a sub-command says so);
each is implemented by a ``cli(argv: list[str]) -> int`` function in its own module, imported only when
that sub-command runs.
"""

from __future__ import annotations

import importlib
import sys

# sub-command -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "eval": ("yolo_nonlocal.coco_eval", "cli", "score a COCO predictions JSON against a YOLO-format dataset"),
    "compare": ("yolo_nonlocal.compare", "cli", "train a Non-local model and its baseline alike and compare AP/APs"),
    "make-dataset": ("yolo_nonlocal.synthetic", "cli", "write the offline synthetic small-object datasets"),
    "attention": ("yolo_nonlocal.attention_map", "cli", "draw where a Non-local block looks for a query pixel"),
    "usage": ("yolo_nonlocal.block_usage", "cli", "how far a trained model's Non-local blocks moved from the identity"),
    "patch": ("yolo_nonlocal.yolo_patcher", "cli_patch", "make a YOLOv5/YOLOv7 clone understand NonLocal"),
    "unpatch": ("yolo_nonlocal.yolo_patcher", "cli_unpatch", "restore a patched YOLOv5/YOLOv7 clone byte for byte"),
    "status": ("yolo_nonlocal.yolo_patcher", "cli_status", "say whether and how a YOLOv5/YOLOv7 clone is patched"),
}


def parse_key_values(argv: list[str], known: set[str], required: tuple[str, ...], example: str) -> dict[str, str]:
    """``key=value`` arguments of a sub-command, checked: unknown, repeated or missing keys raise ValueError."""
    kv: dict[str, str] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"argument {arg!r} is not key=value (for example {example})")
        if key not in known:
            raise ValueError(f"unknown argument {key!r}; known: {', '.join(sorted(known))}")
        if key in kv:
            raise ValueError(f"argument {key!r} is given twice")
        kv[key] = value
    missing = [k for k in required if k not in kv]
    if missing:
        raise ValueError(f"missing {', '.join(k + '=' for k in missing)} (see --help)")
    return kv


def int_value(key: str, text: str | None) -> int | None:
    """``text`` as an int (None stays None); a ValueError naming ``key`` otherwise."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{key}={text!r} must be an integer") from None


def _usage() -> str:
    from yolo_nonlocal import __version__

    width = max(len(c) for c in COMMANDS)
    lines = [f"yolo-nonlocal {__version__}", "", "usage: yolo-nonlocal COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, _, text) in COMMANDS.items()]
    lines += ["", "Run 'yolo-nonlocal COMMAND --help' for a command's arguments."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    if argv[0] in {"-V", "--version", "version"}:
        from yolo_nonlocal import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"yolo-nonlocal: unknown command {name!r}; expected one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    return int(getattr(importlib.import_module(module), func)(rest) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
