"""Patch a git clone of YOLOv5 (ultralytics/yolov5) or YOLOv7 (WongKinYiu/yolov7) so its YAMLs can use NonLocal.

What and why
------------
Those trees build models from YAML with their own ``parse_model`` in ``models/yolo.py``: every module name
of a YAML row is ``eval``-ed in that file's globals, and every module that needs its input channels has its
own branch. The usual hand edits (paste a class into ``models/common.py``, add a branch, write a YAML with
the channel count of one scale) break on YOLOv5 >= 2024, whose ``models/yolo.py`` imports names from
``models.common`` one by one (ultralytics/yolov5 #12576). This module makes two edits to ``models/yolo.py``
and nothing else:

1. right after its ``from models.common import ...`` statement, an import of
   :class:`yolo_nonlocal.nonlocal_block.NonLocal` that fails gracefully: without the package the tree still
   builds its stock YAMLs, and only a YAML that uses ``NonLocal`` fails, saying to install it;
2. in ``parse_model``, before the ``elif m is nn.BatchNorm2d:`` branch, a branch that passes the input
   channels, with the very expression the file uses for BatchNorm (``ch[f]``), so YAML rows read
   ``[-1, 1, NonLocal, [reduction, mode, sub_sample]]`` (or ``[]``) at every width multiple.

Every inserted line ends with ``# yolo-nonlocal``. It also copies the Non-local model YAMLs shipped in
``model_yamls/`` (YOLOv5: ``models/yolov5{n,s,m,l,x}-nl.yaml``; YOLOv7: ``cfg/training/yolov7-nl.yaml`` and
``cfg/training/yolov7-tiny-nl.yaml``), and keeps a manifest plus a backup of the original ``models/yolo.py``
in ``PATH/.yolo-nonlocal/`` so that :func:`unpatch` restores every file byte for byte.

Guarantees: idempotent (a second patch changes nothing); atomic (the new ``models/yolo.py`` is parsed with
:mod:`ast` and checked before anything is written, every file is written to a temporary file and renamed
into place, and on any failure the files already replaced are put back, so no file of the tree changes);
refusals say what was expected and how to make the edit by hand. Checkpoints pickle the block as
``yolo_nonlocal.nonlocal_block.NonLocal``, so the tree's own ``attempt_load`` (detect.py, val.py) loads them
wherever this package is installed.

Python API: :func:`patch`, :func:`unpatch`, :func:`status`, :func:`detect_flavour`, :func:`patch_source`.
Command line: ``yolo-nonlocal patch PATH [--dry-run] [--flavour yolov5|yolov7]``,
``yolo-nonlocal unpatch PATH [--keep-edited]``, ``yolo-nonlocal status PATH``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import datetime as _dt
import difflib
import hashlib
import importlib.resources
import json
import os
import re
import stat
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

__all__ = [
    "FLAVOURS",
    "MARKER",
    "STATE_DIR",
    "YAMLS",
    "PatchError",
    "PatchResult",
    "UnpatchResult",
    "TreeStatus",
    "detect_flavour",
    "patch_source",
    "unpatch_source",
    "patch",
    "unpatch",
    "status",
    "hazards",
    "source_yaml_dir",
    "cli_patch",
    "cli_unpatch",
    "cli_status",
]

FLAVOURS = ("yolov5", "yolov7")
MARKER = "# yolo-nonlocal"
STATE_DIR = ".yolo-nonlocal"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
YOLO_PY = "models/yolo.py"

# (path in model_yamls/, path in the tree) per flavour
YAMLS: Dict[str, Tuple[Tuple[str, str], ...]] = {
    "yolov5": tuple((f"yolov5/yolov5{s}-nl.yaml", f"models/yolov5{s}-nl.yaml") for s in "nsmlx"),
    "yolov7": (
        ("yolov7/yolov7-nl.yaml", "cfg/training/yolov7-nl.yaml"),
        ("yolov7/yolov7-tiny-nl.yaml", "cfg/training/yolov7-tiny-nl.yaml"),
    ),
}

PARSE_MODEL_ANCHOR = "def parse_model("
BATCHNORM_ANCHOR = "elif m is nn.BatchNorm2d:"
_BN_ARGS = re.compile(r"^(?P<indent>[ \t]+)args\s*=\s*\[\s*(?P<expr>[^\[\]]*(?:\[[^\[\]]*\][^\[\]]*)*)\s*\]\s*(#.*)?$")
_COMMON_IMPORT = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?models\.common$")

class PatchError(RuntimeError):
    """A tree cannot be patched, unpatched or read as expected; nothing in the tree has been changed."""


# --------------------------------------------------------------------------------------------- helpers


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _rel(root: Path, p: Path) -> str:
    return p.relative_to(root).as_posix()


def source_yaml_dir() -> Path:
    """The folder holding the shipped model YAMLs: inside the wheel, or at the repository top in a dev install."""
    try:
        packaged = importlib.resources.files("yolo_nonlocal") / "model_yamls"
        if packaged.is_dir():
            return Path(str(packaged))
    except (ModuleNotFoundError, TypeError, NotImplementedError):  # pragma: no cover - exotic loaders
        pass
    import yolo_nonlocal

    dev = Path(yolo_nonlocal.__file__).resolve().parent.parent / "model_yamls"
    if dev.is_dir():
        return dev
    raise PatchError(
        "cannot find the model YAMLs of yolo-nonlocal (looked for yolo_nonlocal/model_yamls in the installed "
        f"package and {dev}); reinstall the package: pip install --force-reinstall yolo-nonlocal"
    )


def _newline_of(text: str) -> str:
    first = text.find("\n")
    return "\r\n" if first > 0 and text[first - 1] == "\r" else "\n"


_MARKED = re.compile(r"\s" + re.escape(MARKER) + r"(?::[^\r\n]*)?[ \t]*\r?\n?$")


def _is_marked(line: str) -> bool:
    """True for a line this module inserted: it ends with ``# yolo-nonlocal`` (optionally ``: a note``)."""
    return _MARKED.search(line) is not None


