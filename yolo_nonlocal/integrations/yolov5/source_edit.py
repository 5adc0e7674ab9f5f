"""The edit of ``models/yolo.py`` as text: insert the NonLocal import and parse_model branch, and take them out.

Those trees build models from YAML with their own ``parse_model``: every module name of a YAML row is
``eval``-ed in the globals of ``models/yolo.py``, and every module that needs its input channels has its own
branch. Two insertions, and nothing else:

1. right after the top-level ``from models.common import ...`` statement (star import, the named imports of
   YOLOv5 master since ultralytics/yolov5 #12576, or a package-prefixed import), an import of
   :class:`yolo_nonlocal.nonlocal_block.NonLocal` that fails gracefully: without the package the tree still
   builds its stock YAMLs, and only a YAML that uses ``NonLocal`` fails, saying to install it;
2. in ``parse_model``, right above ``elif m is nn.BatchNorm2d:``, a branch that passes the input channels
   with the expression the BatchNorm branch uses (``ch[f]``), so rows read ``[-1, 1, NonLocal, [...]]``
   with no channel count, at every width multiple, and the model YAML's ``nonlocal_init_gamma`` /
   ``nonlocal_init_attention`` keys (:func:`yolo_nonlocal.integrations.yolov5.rows.row_args`, given
   ``parse_model``'s first parameter, the model-YAML dict).

Every inserted line ends with ``# yolo-nonlocal`` (optionally ``: a note``): :func:`unpatch_source` removes
exactly those lines, so it is the inverse of :func:`patch_source` even in a file edited since, and even when
``parse_model`` was renamed. :func:`git_diff` shows an edit as the unified diff ``git apply`` accepts.
"""

from __future__ import annotations

import ast
import difflib
import re

from yolo_nonlocal.integrations.yolov5.tree import (
    PARSE_MODEL_ANCHOR,
    YOLO_PY,
    PatchError,
)

__all__ = [
    "BATCHNORM_ANCHOR",
    "MARKER",
    "PARSE_MODEL_ANCHOR",
    "git_diff",
    "is_marked",
    "manual_instructions",
    "marked_lines",
    "patch_source",
    "unpatch_source",
]

MARKER = "# yolo-nonlocal"
ROW_ARGS = "_yolo_nonlocal_row_args"  # the name of rows.row_args in the patched file
BATCHNORM_ANCHOR = "elif m is nn.BatchNorm2d:"
_BN_ARGS = re.compile(r"^(?P<indent>[ \t]+)args\s*=\s*\[\s*(?P<expr>[^\[\]]*(?:\[[^\[\]]*\][^\[\]]*)*)\s*\]\s*(#.*)?$")
_COMMON_IMPORT = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?models\.common$")
_MARKED = re.compile(r"\s" + re.escape(MARKER) + r"(?::[^\r\n]*)?[ \t]*\r?\n?$")


def is_marked(line: str) -> bool:
    """True for a line the patcher inserted: it ends with ``# yolo-nonlocal`` (optionally ``: a note``)."""
    return _MARKED.search(line) is not None


def marked_lines(text: str) -> list[tuple[int, str]]:
    """The (1-based line number, line) of every marked line of ``text``: what unpatching removes."""
    return [(i, line) for i, line in enumerate(text.splitlines(), 1) if is_marked(line)]


def _newline_of(text: str) -> str:
    first = text.find("\n")
    return "\r\n" if first > 0 and text[first - 1] == "\r" else "\n"


def _import_block(nl: str) -> list[str]:
    lines = [
        f"try:  {MARKER}: NonLocal rows in model YAMLs (the yolo-nonlocal package)",
        f"    from yolo_nonlocal.nonlocal_block import NonLocal  {MARKER}",
        f"    from yolo_nonlocal.integrations.yolov5.rows import row_args as {ROW_ARGS}  {MARKER}",
        f"except ImportError as _yolo_nonlocal_error:  {MARKER}: stock YAMLs still build without the package",
        f"    def NonLocal(*args, _why=str(_yolo_nonlocal_error), **kwargs):  {MARKER}",
        f'        raise ImportError(f"this model YAML uses NonLocal: install the yolo-nonlocal package here, from its wheel or source folder ({{_why}})")  {MARKER}',
        f"    {ROW_ARGS} = NonLocal  {MARKER}: fails with the same message",
    ]
    return [line + nl for line in lines]


