"""The `yolo-nonlocal` command: one entry point, one module per sub-command.

Sub-commands take Ultralytics-style ``key=value`` arguments (and flags where a sub-command says so);
each is implemented by a ``cli(argv: list[str]) -> int`` function in its own module, imported only when
that sub-command runs.
"""

from __future__ import annotations

import importlib
import sys

# sub-command -> (module, one-line help); each module's ``main(argv) -> int`` parses with yolo_nonlocal.cli.args
COMMANDS: dict[str, tuple[str, str]] = {
    "eval": ("yolo_nonlocal.cli.eval", "score a COCO predictions JSON against a YOLO-format dataset"),
    "compare": ("yolo_nonlocal.cli.compare", "train a Non-local model and its baseline alike and compare AP/APs"),
    "make-dataset": ("yolo_nonlocal.cli.make_dataset", "write the offline synthetic small-object datasets"),
    "convert": ("yolo_nonlocal.cli.convert", "convert VisDrone / AI-TOD annotations to YOLO format"),
    "attention": ("yolo_nonlocal.cli.attention", "draw where a Non-local block looks for a query pixel"),
    "usage": ("yolo_nonlocal.cli.usage", "how far a trained model's Non-local blocks moved from the identity"),
    "demo": ("yolo_nonlocal.cli.demo", "the main job end to end on the built-in synthetic dataset"),
    "yolov5": ("yolo_nonlocal.cli.yolov5", "patch / unpatch / status of a YOLOv5 or YOLOv7 clone"),
}
# documented forms of earlier releases, kept for one release: `yolo-nonlocal patch PATH` = `yolov5 patch PATH`
ALIASES: dict[str, list[str]] = {"patch": ["yolov5", "patch"], "unpatch": ["yolov5", "unpatch"], "status": ["yolov5", "status"]}


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
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
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
    if argv[0] in ALIASES:
        argv = ALIASES[argv[0]] + argv[1:]
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, list(COMMANDS) + list(ALIASES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        print(f"yolo-nonlocal: error: unknown command {name!r}{hint} (commands: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    module, _ = COMMANDS[name]
    return int(importlib.import_module(module).main(rest) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
