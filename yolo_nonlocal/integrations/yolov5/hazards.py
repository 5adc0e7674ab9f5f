"""Known problems of YOLOv5 / YOLOv7 trees with the torch, numpy and Pillow of this Python.

None of them is caused by the patch; they stop the stock trees as much as patched ones, and a user who
reaches them after patching should learn that at once, with a fix that does not break this environment.
Every note says what fails, where, and what to do; old trees that need old torch/numpy/Pillow releases
get their own environment (a downgrade here would break yolo-nonlocal and Ultralytics in this one).

Each check looks at the tree's source (a pattern in a named file) and at what this Python has installed
(distribution metadata, read without importing), except the torch one of ``build_targets``, which asks the
installed torch itself, since no release note says when it began to refuse that in-place clamp.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from pathlib import Path

from yolo_nonlocal.integrations.yolov5.tree import rel

__all__ = ["OWN_ENVIRONMENT", "hazards"]

OWN_ENVIRONMENT = (
    "the notes above are about packages newer than the tree: do not downgrade them here (torch, numpy or "
    "Pillow of the tree's era break yolo-nonlocal, Ultralytics and their neighbours in this environment). "
    "Make the edits the notes name, or give the tree its own environment: python -m venv, pip install -r "
    "the tree's requirements.txt with the torch/numpy/Pillow releases of its time, then pip install "
    "yolo-nonlocal there."
)
_SEE = " Or run the tree in its own environment (last note)."
# the values torch itself accepts for TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD (torch/serialization.py)
_TORCH_TRUE = ("1", "y", "yes", "true")


def _dist_version(name: str) -> tuple[int, int]:
    """(major, minor) of an installed distribution, read from its metadata (no import); (0, 0) if absent."""
    from importlib import metadata

    try:
        parts = re.findall(r"\d+", metadata.version(name))[:2]
    except metadata.PackageNotFoundError:
        return (0, 0)
    return (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0)


@functools.lru_cache(maxsize=1)
def _torch_refuses_float_clamp_of_long() -> bool:
    """Whether this torch refuses ``long_tensor.clamp_(0, float_tensor)`` (old YOLOv5 build_targets does that).

    Asked in a subprocess, so that ``status`` does not import torch into the calling process.
    """
    code = ("import torch\ng = torch.ones(7)\ntry:\n    torch.zeros(2, dtype=torch.long).clamp_(0, g[3] - 1)\n"
            "except RuntimeError:\n    print('refused')\nelse:\n    print('ok')\n")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             check=False)
    except (OSError, subprocess.SubprocessError):  # pragma: no cover
        return False
    return out.stdout.strip() == "refused"


def hazards(root: os.PathLike | str) -> list[str]:
    """The known problems this Python would hit with the tree at ``root``, each with what to do."""
    root = Path(root)
    notes: list[str] = []

    def source(rel_path: str) -> str:
        try:
            return (root / rel_path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def grep(rel_path: str, pattern: str) -> bool:
        return re.search(pattern, source(rel_path), re.MULTILINE) is not None

    utils = sorted((root / "utils").rglob("*.py")) if (root / "utils").is_dir() else []
    np_version = _dist_version("numpy")
    if np_version >= (2, 0) and grep("utils/metrics.py", r"np\.trapz\("):
        notes.append(
            "utils/metrics.py calls np.trapz, which numpy 2 removed: validation (val.py, the end of train.py) "
            "fails with AttributeError. Replace np.trapz with np.trapezoid there." + _SEE
        )
    if np_version >= (1, 24):
        old_alias = re.compile(r"\bnp\.(?:int|float|bool)\b(?!\w)")
        users = [rel(root, f) for f in utils if old_alias.search(f.read_text(encoding="utf-8", errors="replace"))]
        if users:
            notes.append(
                f"{', '.join(users)} use np.int / np.float / np.bool, which numpy 1.24 removed: the data loader "
                "or the metrics fail with AttributeError. Replace them with int / float / bool." + _SEE
            )
    if (grep("utils/loss.py", r"\.clamp_\(0, gain\[")
            and grep("utils/loss.py", r"gain = torch\.ones\(7, device=targets\.device\)(?!\.long)")
            and _torch_refuses_float_clamp_of_long()):
        notes.append(
            "utils/loss.py build_targets clamps integer grid indices with float bounds (gj.clamp_(0, gain[3] - 1)), "
            "which this torch refuses: training stops at the first batch with \"result type Float can't be cast "
            "to the desired output type long int\". Append .long() to `gain = torch.ones(7, device=targets.device)` "
            "there, as YOLOv7 does." + _SEE
        )
    pillow = max(_dist_version("pillow"), _dist_version("Pillow"))
    if pillow >= (10, 0) and grep("utils/plots.py", r"\bfont\.getsize\("):
        notes.append(
            "utils/plots.py calls font.getsize, which Pillow 10 removed: drawing labels (train.py plots, "
            "detect.py) fails with AttributeError. Train with --noplots where the tree has it, or write "
            "font.getbbox(text)[2:] for font.getsize(text) there." + _SEE
        )
    loaders = [u for u in utils if re.search(r"torch\.load\(cache_path", u.read_text(encoding="utf-8", errors="replace"))]
    if loaders:
        notes.append(
            f"{rel(root, loaders[0])} reads its label caches (labels/*.cache beside a dataset's labels) with "
            "torch.load: a cache written by another YOLOv5/YOLOv7 version (numpy format) stops it with "
            "UnpicklingError, and torch >= 2.6 refuses its own ones too unless TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1. Delete the *.cache files of a dataset "
            "before using it with this tree."
        )
    tv = _dist_version("torch")
    forced = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "0").strip().lower() in _TORCH_TRUE
    if tv >= (2, 6) and not forced and grep("models/experimental.py", r"torch\.load\((?![^)\n]*weights_only)"):
        notes.append(
            "models/experimental.py calls torch.load without weights_only, and torch >= 2.6 loads with "
            "weights_only=True: attempt_load (detect.py, val.py, train.py --weights) fails on the tree's own "
            "checkpoints. Set TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 for trusted checkpoints."
        )
    installs = grep("utils/general.py", r"pip install") and grep("utils/general.py", r"def check_requirements\(")
    if installs:
        switch = grep("utils/general.py", r"YOLOv5_AUTOINSTALL")
        hub = grep("hubconf.py", r"check_requirements\(")
        notes.append(
            "the tree's check_requirements runs `pip install` into the running environment for every entry of "
            "its requirements.txt that is missing or older (train.py, detect.py, val.py"
            + (", and torch.hub.load through hubconf.py" if hub else "") + "); old pins such as numpy<1.24 "
            "then break pandas, opencv, scipy and matplotlib here. "
            + ("Set YOLOv5_AUTOINSTALL=False to stop it, or run such a tree in its own environment." if switch
               else "It has no switch: run such a tree in its own environment.")
        )
    if grep("utils/general.py", r"def check_font\(") or grep("utils/plots.py", r"check_font\("):
        notes.append(
            "the tree downloads Arial.ttf on first use (at import in YOLOv5 v6.0, in check_dataset later): "
            "offline, put any TrueType font at $YOLOV5_CONFIG_DIR/Arial.ttf (default ~/.config/Ultralytics/)."
        )
    if any(_SEE in n for n in notes):
        notes.append(OWN_ENVIRONMENT)
    return notes