def _read_text(path: Path) -> Tuple[bytes, str]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PatchError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return data, data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PatchError(f"{path} is not UTF-8 text ({e}); expected the models/yolo.py of a YOLOv5/YOLOv7 tree") from None


# --------------------------------------------------------------------------------------------- detection


def detect_flavour(root: os.PathLike | str) -> str:
    """Say whether ``root`` is a YOLOv5 or a YOLOv7 tree ("yolov5" / "yolov7"), from its layout and yolo.py.

    YOLOv7 trees have ``cfg/training/`` and their ``models/yolo.py`` defines ``IDetect``; anything else with a
    ``models/yolo.py`` that defines ``parse_model`` is taken as YOLOv5 (YOLOv7's u5/u6 branches, which are
    built on the YOLOv5 code base, included: pass ``flavour`` to choose their YAMLs yourself).
    """
    root = Path(root)
    yolo_py = root / YOLO_PY
    if not root.is_dir():
        raise PatchError(f"{root} is not a folder; expected the root of a YOLOv5 or YOLOv7 clone")
    if not yolo_py.is_file():
        raise PatchError(
            f"{root} does not look like a YOLOv5/YOLOv7 clone: expected {yolo_py} "
            "(pass the folder that holds models/, utils/ and train.py)"
        )
    _, text = _read_text(yolo_py)
    if PARSE_MODEL_ANCHOR not in text:
        raise PatchError(f"{yolo_py} defines no parse_model(); expected the models/yolo.py of YOLOv5 or YOLOv7")
    if (root / "cfg" / "training").is_dir() or re.search(r"^class IDetect\b", text, re.M):
        return "yolov7"
    return "yolov5"


# --------------------------------------------------------------------------------------------- source edit


def _import_block(nl: str) -> List[str]:
    lines = [
        f"try:  {MARKER}: NonLocal rows in model YAMLs (https://pypi.org/project/yolo-nonlocal)",
        f"    from yolo_nonlocal.nonlocal_block import NonLocal  {MARKER}",
        f"except ImportError as _yolo_nonlocal_error:  {MARKER}: stock YAMLs still build without the package",
        f"    def NonLocal(*args, _why=str(_yolo_nonlocal_error), **kwargs):  {MARKER}",
        f'        raise ImportError(f"this model YAML uses NonLocal: pip install yolo-nonlocal ({{_why}})")  {MARKER}',
    ]
    return [line + nl for line in lines]


def _branch_block(indent: str, body_indent: str, expr: str, nl: str) -> List[str]:
    lines = [
        f"{indent}elif m is NonLocal:  {MARKER}: channels in = channels out = {expr}",
        f"{body_indent}c2 = {expr}  {MARKER}",
        f"{body_indent}args = [c2, *args]  {MARKER}",
    ]
    return [line + nl for line in lines]


def _manual() -> str:
    block = "".join("         " + line for line in _import_block("\n"))
    branch = "".join("         " + line for line in _branch_block("", "    ", "ch[f]", "\n"))
    return (
        "To patch by hand, edit models/yolo.py:\n"
        "  1. right after its top-level `from models.common import ...` statement, add\n" + block +
        "  2. in parse_model, right above `elif m is nn.BatchNorm2d:` and at its indentation, add\n" + branch +
        "     with the channel expression of the BatchNorm2d branch below it (`ch[f]` in YOLOv5 and YOLOv7);\n"
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
            f"(main, u5, u6) has exactly once; this file has a layout the patcher does not know.\n{_manual()}"
        )
    return hits[0]


