"""The one argument grammar of every ``yolo-nonlocal`` sub-command: Ultralytics-style ``key=value``.

    yolo-nonlocal eval data=DATA.yaml predictions=PRED.json tiny=True
    yolo-nonlocal yolov5 patch path=~/yolov5 dry_run=True

Rules, the same for every command:

- every argument is ``key=value``; ``-`` in a key reads as ``_`` (``dry-run=True`` is ``dry_run=True``);
- values are typed by the command's :class:`Arg` list: ``str``, ``int``, ``float``, ``bool`` (``True``/
  ``False``, ``1``/``0``, ``yes``/``no``, ``on``/``off``, any case), ``list`` of ints (``0,1,2``), or a
  converter function of the command's own (``query=X,Y``) whose ValueError names what is expected;
- a key given twice, an unknown key (with a did-you-mean hint) and a missing required key are refused;
- a command may take one bare positional (``patch ~/yolov5``) for one named key, and documented legacy
  flags (``--dry-run``) as aliases of ``key=True``;
- ``-h`` / ``--help`` / ``help`` print the command's usage and exit 0;
- every error prints ``yolo-nonlocal COMMAND: error: MESSAGE`` on stderr and exits with status 2.

Commands call each other through their Python APIs, never by re-parsing strings: :func:`parse` returns
plain typed values for a function's keyword arguments.
"""

from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from yolo_nonlocal.utils.env import parse_bool

__all__ = [
    "Arg", "ArgumentError", "HelpRequested", "parse", "usage", "run", "error", "suggest", "quiet_broken_pipe", "EXIT_USAGE",
]

EXIT_USAGE = 2  # the exit status of every error, as argparse and Ultralytics' own CLI use
HELP = frozenset({"-h", "--help", "help"})
_MISSING = object()


class ArgumentError(ValueError):
    """A command-line argument is wrong; the message says which and how to write it."""


class HelpRequested(Exception):
    """``-h`` / ``--help`` / ``help`` was given."""


@dataclass(frozen=True)
class Arg:
    """One ``key=value`` argument of a command.

    ``type`` is ``str``, ``int``, ``float``, ``bool``, ``list`` (a comma list of ints, or one int) or any
    function ``text -> value`` that raises ValueError (its message is shown after ``key='text':``);
    ``choices`` limits the accepted values; ``required`` arguments have no default.
    """

    name: str
    type: Callable[[str], Any] = str
    default: Any = None
    help: str = ""
    required: bool = False
    choices: tuple | None = None

    def convert(self, text: str) -> Any:
        key = self.name
        if self.type is bool:
            try:
                value: Any = parse_bool(text)
            except ValueError:
                raise ArgumentError(f"{key}={text!r} is not a boolean; use {key}=True or {key}=False") from None
        elif self.type is int:
            try:
                value = int(text)
            except ValueError:
                raise ArgumentError(f"{key}={text!r} must be an integer") from None
        elif self.type is float:
            try:
                value = float(text)
            except ValueError:
                raise ArgumentError(f"{key}={text!r} must be a number") from None
        elif self.type is list:
            try:
                value = [int(t) for t in text.strip("[]()").split(",") if t.strip()]
            except ValueError:
                raise ArgumentError(f"{key}={text!r} must be an integer or a comma list of integers (0,1,2)") from None
            if not value:
                raise ArgumentError(f"{key}= is empty; give an integer or a comma list such as {key}=0,1,2")
        elif self.type is str:
            value = text
        else:
            try:
                value = self.type(text)
            except (ValueError, TypeError) as e:
                raise ArgumentError(f"{key}={text!r}: {e}") from None
        if self.choices is not None and value not in self.choices:
            raise ArgumentError(f"{key}={text!r} is not one of: {', '.join(map(str, self.choices))}")
        return value


def _index(spec: Iterable[Arg]) -> dict[str, Arg]:
    return {a.name: a for a in spec}


def suggest(key: str, candidates: Iterable[str], n: int = 3) -> str:
    """``"; did you mean epochs=?"`` for the closest ``candidates`` to ``key``, or ``""``: the one hint wording."""
    close = difflib.get_close_matches(key, list(candidates), n=n)
    return f"; did you mean {' or '.join(k + '=' for k in close)}?" if close else ""