def _branch_block(indent: str, body_indent: str, expr: str, model_dict: str, nl: str) -> list[str]:
    lines = [
        f"{indent}elif m is NonLocal:  {MARKER}: channels in = channels out = {expr}",
        f"{body_indent}c2 = {expr}  {MARKER}",
        f"{body_indent}args = {ROW_ARGS}(c2, args, {model_dict})  {MARKER}: [c2, *args] + the YAML's nonlocal_init_* keys",
    ]
    return [line + nl for line in lines]


def manual_instructions() -> str:
    """How to make the edit by hand: the exact lines and where they go."""
    block = "".join("         " + line for line in _import_block("\n"))
    branch = "".join("         " + line for line in _branch_block("", "    ", "ch[f]", "d", "\n"))
    return (
        "To patch by hand, edit models/yolo.py:\n"
        "  1. right after its top-level `from models.common import ...` statement, add\n" + block +
        "  2. in parse_model, right above `elif m is nn.BatchNorm2d:` and at its indentation, add\n" + branch +
        "     with the channel expression of the BatchNorm2d branch below it (`ch[f]` in YOLOv5 and YOLOv7)\n"
        "     and parse_model's first parameter, the model-YAML dict, for `d`;\n"
        "  3. copy the *-nl.yaml files of the package's model_yamls/ folder into the tree.\n"
        "The reference diffs in the package's patches/ folder show the result for each upstream release."
    )


def _single(text: str, anchor: str, where: str) -> int:
    """Index of the one line containing ``anchor``; PatchError if it occurs zero or several times."""
    lines = text.splitlines()
    hits = [i for i, line in enumerate(lines) if anchor in line]
    if len(hits) != 1:
        found = "does not contain" if not hits else f"contains {len(hits)} times (lines {', '.join(str(h + 1) for h in hits)})"
        raise PatchError(
            f"{where} {found} the text `{anchor}`, which every YOLOv5 release from v5.0 to master and YOLOv7 "
            f"(main, u5, u6) has exactly once; this file has a layout the patcher does not know.\n{manual_instructions()}"
        )
    return hits[0]


def _parse_model_def(tree: ast.Module) -> ast.FunctionDef | None:
    """The top-level ``def parse_model`` of a parsed models/yolo.py, or None."""
    return next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "parse_model"), None)


def _check_patched(new_text: str, where: str) -> None:
    """Parse the patched source and check that the import and the branch are where they must be."""
    try:
        tree = ast.parse(new_text, filename=where)
    except SyntaxError as e:
        raise PatchError(
            f"the patched {where} would not compile ({e.msg}, line {e.lineno}); nothing was written.\n{manual_instructions()}"
        ) from None
    top_import = any(
        isinstance(node, ast.Try)
        and any(
            isinstance(s, ast.ImportFrom) and s.module == "yolo_nonlocal.nonlocal_block" and any(a.name == "NonLocal" for a in s.names)
            for s in node.body
        )
        for node in tree.body
    )
    parse_model = _parse_model_def(tree)
    branch = parse_model is not None and any(
        isinstance(n, ast.Compare)
        and isinstance(n.ops[0], ast.Is)
        and isinstance(n.comparators[0], ast.Name)
        and n.comparators[0].id == "NonLocal"
        for n in ast.walk(parse_model)
    )
    if not (top_import and branch):
        raise PatchError(
            f"the patched {where} compiles but lacks the top-level NonLocal import or the parse_model branch "
            f"(parse_model must be a top-level function); nothing was written.\n{manual_instructions()}"
        )