def _check_patched(new_text: str, where: str) -> None:
    """Parse the patched source and check that the import and the branch are where they must be."""
    try:
        tree = ast.parse(new_text, filename=where)
    except SyntaxError as e:
        raise PatchError(
            f"the patched {where} would not compile ({e.msg}, line {e.lineno}); nothing was written.\n{_manual()}"
        ) from None
    top_import = any(
        isinstance(node, ast.Try)
        and any(
            isinstance(s, ast.ImportFrom) and s.module == "yolo_nonlocal.nonlocal_block" and any(a.name == "NonLocal" for a in s.names)
            for s in node.body
        )
        for node in tree.body
    )
    parse_model = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "parse_model"]
    branch = bool(parse_model) and any(
        isinstance(n, ast.Compare)
        and isinstance(n.ops[0], ast.Is)
        and isinstance(n.comparators[0], ast.Name)
        and n.comparators[0].id == "NonLocal"
        for n in ast.walk(parse_model[0])
    )
    if not (top_import and branch):
        raise PatchError(
            f"the patched {where} compiles but lacks the top-level NonLocal import or the parse_model branch "
            f"(parse_model must be a top-level function); nothing was written.\n{_manual()}"
        )


def patch_source(text: str, where: str = YOLO_PY) -> str:
    """Return ``text`` (a models/yolo.py) with the NonLocal import and parse_model branch; idempotent.

    Raises :class:`PatchError` naming the missing anchor when the file's layout is not the expected one.
    """
    if any(_is_marked(line) for line in text.splitlines()):
        stripped = unpatch_source(text)
        if patch_source(stripped, where) == text:
            return text
        raise PatchError(
            f"{where} already contains lines marked `{MARKER}` but not the ones this version would add "
            "(an older or hand-edited patch); run `yolo-nonlocal unpatch PATH` first, or delete the marked lines"
        )
    nl = _newline_of(text)
    lines = text.splitlines(keepends=True)
    pm = _single(text, PARSE_MODEL_ANCHOR, where)
    bn = _single(text, BATCHNORM_ANCHOR, where)
    if bn < pm:
        raise PatchError(f"{where}: `{BATCHNORM_ANCHOR}` (line {bn + 1}) comes before `{PARSE_MODEL_ANCHOR}` "
                         f"(line {pm + 1}); expected it inside parse_model.\n{_manual()}")
    anchor_line = lines[bn]
    indent = anchor_line[: len(anchor_line) - len(anchor_line.lstrip(" \t"))]
    body = lines[bn + 1].rstrip("\r\n") if bn + 1 < len(lines) else ""
    m = _BN_ARGS.match(body)
    if not m or len(m.group("indent")) <= len(indent):
        raise PatchError(
            f"{where}, line {bn + 2}: expected the BatchNorm2d branch body `args = [<input channels>]` "
            f"(e.g. `args = [ch[f]]`) right below `{BATCHNORM_ANCHOR}`, found {body.strip()!r}.\n{_manual()}"
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
            f"layers that way, possibly with a package prefix); the import of NonLocal goes right after it.\n{_manual()}"
        )
    after = imports[-1].end_lineno  # 1-based last line of the statement == 0-based index of the next line
    if after is None or after > bn:  # pragma: no cover - Python >= 3.8 always sets end_lineno
        raise PatchError(f"{where}: the models.common import is not above parse_model.\n{_manual()}")
    new = (
        lines[:after]
        + _import_block(nl)
        + lines[after:bn]
        + _branch_block(indent, m.group("indent"), expr, nl)
        + lines[bn:]
    )
    # a file without a final newline: keep the last line as it was
    new_text = "".join(new)
    _check_patched(new_text, where)
    return new_text


def unpatch_source(text: str) -> str:
    """``text`` without the lines this module marks with ``# yolo-nonlocal`` (the exact inverse of patch_source)."""
    return "".join(line for line in text.splitlines(keepends=True) if not _is_marked(line))


# --------------------------------------------------------------------------------------------- file transaction