def parse(
    argv: Sequence[str],
    spec: Iterable[Arg],
    *,
    positional: str | None = None,
    aliases: Mapping[str, str] | None = None,
    extra: Callable[[str, str], Any] | None = None,
) -> dict[str, Any]:
    """Typed values of ``argv`` by ``spec``, defaults filled in; raises :class:`ArgumentError` / :class:`HelpRequested`.

    ``positional``: the key a single bare argument fills. ``aliases``: legacy flags, ``{"--dry-run": "dry_run=True"}``.
    ``extra(key, text)``: for keys outside ``spec`` (such as Ultralytics train arguments): returns the value, or
    raises ArgumentError; when None, unknown keys are refused with a did-you-mean hint.
    """
    args = _index(spec)
    aliases = dict(aliases or {})
    values: dict[str, Any] = {}
    for raw in argv:
        if raw in HELP:
            raise HelpRequested()
        arg = aliases.get(raw, raw)
        key, sep, text = arg.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            if arg.startswith("-"):
                known = sorted(a for a in aliases) + ["--help"]
                raise ArgumentError(f"unknown flag {arg!r}; arguments are key=value (flags known here: {', '.join(known)})")
            if positional is not None and positional not in values:
                key, text = positional, arg
            else:
                example = next(iter(args), "key")
                raise ArgumentError(f"argument {arg!r} is not key=value (for example {example}=...)")
        if not key:
            raise ArgumentError(f"argument {arg!r} has no key; write key=value")
        if key in values:
            raise ArgumentError(f"argument {key!r} is given twice")
        if text == "":
            raise ArgumentError(f"argument {key}= has no value")
        if key in args:
            values[key] = args[key].convert(text)
        elif extra is not None:
            values[key] = extra(key, text)
        else:
            raise ArgumentError(f"unknown argument {key!r}{suggest(key, args)} (known: {', '.join(args)})")
    missing = [a.name for a in args.values() if a.required and a.name not in values]
    if missing:
        raise ArgumentError(f"missing {', '.join(k + '=...' for k in missing)} (see --help)")
    for a in args.values():
        values.setdefault(a.name, a.default)
    return values


def usage(command: str, spec: Iterable[Arg], description: str = "", *, positional: str | None = None,
          epilog: str = "", aliases: Mapping[str, str] | None = None) -> str:
    """The ``--help`` text of a command, from its :class:`Arg` list (and its legacy flags, when it has any)."""
    args = list(spec)
    head = " ".join(
        (f"[{a.name}=]{a.name.upper()}" if a.name == positional else f"{a.name}={a.name.upper()}")
        if a.required else f"[{a.name}={a.default}]"
        for a in args
    )
    import textwrap

    lead = f"usage: yolo-nonlocal {command} "
    lines = textwrap.wrap(head, width=110, initial_indent=lead, subsequent_indent=" " * len(lead),
                          break_on_hyphens=False, break_long_words=False) or [lead.rstrip()]
    if description:
        lines += ["", description]
    if args:
        width = max(len(a.name) for a in args)
        lines += [""] + [f"  {a.name:<{width}}  {a.help}".rstrip() for a in args]
    if aliases:
        lines += [""] + [f"  {flag} is {meaning}" for flag, meaning in aliases.items()]
    if epilog:
        lines += ["", epilog]
    lines += ["", "Errors exit with status 2 and name the offending argument."]
    return "\n".join(lines)


def error(command: str, message: Any) -> int:
    """Print ``yolo-nonlocal COMMAND: error: MESSAGE`` on stderr; return :data:`EXIT_USAGE`."""
    text = str(message)
    if isinstance(message, OSError) and message.strerror and message.filename:
        text = f"{message.filename}: {message.strerror}"
    try:
        print(f"yolo-nonlocal {command}: error: {text}", file=sys.stderr)
    except BrokenPipeError:  # pragma: no cover - stderr closed
        pass
    return EXIT_USAGE


def run(
    command: str,
    argv: Sequence[str],
    spec: Iterable[Arg],
    action: Callable[..., int | None],
    *,
    description: str = "",
    epilog: str = "",
    positional: str | None = None,
    aliases: Mapping[str, str] | None = None,
    extra: Callable[[str, str], Any] | None = None,
    errors: tuple[type[BaseException], ...] = (ValueError, OSError),
) -> int:
    """Parse ``argv``, call ``action(**values)`` and return its exit status; errors in ``errors`` exit 2.

    Output piped into a closed reader (``| head``) ends quietly instead of with a BrokenPipeError traceback.
    """
    spec = list(spec)
    try:
        try:
            values = parse(argv, spec, positional=positional, aliases=aliases, extra=extra)
        except HelpRequested:
            print(usage(command, spec, description, positional=positional, epilog=epilog, aliases=aliases))
            sys.stdout.flush()  # a closed reader shows here, inside the try, not in the interpreter's last flush
            return 0
        except ArgumentError as e:
            return error(command, e)
        try:
            status = int(action(**values) or 0)
            sys.stdout.flush()
            return status
        except BrokenPipeError:  # an OSError, but not the command's error: the reader went away
            raise
        except errors as e:
            return error(command, e)
    except BrokenPipeError:
        quiet_broken_pipe()
        return 0


def quiet_broken_pipe() -> None:
    """After the reader of stdout went away: point stdout at /dev/null so the interpreter's final flush is silent."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # pragma: no cover
        pass
