"""The `yolo-nonlocal` command: one entry point, one module per sub-command.

Every sub-command takes Ultralytics-style ``key=value`` arguments in the one grammar of
:mod:`yolo_nonlocal.cli.args` (errors: ``yolo-nonlocal COMMAND: error: ...``, exit status 2). Each is
``yolo_nonlocal/cli/<command>.py`` with ``main(argv: list[str]) -> int``, imported only when that
sub-command runs, and calls the Python API of the module that does the work. ``python -m yolo_nonlocal``
is the same command.
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
    "usage": ("yolo_nonlocal.cli.usage", "what a trained model's Non-local blocks do: constant vs varying part, query use"),
    "demo": ("yolo_nonlocal.cli.demo", "the main job end to end on the built-in synthetic dataset"),
    "yolov5": ("yolo_nonlocal.cli.yolov5", "patch / unpatch / status of a YOLOv5 or YOLOv7 clone"),
}
# documented forms of earlier releases, kept for one release: `yolo-nonlocal patch PATH` = `yolov5 patch PATH`
ALIASES: dict[str, list[str]] = {"patch": ["yolov5", "patch"], "unpatch": ["yolov5", "unpatch"], "status": ["yolov5", "status"]}


def _usage() -> str:
    from yolo_nonlocal import __version__

    width = max(len(c) for c in COMMANDS)
    lines = [f"yolo-nonlocal {__version__}", "", "usage: yolo-nonlocal COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "Run 'yolo-nonlocal COMMAND --help' for a command's arguments."]
    return "\n".join(lines)


def _print(text: str) -> int:
    """Print to stdout; a reader that went away (``| head``) ends it quietly."""
    from yolo_nonlocal.cli.args import quiet_broken_pipe

    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        quiet_broken_pipe()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``yolo-nonlocal ARGV``; returns the exit status (0, or 2 for every argument error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        return _print(_usage())
    if argv[0] in {"-V", "--version", "version"}:
        from yolo_nonlocal import __version__

        return _print(__version__)
    if argv[0] in ALIASES:
        argv = ALIASES[argv[0]] + argv[1:]
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, list(COMMANDS) + list(ALIASES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        try:
            print(f"yolo-nonlocal: error: unknown command {name!r}{hint} (commands: {', '.join(COMMANDS)})",
                  file=sys.stderr)
        except BrokenPipeError:  # pragma: no cover - stderr closed
            pass
        return 2
    module, _ = COMMANDS[name]
    return int(importlib.import_module(module).main(rest) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
