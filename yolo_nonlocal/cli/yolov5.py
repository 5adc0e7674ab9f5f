"""``yolo-nonlocal yolov5 {patch|unpatch|status}``: make a YOLOv5 / YOLOv7 clone understand NonLocal rows.

    yolo-nonlocal yolov5 patch path=~/yolov5 [dry_run=True] [flavour=yolov5|yolov7]
    yolo-nonlocal yolov5 unpatch path=~/yolov5 [keep_edited=True]
    yolo-nonlocal yolov5 status path=~/yolov5

The path may also be given bare (``yolov5 patch ~/yolov5``). The flags of the previous release
(``--dry-run``, ``--keep-edited``, ``--flavour X``) still work for this release, with a note. Every error,
a refusal of the patcher included, prints ``yolo-nonlocal yolov5 VERB: error: ...`` and exits with status 2.
This module parses the command line and prints; the work is done by
:mod:`yolo_nonlocal.integrations.yolov5` (``patch``, ``unpatch``, ``status``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from yolo_nonlocal.cli.args import Arg, error, run
from yolo_nonlocal.integrations.yolov5.tree import (  # standard library only
    FLAVOURS,
    PatchError,
)

VERBS = ("patch", "unpatch", "status")
PATH = Arg("path", str, ".", "root of the YOLOv5/YOLOv7 clone, the folder with models/yolo.py (may be given bare)")
SPECS: dict[str, list[Arg]] = {
    "patch": [
        PATH,
        Arg("dry_run", bool, False, "print the unified diff (git format) and change nothing"),
        Arg("flavour", str, None, "treat the tree as yolov5 or yolov7 (default: detect); only chooses the YAMLs",
            choices=FLAVOURS),
    ],
    "unpatch": [PATH, Arg("keep_edited", bool, False, "leave copied YAMLs you have edited since in place")],
    "status": [PATH],
}
DESCRIPTIONS = {
    "patch": "Edit models/yolo.py of a YOLOv5/YOLOv7 clone so its YAMLs can use NonLocal rows, and copy the "
             "Non-local model YAMLs that build there. Undo with `yolo-nonlocal yolov5 unpatch path=PATH`.",
    "unpatch": "Restore a clone patched by `yolo-nonlocal yolov5 patch`: models/yolo.py byte for byte, the copied "
               "YAMLs removed (an edited one only with keep_edited=True, which leaves it in place).",
    "status": "Say whether and how a YOLOv5/YOLOv7 clone is patched, and the known hazards of the tree with "
              "this Python's torch, numpy and Pillow.",
}
# the flags of the previous release -> key=value (kept for one release)
LEGACY_FLAGS = {"patch": {"--dry-run": "dry_run=True"}, "unpatch": {"--keep-edited": "keep_edited=True"}, "status": {}}
LEGACY_OPTIONS = ("--flavour", "--flavor")


def _legacy(verb: str, argv: list[str]) -> tuple[list[str], list[str]]:
    """``argv`` with patch's old ``--flavour X`` / ``--flavour=X`` as ``flavour=X``; and the old forms seen."""
    out: list[str] = []
    seen: list[str] = []
    it = iter(range(len(argv)))
    for i in it:
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if verb == "patch" and name in LEGACY_OPTIONS:
            if not eq:
                if i + 1 >= len(argv):
                    out.append(arg)  # parse() refuses it, naming the flag
                    continue
                value = argv[i + 1]
                next(it, None)
            out.append(f"flavour={value}")
            seen.append(name)
        else:
            if arg in LEGACY_FLAGS[verb]:
                seen.append(arg)
            out.append(arg)
    return out, seen


def _patch(path: str, dry_run: bool, flavour: str | None) -> int:
    from yolo_nonlocal.integrations.yolov5 import STATE_DIR, YOLO_PY, patch
    from yolo_nonlocal.integrations.yolov5.hazards import hazards

    result = patch(path, dry_run=dry_run, flavour=flavour)
    if dry_run:
        sys.stdout.write(result.diff)
        sys.stdout.flush()
        for note in result.notes:
            print(f"# {note}", file=sys.stderr)
        print(f"# dry run: {len(result.changed)} file(s) would change; nothing was written"
              + (f" (state would go to {STATE_DIR}/)" if result.changed else " (already patched)"), file=sys.stderr)
        return 0
    if result.already_patched:
        print(f"{result.root}: already patched ({result.flavour}); nothing to do")
    else:
        print(f"{result.root}: patched as {result.flavour}")
        for rel in result.changed:
            print(f"  {'modified' if rel == YOLO_PY else 'created '} {rel}")
        print(f"  undo: yolo-nonlocal yolov5 unpatch path={path}")
    for rel in result.kept:
        print(f"  kept your edited {rel}")
    for note in result.notes:
        print(f"  {note}")
    for h in hazards(result.root):
        print(f"note: {h}")
    sys.stdout.flush()
    return 0


def _unpatch(path: str, keep_edited: bool) -> int:
    from yolo_nonlocal.integrations.yolov5 import MARKER, YOLO_PY, unpatch

    result = unpatch(path, keep_edited=keep_edited)
    if not result.was_patched:
        print(f"{result.root}: not patched; nothing to do")
        return 0
    print(f"{result.root}: unpatched")
    for rel in result.restored:
        print(f"  {'restored' if rel == YOLO_PY else 'removed '} {rel}")
    if result.stripped:
        print(f"  {YOLO_PY} had changed since the patch: removed the lines marked `{MARKER}`, kept your other edits")
    for rel in result.kept:
        print(f"  kept your edited {rel}")
    sys.stdout.flush()
    return 0


def _status(path: str) -> int:
    from yolo_nonlocal.integrations.yolov5 import status

    print(str(status(path)))
    sys.stdout.flush()
    return 0


ACTIONS: dict[str, Callable[..., int]] = {"patch": _patch, "unpatch": _unpatch, "status": _status}


def main(argv: list[str]) -> int:
    argv = list(argv)
    if not argv or argv[0] not in VERBS:
        if argv and argv[0] in {"-h", "--help", "help"}:
            print("usage: yolo-nonlocal yolov5 {patch|unpatch|status} [path=]PATH [key=value ...]\n\n"
                  + "\n".join(f"  {v:<8} {DESCRIPTIONS[v]}" for v in VERBS)
                  + "\n\nRun 'yolo-nonlocal yolov5 VERB --help' for a verb's arguments.")
            return 0
        return error("yolov5", f"expected one of {', '.join(VERBS)} after 'yolov5', got {argv[0]!r}" if argv
                     else f"expected one of {', '.join(VERBS)} after 'yolov5'")
    verb, rest = argv[0], argv[1:]
    rest, legacy = _legacy(verb, rest)
    for flag in dict.fromkeys(legacy):
        new = LEGACY_FLAGS[verb].get(flag, "flavour=...")
        print(f"yolo-nonlocal yolov5 {verb}: note: {flag} is the old form of {new}; it goes in the next release",
              file=sys.stderr)
    return run(f"yolov5 {verb}", rest, SPECS[verb], ACTIONS[verb], description=DESCRIPTIONS[verb],
               positional="path", aliases=LEGACY_FLAGS[verb], errors=(PatchError, ValueError, OSError))