def patch_source(text: str, where: str = YOLO_PY) -> str:
    """Return ``text`` (a models/yolo.py) with the NonLocal import and parse_model branch; idempotent.

    Raises :class:`PatchError` naming the missing anchor when the file's layout is not the expected one.
    """
    if any(is_marked(line) for line in text.splitlines()):
        stripped = unpatch_source(text)
        if patch_source(stripped, where) == text:
            return text
        raise PatchError(
            f"{where} already contains lines marked `{MARKER}` but not the ones this version would add "
            "(an older or hand-edited patch); run `yolo-nonlocal yolov5 unpatch path=PATH` first, or delete the "
            "marked lines"
        )
    nl = _newline_of(text)
    lines = text.splitlines(keepends=True)
    pm = _single(text, PARSE_MODEL_ANCHOR, where)
    bn = _single(text, BATCHNORM_ANCHOR, where)
    if bn < pm:
        raise PatchError(f"{where}: `{BATCHNORM_ANCHOR}` (line {bn + 1}) comes before `{PARSE_MODEL_ANCHOR}` "
                         f"(line {pm + 1}); expected it inside parse_model.\n{manual_instructions()}")
    anchor_line = lines[bn]
    indent = anchor_line[: len(anchor_line) - len(anchor_line.lstrip(" \t"))]
    body = lines[bn + 1].rstrip("\r\n") if bn + 1 < len(lines) else ""
    m = _BN_ARGS.match(body)
    if not m or len(m.group("indent")) <= len(indent):
        raise PatchError(
            f"{where}, line {bn + 2}: expected the BatchNorm2d branch body `args = [<input channels>]` "
            f"(e.g. `args = [ch[f]]`) right below `{BATCHNORM_ANCHOR}`, found {body.strip()!r}.\n{manual_instructions()}"
        )
    expr = m.group("expr").strip()
    try:
        tree = ast.parse(text, filename=where)
    except SyntaxError as e:
        raise PatchError(f"{where} does not compile as it is ({e.msg}, line {e.lineno}); fix it first") from None
    imports = [
        n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module and _COMMON_IMPORT.match(n.module)
    ]
    if not imports:
        raise PatchError(
            f"{where} has no top-level `from models.common import ...` statement (YOLOv5/YOLOv7 import their "
            f"layers that way, possibly with a package prefix); the import of NonLocal goes right after it.\n"
            f"{manual_instructions()}"
        )
    pm_def = _parse_model_def(tree)
    params = [a.arg for a in (pm_def.args.posonlyargs + pm_def.args.args)] if pm_def else []
    if not params:
        raise PatchError(
            f"{where}: expected a top-level `def parse_model(d, ch)` (its first parameter the model-YAML dict, "
            f"which the NonLocal branch reads for the nonlocal_init_* keys).\n{manual_instructions()}"
        )
    after = imports[-1].end_lineno  # 1-based last line of the statement == 0-based index of the next line
    if after is None or after > bn:  # pragma: no cover - Python >= 3.8 always sets end_lineno
        raise PatchError(f"{where}: the models.common import is not above parse_model.\n{manual_instructions()}")
    new = (
        lines[:after]
        + _import_block(nl)
        + lines[after:bn]
        + _branch_block(indent, m.group("indent"), expr, params[0], nl)
        + lines[bn:]
    )
    new_text = "".join(new)  # a file without a final newline keeps its last line as it was
    _check_patched(new_text, where)
    return new_text


def unpatch_source(text: str) -> str:
    """``text`` without the lines marked ``# yolo-nonlocal`` (the exact inverse of :func:`patch_source`)."""
    return "".join(line for line in text.splitlines(keepends=True) if not is_marked(line))


def git_diff(rel: str, old: bytes | None, new: bytes | None) -> str:
    """The unified diff, in git's format, that turns ``old`` into ``new`` (None: the file does not exist)."""
    a = [] if old is None else old.decode("utf-8").splitlines(keepends=True)
    b = [] if new is None else new.decode("utf-8").splitlines(keepends=True)
    body = list(difflib.unified_diff(a, b, "/dev/null" if old is None else f"a/{rel}",
                                     "/dev/null" if new is None else f"b/{rel}", n=3))
    if not body:
        return ""
    fixed = []
    for line in body:
        if not line.endswith("\n"):
            line += "\n\\ No newline at end of file\n"
        fixed.append(line)  # CRLF lines keep their CR: the hunk lines are the file's bytes
    head = f"diff --git a/{rel} b/{rel}\n"
    if old is None:
        head += "new file mode 100644\n"
    elif new is None:
        head += "deleted file mode 100644\n"
    return head + "".join(fixed)
