"""What a YOLOv5 / YOLOv7 clone looks like to the patcher: its layout, its flavour, the names it defines.

The patcher edits one file, ``models/yolo.py``, and keeps its own state in ``.yolo-nonlocal/`` at the root
of the clone. This module holds those names, the error every refusal raises, and the read-only questions
asked of a tree: is it a clone at all, YOLOv5 or YOLOv7, which layer classes does it define (so that only
YAMLs that build there are copied). It imports nothing outside the standard library.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
from pathlib import Path

__all__ = [
    "FLAVOURS",
    "PARSE_MODEL_ANCHOR",
    "STATE_DIR",
    "YOLO_PY",
    "PatchError",
    "check_tree",
    "defined_names",
    "detect_flavour",
    "read_text",
    "rel",
    "sha256",
]

FLAVOURS = ("yolov5", "yolov7")
YOLO_PY = "models/yolo.py"
STATE_DIR = ".yolo-nonlocal"
PARSE_MODEL_ANCHOR = "def parse_model("

# the files whose top-level classes a model YAML may name (parse_model evals names in models/yolo.py, which
# imports models.common and models.experimental with a star, or names from them one by one)
_LAYER_FILES = ("models/common.py", "models/experimental.py", YOLO_PY)


class PatchError(RuntimeError):
    """A tree cannot be patched, unpatched or read as expected; nothing in the tree has been changed."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rel(root: Path, p: Path) -> str:
    """``p`` relative to ``root``, with forward slashes (as the manifest and the diffs write paths)."""
    return p.relative_to(root).as_posix()


def read_text(path: Path) -> tuple[bytes, str]:
    """The bytes of ``path`` and their UTF-8 text; PatchError saying what is wrong otherwise."""
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise PatchError(f"{path} is a folder; expected the models/yolo.py file of a YOLOv5/YOLOv7 tree") from None
    except OSError as e:
        raise PatchError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return data, data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PatchError(f"{path} is not UTF-8 text ({e}); expected the models/yolo.py of a YOLOv5/YOLOv7 tree") from None


def check_tree(root: Path) -> Path:
    """``root/models/yolo.py`` of a folder that looks like a clone; PatchError naming what is missing."""
    yolo_py = root / YOLO_PY
    if not root.is_dir():
        raise PatchError(f"{root} is not a folder; expected the root of a YOLOv5 or YOLOv7 clone")
    if not yolo_py.is_file():
        raise PatchError(
            f"{root} does not look like a YOLOv5/YOLOv7 clone: expected {yolo_py} "
            "(pass the folder that holds models/, utils/ and train.py)"
        )
    return yolo_py


def detect_flavour(root: os.PathLike | str, *, require_parse_model: bool = True) -> str:
    """Say whether ``root`` is a YOLOv5 or a YOLOv7 tree ("yolov5" / "yolov7"), from its layout and yolo.py.

    YOLOv7 trees have ``cfg/training/`` or a ``models/yolo.py`` that defines ``IDetect`` (YOLOv7 main and
    its ``pytorch`` and ``u5`` branches); anything else with a ``models/yolo.py`` that defines ``parse_model``
    is taken as YOLOv5 (YOLOv7's ``u6`` branch, built on the YOLOv5 v6 code base, included).
    ``require_parse_model=False`` is for undoing a patch: a tree whose parse_model was renamed since is
    still a tree to unpatch.
    """
    root = Path(root)
    yolo_py = check_tree(root)
    _, text = read_text(yolo_py)
    if require_parse_model and PARSE_MODEL_ANCHOR not in text:
        raise PatchError(f"{yolo_py} defines no parse_model(); expected the models/yolo.py of YOLOv5 or YOLOv7")
    if (root / "cfg" / "training").is_dir() or re.search(r"^class IDetect\b", text, re.MULTILINE):
        return "yolov7"
    return "yolov5"


def defined_names(root: Path) -> frozenset[str]:
    """Top-level class and function names of the tree's layer files (models/common.py, experimental.py, yolo.py).

    These are the module names a model YAML row may use in that tree (besides ``nn.*``); a file that is
    missing or does not parse contributes nothing.
    """
    names = set()
    for name in _LAYER_FILES:
        try:
            tree = ast.parse((root / name).read_bytes())
        except (OSError, SyntaxError, ValueError):
            continue
        names.update(n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef)))
        for n in tree.body:  # aliases such as `Bottleneck2 = Bottleneck`
            if isinstance(n, ast.Assign):
                names.update(t.id for t in n.targets if isinstance(t, ast.Name))
    return frozenset(names)
