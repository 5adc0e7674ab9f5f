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