def _read_only(path: Path) -> bool:
    """True for a file nobody may write (mode bits), or that this user may not write (os.access)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return False
    return not (mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)) or not os.access(path, os.W_OK)


class _Transaction:
    """Write or delete a set of files all or nothing: stage, check, write temporaries, rename, roll back on error."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ops: List[Tuple[Path, Optional[bytes]]] = []  # (path, new bytes or None to delete)

    def write(self, path: Path, data: bytes) -> None:
        self.ops.append((path, data))

    def delete(self, path: Path) -> None:
        self.ops.append((path, None))

    def _preflight(self) -> None:
        problems = []
        for path, data in self.ops:
            rel = _rel(self.root, path)
            if path.exists() and _read_only(path):
                problems.append(f"{rel} is read-only (make it writable, e.g. chmod u+w {rel})")
            parent = path.parent
            while not parent.exists():
                parent = parent.parent
            if not os.access(parent, os.W_OK | os.X_OK):
                problems.append(f"cannot write in folder {_rel(self.root, parent) if parent != self.root else '.'}")
        if problems:
            raise PatchError("nothing was changed: " + "; ".join(dict.fromkeys(problems)))

    def commit(self, replace: Optional[Callable[[str, str], None]] = None) -> None:
        replace = replace or os.replace
        self._preflight()
        made_dirs: List[Path] = []
        temps: List[Tuple[Path, Optional[Path]]] = []
        done: List[Tuple[Path, Optional[bytes]]] = []  # (path, previous bytes or None if it did not exist)
        try:
            for path, data in self.ops:
                if data is None:
                    temps.append((path, None))
                    continue
                missing = []
                d = path.parent
                while not d.exists():
                    missing.append(d)
                    d = d.parent
                for d in reversed(missing):
                    d.mkdir()
                    made_dirs.append(d)
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".yolo-nonlocal-tmp")
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                if path.exists():
                    os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
                else:
                    umask = os.umask(0)
                    os.umask(umask)
                    os.chmod(tmp, 0o666 & ~umask)
                temps.append((path, Path(tmp)))
            for path, tmp in temps:
                previous = path.read_bytes() if path.exists() else None
                if tmp is None:
                    if previous is not None:
                        path.unlink()
                else:
                    replace(str(tmp), str(path))
                done.append((path, previous))
        except BaseException as error:
            for path, previous in reversed(done):
                try:
                    if previous is None:
                        path.unlink()
                    else:
                        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".yolo-nonlocal-tmp")
                        with os.fdopen(fd, "wb") as f:
                            f.write(previous)
                        os.replace(tmp, path)
                except OSError:  # pragma: no cover - the disk failed twice; report below
                    pass
            for _, tmp in temps:
                if tmp is not None and tmp.exists():
                    tmp.unlink()
            for d in reversed(made_dirs):
                try:
                    d.rmdir()
                except OSError:
                    pass
            if isinstance(error, OSError):
                raise PatchError(f"nothing was changed: writing {getattr(error, 'filename', '') or 'a file'} failed "
                                 f"({error.strerror or error}); every file was put back") from error
            raise


# --------------------------------------------------------------------------------------------- results


@dataclasses.dataclass(frozen=True)
class PatchResult:
    """What :func:`patch` did (or, with ``dry_run``, would do)."""

    root: Path
    flavour: str
    changed: Tuple[str, ...]  # tree-relative paths written or created (would be, for a dry run)
    kept: Tuple[str, ...]  # copied YAMLs left alone because the user edited them since
    dry_run: bool
    diff: str  # unified diff (git format) of the tree's files; empty when nothing changes

    @property
    def already_patched(self) -> bool:
        return not self.changed


@dataclasses.dataclass(frozen=True)
class UnpatchResult:
    """What :func:`unpatch` did."""

    root: Path
    restored: Tuple[str, ...]  # files written back or removed
    kept: Tuple[str, ...]  # edited YAMLs left in place (keep_edited=True)
    stripped: bool  # models/yolo.py had changed since the patch: marked lines removed instead of the backup
    was_patched: bool


@dataclasses.dataclass(frozen=True)
class TreeStatus:
    """Whether and how a tree is patched; ``str()`` is the report ``yolo-nonlocal status`` prints."""

    root: Path
    flavour: str
    yolo_py: str  # "stock ...", "patched ..." (unchanged since, edited since, or without a backup)
    yamls: Dict[str, str]  # tree path -> "absent", "copied", "edited since copied", "present (not copied by us)", ...
    manifest: Optional[dict]
    hazards: Tuple[str, ...]

    @property
    def patched(self) -> bool:
        """True when models/yolo.py carries the NonLocal import and branch."""
        return not self.yolo_py.startswith("stock")

    def __str__(self) -> str:
        name = {"yolov5": "YOLOv5", "yolov7": "YOLOv7"}[self.flavour]
        lines = [f"{self.root}: {name} tree"]
        if self.manifest:
            lines.append(
                f"patched by yolo-nonlocal {self.manifest.get('version', '?')} on {self.manifest.get('patched_at', '?')}"
                f" (state in {STATE_DIR}/)"
            )
        elif self.patched:
            lines.append(f"patched without a {STATE_DIR}/ record (git apply or by hand); unpatch removes the marked lines")
        else:
            lines.append("not patched: run `yolo-nonlocal patch PATH`")
        lines.append(f"  {YOLO_PY}: {self.yolo_py}")
        for path, state in self.yamls.items():
            lines.append(f"  {path}: {state}")
        try:
            import importlib.util

            found = importlib.util.find_spec("yolo_nonlocal.nonlocal_block") is not None
        except ImportError:  # pragma: no cover
            found = False
        lines.append(f"NonLocal importable by this Python ({sys.executable}): {'yes' if found else 'no'}")
        for h in self.hazards:
            lines.append(f"note: {h}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------- manifest


def _state(root: Path) -> Path:
    return root / STATE_DIR


def _load_manifest(root: Path) -> Optional[dict]:
    path = _state(root) / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PatchError(f"{_rel(root, path)} is unreadable ({e}); restore it from {STATE_DIR}/ or delete that folder "
                         "after checking models/yolo.py by hand") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT or "files" not in manifest:
        raise PatchError(f"{_rel(root, path)} is not a yolo-nonlocal manifest of format {MANIFEST_FORMAT}")
    return manifest


def _version() -> str:
    try:
        from yolo_nonlocal import __version__

        return __version__
    except ImportError:  # pragma: no cover
        return "unknown"


# --------------------------------------------------------------------------------------------- diff


def _diff(rel: str, old: Optional[bytes], new: Optional[bytes]) -> str:
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
        elif line.endswith("\r\n"):  # keep CRLF bytes in the hunk lines themselves
            pass
        fixed.append(line)
    head = f"diff --git a/{rel} b/{rel}\n"
    if old is None:
        head += "new file mode 100644\n"
    elif new is None:
        head += "deleted file mode 100644\n"
    return head + "".join(fixed)


# --------------------------------------------------------------------------------------------- hazards


def _dist_version(name: str) -> Tuple[int, int]:
    """(major, minor) of an installed distribution, read from its metadata (no import); (0, 0) if absent."""
    from importlib import metadata

    try:
        parts = re.findall(r"\d+", metadata.version(name))[:2]
    except metadata.PackageNotFoundError:
        return (0, 0)
    return (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0)


def hazards(root: os.PathLike | str) -> List[str]:
    """Known problems of old trees with today's torch/numpy that this Python would hit, with their fixes."""
    root = Path(root)
    notes = []

    def grep(rel: str, pattern: str) -> bool:
        try:
            return re.search(pattern, (root / rel).read_text(encoding="utf-8", errors="replace"), re.M) is not None
        except OSError:
            return False

    np_major, np_minor = _dist_version("numpy")
    if np_major >= 2 and grep("utils/metrics.py", r"np\.trapz\("):
        notes.append(
            "utils/metrics.py calls np.trapz, which numpy 2 removed: validation fails with AttributeError. "
            "Use numpy<2 in this environment, or replace np.trapz with np.trapezoid in utils/metrics.py."
        )
    if (np_major, np_minor) >= (1, 24):
        old_alias = re.compile(r"\bnp\.(?:int|float|bool)\b")
        users = sorted(
            _rel(root, f) for f in (root / "utils").glob("*.py")
            if old_alias.search(f.read_text(encoding="utf-8", errors="replace"))
        ) if (root / "utils").is_dir() else []
        if users:
            notes.append(
                f"{', '.join(users)} use np.int/np.float/np.bool, which numpy 1.24 removed: the data loader fails "
                "with AttributeError. Use numpy<1.24 for this tree, or replace them with int/float/bool."
            )
    tv = _dist_version("torch")
    if tv >= (2, 6) and grep("models/experimental.py", r"torch\.load\((?![^)\n]*weights_only)"):
        notes.append(
            "models/experimental.py calls torch.load without weights_only, and torch >= 2.6 loads with "
            "weights_only=True: attempt_load (detect.py, val.py, train.py --weights) fails on the tree's own "
            "checkpoints. Set TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 for trusted checkpoints."
        )
    if grep("utils/general.py", r"def check_font\(") or grep("utils/plots.py", r"check_font\("):
        notes.append(
            "the tree downloads Arial.ttf on first use (at import in YOLOv5 v6.0, in check_dataset later): "
            "offline, put any TrueType font at $YOLOV5_CONFIG_DIR/Arial.ttf (default ~/.config/Ultralytics/)."
        )
    return notes


# --------------------------------------------------------------------------------------------- API


def _resolve_flavour(root: Path, flavour: Optional[str]) -> str:
    if flavour is None:
        return detect_flavour(root)
    if flavour not in FLAVOURS:
        raise PatchError(f"unknown flavour {flavour!r}; expected one of {', '.join(FLAVOURS)}")
    detect_flavour(root)  # still checks that it is a tree at all
    return flavour


def patch(path: os.PathLike | str, dry_run: bool = False, flavour: Optional[str] = None) -> PatchResult:
    """Patch the YOLOv5/YOLOv7 tree at ``path`` (see the module docstring); idempotent and atomic.

    Args:
        path: root of the clone (the folder with ``models/yolo.py``).
        dry_run: compute and return the diff, write nothing.
        flavour: "yolov5" or "yolov7" to override detection (which only chooses the YAMLs to copy).
    Raises:
        PatchError: the tree is not one the patcher understands, a file is not writable, or a file it would
            create exists with other content; nothing has been changed.
    """
    root = Path(path).resolve()
    fl = _resolve_flavour(root, flavour)
    manifest = _load_manifest(root)
    if manifest and manifest.get("flavour") != fl:
        raise PatchError(
            f"{root} was patched as {manifest.get('flavour')}; run `yolo-nonlocal unpatch {path}` before "
            f"patching it as {fl}"
        )
    yolo_py = root / YOLO_PY
    old_bytes, old_text = _read_text(yolo_py)
    new_text = patch_source(old_text, YOLO_PY)
    new_bytes = new_text.encode("utf-8")

    tx = _Transaction(root)
    changed: List[str] = []
    kept: List[str] = []
    diffs: List[str] = []
    files = dict(manifest["files"]) if manifest else {}
    if new_bytes != old_bytes:
        changed.append(YOLO_PY)
        diffs.append(_diff(YOLO_PY, old_bytes, new_bytes))
        tx.write(yolo_py, new_bytes)
        tx.write(_state(root) / "backup" / YOLO_PY, old_bytes)
        files[YOLO_PY] = {
            "action": "modified",
            "original_sha256": _sha256(old_bytes),
            "patched_sha256": _sha256(new_bytes),
            "backup": f"backup/{YOLO_PY}",
        }
    elif YOLO_PY in files:
        files[YOLO_PY]["patched_sha256"] = _sha256(new_bytes)

    created_dirs = list((manifest or {}).get("created_dirs", []))
    src_dir = source_yaml_dir()
    for src_rel, dst_rel in YAMLS[fl]:
        src = src_dir / src_rel
        try:
            data = src.read_bytes()
        except OSError:
            raise PatchError(f"the package is missing {src}; reinstall yolo-nonlocal") from None
        dst = root / dst_rel
        record = files.get(dst_rel)
        if dst.exists():
            current = dst.read_bytes()
            if current == data:
                if record is None and manifest is not None:
                    files[dst_rel] = {"action": "created", "sha256": _sha256(data)}
                continue
            if record is None:
                raise PatchError(
                    f"{dst_rel} exists and differs from the yolo-nonlocal YAML of that name; nothing was changed. "
                    f"Rename or remove your {dst_rel}, then patch again."
                )
            if _sha256(current) != record.get("sha256"):
                kept.append(dst_rel)  # the user's edits win; unpatch will refuse to delete it
                continue
        changed.append(dst_rel)
        d = dst.parent
        while not d.exists() and d != root:  # folders the patch creates (cfg/training in a bare tree)
            if _rel(root, d) not in created_dirs:
                created_dirs.append(_rel(root, d))
            d = d.parent
        diffs.append(_diff(dst_rel, dst.read_bytes() if dst.exists() else None, data))
        tx.write(dst, data)
        files[dst_rel] = {"action": "created", "sha256": _sha256(data)}

    if changed and not dry_run:
        new_manifest = {
            "tool": "yolo-nonlocal",
            "format": MANIFEST_FORMAT,
            "version": _version(),
            "flavour": fl,
            "patched_at": (manifest or {}).get("patched_at")
            or _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "files": files,
            "created_dirs": sorted(created_dirs, key=lambda d: (-d.count("/"), d)),
        }
        tx.write(_state(root) / MANIFEST, (json.dumps(new_manifest, indent=2, sort_keys=True) + "\n").encode())
        if not (_state(root) / ".gitignore").exists():
            tx.write(_state(root) / ".gitignore", b"# yolo-nonlocal bookkeeping (unpatch needs it): not for git\n*\n")
        tx.commit()
    return PatchResult(root, fl, tuple(changed), tuple(kept), dry_run, "".join(diffs))


def unpatch(path: os.PathLike | str, keep_edited: bool = False) -> UnpatchResult:
    """Restore a patched tree: models/yolo.py byte for byte, the copied YAMLs removed, the state folder removed.

    A copied YAML edited since is not removed: the call refuses (PatchError, nothing changed) unless
    ``keep_edited`` is true, in which case it is left in place. When models/yolo.py itself was edited after
    the patch, the marked lines are removed and the user's other edits kept. Without a state folder (a tree
    patched with ``git apply``), the marked lines are removed and unedited copies of the YAMLs deleted.
    """
    root = Path(path).resolve()
    fl = detect_flavour(root)
    manifest = _load_manifest(root)
    yolo_py = root / YOLO_PY
    cur_bytes, cur_text = _read_text(yolo_py)
    tx = _Transaction(root)
    restored: List[str] = []
    kept: List[str] = []
    edited: List[str] = []
    stripped = False

    if manifest:
        record = manifest["files"].get(YOLO_PY)
        if record and _sha256(cur_bytes) == record["patched_sha256"]:
            backup = _state(root) / record["backup"]
            try:
                original = backup.read_bytes()
            except OSError:
                raise PatchError(f"the backup {_rel(root, backup)} is missing; nothing was changed. Remove the "
                                 f"lines marked `{MARKER}` from {YOLO_PY} by hand.") from None
            if _sha256(original) != record["original_sha256"]:
                raise PatchError(f"the backup {_rel(root, backup)} does not match its checksum; nothing was changed")
            tx.write(yolo_py, original)
            restored.append(YOLO_PY)
        elif any(_is_marked(line) for line in cur_text.splitlines()):
            tx.write(yolo_py, unpatch_source(cur_text).encode("utf-8"))
            restored.append(YOLO_PY)
            stripped = record is not None  # edited after our patch (else it came patched, e.g. by git apply)
        yaml_records = [(p, r) for p, r in manifest["files"].items() if r.get("action") == "created"]
    else:
        if any(_is_marked(line) for line in cur_text.splitlines()):
            tx.write(yolo_py, unpatch_source(cur_text).encode("utf-8"))
            restored.append(YOLO_PY)
        src_dir = source_yaml_dir()
        yaml_records = [(dst, {"sha256": _sha256((src_dir / src).read_bytes())}) for src, dst in YAMLS[fl]]
        yaml_records = [(p, r) for p, r in yaml_records if (root / p).exists()]
        for p, r in yaml_records:  # without a record, only byte-identical copies are ours to remove
            if _sha256((root / p).read_bytes()) != r["sha256"]:
                kept.append(p)
        yaml_records = [(p, r) for p, r in yaml_records if p not in kept]

    for rel, record in yaml_records:
        f = root / rel
        if not f.exists():
            continue
        if _sha256(f.read_bytes()) != record["sha256"]:
            edited.append(rel)
            continue
        tx.delete(f)
        restored.append(rel)
    if edited and not keep_edited:
        raise PatchError(
            "nothing was changed: " + ", ".join(edited) + " changed since yolo-nonlocal copied "
            + ("it" if len(edited) == 1 else "them")
            + "; unpatching would lose your edits. Rename or move the file(s) away (they are yours now), or "
            "run `yolo-nonlocal unpatch PATH --keep-edited` to leave them in place."
        )
    kept.extend(edited)
    state = _state(root)
    if state.exists():
        for f in sorted(state.rglob("*"), reverse=True):
            if f.is_file() or f.is_symlink():
                tx.delete(f)
    was_patched = bool(restored) or manifest is not None
    tx.commit()
    if state.exists():
        for d in sorted((p for p in state.rglob("*") if p.is_dir()), reverse=True):
            try:
                d.rmdir()
            except OSError:
                pass
        try:
            state.rmdir()
        except OSError:
            pass
    for rel in (manifest or {}).get("created_dirs", []):  # folders the patch made for the YAMLs, if empty now
        try:
            (root / rel).rmdir()
        except OSError:
            pass
    return UnpatchResult(root, tuple(restored), tuple(kept), stripped, was_patched)


def status(path: os.PathLike | str) -> TreeStatus:
    """Report whether and how the tree at ``path`` is patched (``str()`` of the result is human-readable)."""
    root = Path(path).resolve()
    fl = detect_flavour(root)
    manifest = _load_manifest(root)
    cur_bytes, cur_text = _read_text(root / YOLO_PY)
    marked = any(_is_marked(line) for line in cur_text.splitlines())
    if not marked:
        yolo_state = "stock (no NonLocal import or branch)"
        if manifest and YOLO_PY in manifest["files"]:
            yolo_state = "stock, although a patch is recorded (the file was replaced since): run patch again"
    else:
        record = (manifest or {}).get("files", {}).get(YOLO_PY)
        if record and _sha256(cur_bytes) == record["patched_sha256"]:
            yolo_state = "patched (NonLocal import + parse_model branch), unchanged since"
        elif record:
            yolo_state = "patched, edited since (unpatch removes the marked lines and keeps your other edits)"
        else:
            yolo_state = "patched (marked lines present; no backup)"
    if manifest:
        fl = manifest.get("flavour", fl)
    src_dir = source_yaml_dir()
    yamls: Dict[str, str] = {}
    for src_rel, dst_rel in YAMLS[fl]:
        dst = root / dst_rel
        record = (manifest or {}).get("files", {}).get(dst_rel)
        if not dst.exists():
            yamls[dst_rel] = "absent" + (" (was copied, since removed)" if record else "")
            continue
        digest = _sha256(dst.read_bytes())
        if record:
            yamls[dst_rel] = "copied, unchanged" if digest == record["sha256"] else "copied, edited since (unpatch keeps it only with --keep-edited)"
        elif (src_dir / src_rel).exists() and digest == _sha256((src_dir / src_rel).read_bytes()):
            yamls[dst_rel] = "present, identical to the packaged YAML"
        else:
            yamls[dst_rel] = "present, not copied by yolo-nonlocal"
    return TreeStatus(root, fl, yolo_state, yamls, manifest, tuple(hazards(root)))


# --------------------------------------------------------------------------------------------- command line


def _kv_to_flags(argv: Sequence[str], keys: Sequence[str]) -> List[str]:
    """Accept Ultralytics-style ``key=value`` for the given keys as well as ``--key value``."""
    out: List[str] = []
    for a in argv:
        key, eq, value = a.partition("=")
        if eq and not a.startswith("-") and key.replace("-", "_") in keys:
            if key.replace("-", "_") in ("dry_run", "keep_edited"):
                if value.lower() in ("1", "true", "yes", "on"):
                    out.append("--" + key.replace("_", "-"))
                continue
            out += ["--" + key.replace("_", "-"), value] if key != "path" else [value]
        else:
            out.append(a)
    return out


def _parser(cmd: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"yolo-nonlocal {cmd}", description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", nargs="?", default=".", help="root of the YOLOv5/YOLOv7 clone (default: current folder)")
    return p


def cli_patch(argv: Optional[Sequence[str]] = None) -> int:
    """``yolo-nonlocal patch PATH [--dry-run] [--flavour yolov5|yolov7]``."""
    p = _parser("patch", "Edit models/yolo.py of a YOLOv5/YOLOv7 clone so its YAMLs can use NonLocal rows, and "
                "copy the Non-local model YAMLs into it. Undo with `yolo-nonlocal unpatch PATH`.")
    p.add_argument("--dry-run", action="store_true", help="print the unified diff, change nothing")
    p.add_argument("--flavour", "--flavor", choices=FLAVOURS, help="treat the tree as this (default: detect)")
    args = p.parse_args(_kv_to_flags(list(sys.argv[1:] if argv is None else argv), ("path", "flavour", "dry_run")))
    try:
        result = patch(args.path, dry_run=args.dry_run, flavour=args.flavour)
    except PatchError as e:
        print(f"yolo-nonlocal patch: {e}", file=sys.stderr)
        return 1
    if args.dry_run:
        sys.stdout.write(result.diff)
        print(f"# dry run: {len(result.changed)} file(s) would change; nothing was written"
              + (f" (state would go to {STATE_DIR}/)" if result.changed else " (already patched)"), file=sys.stderr)
        return 0
    if result.already_patched:
        print(f"{result.root}: already patched ({result.flavour}); nothing to do")
    else:
        print(f"{result.root}: patched as {result.flavour}")
        for rel in result.changed:
            print(f"  {'modified' if rel == YOLO_PY else 'created '} {rel}")
        print(f"  undo: yolo-nonlocal unpatch {args.path}")
    for rel in result.kept:
        print(f"  kept your edited {rel}")
    for h in hazards(result.root):
        print(f"note: {h}")
    return 0


def cli_unpatch(argv: Optional[Sequence[str]] = None) -> int:
    """``yolo-nonlocal unpatch PATH [--keep-edited]``."""
    p = _parser("unpatch", "Restore a clone patched by `yolo-nonlocal patch`: models/yolo.py byte for byte, the "
                "copied YAMLs removed (an edited one only with --keep-edited, which leaves it in place).")
    p.add_argument("--keep-edited", action="store_true", help="leave copied YAMLs you have edited in place")
    args = p.parse_args(_kv_to_flags(list(sys.argv[1:] if argv is None else argv), ("path", "keep_edited")))
    try:
        result = unpatch(args.path, keep_edited=args.keep_edited)
    except PatchError as e:
        print(f"yolo-nonlocal unpatch: {e}", file=sys.stderr)
        return 1
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
    return 0


def cli_status(argv: Optional[Sequence[str]] = None) -> int:
    """``yolo-nonlocal status PATH``: print whether and how the tree is patched (exit 0 either way)."""
    p = _parser("status", "Say whether and how a YOLOv5/YOLOv7 clone is patched by yolo-nonlocal.")
    args = p.parse_args(_kv_to_flags(list(sys.argv[1:] if argv is None else argv), ("path",)))
    try:
        print(status(args.path))
    except PatchError as e:
        print(f"yolo-nonlocal status: {e}", file=sys.stderr)
        return 1
    return 0
