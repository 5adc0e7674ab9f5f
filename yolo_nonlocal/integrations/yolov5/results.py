"""What :func:`~yolo_nonlocal.integrations.yolov5.api.patch`, ``unpatch`` and ``status`` return."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

from yolo_nonlocal.integrations.yolov5.tree import STATE_DIR, YOLO_PY

__all__ = ["PatchResult", "TreeStatus", "UnpatchResult"]


@dataclasses.dataclass(frozen=True)
class PatchResult:
    """What :func:`patch` did (or, with ``dry_run``, would do)."""

    root: Path
    flavour: str
    changed: tuple[str, ...]  # tree-relative paths written or created (would be, for a dry run)
    kept: tuple[str, ...]  # copied YAMLs left alone because the user edited them since
    dry_run: bool
    diff: str  # unified diff (git format) of the tree's files; empty when nothing changes
    notes: tuple[str, ...] = ()  # YAMLs written as a variant for this tree, or not copied, and why

    @property
    def already_patched(self) -> bool:
        return not self.changed


@dataclasses.dataclass(frozen=True)
class UnpatchResult:
    """What :func:`unpatch` did."""

    root: Path
    restored: tuple[str, ...]  # files written back or removed
    kept: tuple[str, ...]  # edited YAMLs left in place (keep_edited=True)
    stripped: bool  # models/yolo.py had changed since the patch: marked lines removed instead of the backup
    was_patched: bool


@dataclasses.dataclass(frozen=True)
class TreeStatus:
    """Whether and how a tree is patched; ``str()`` is the report ``yolo-nonlocal yolov5 status`` prints."""

    root: Path
    flavour: str
    yolo_py: str  # "stock ...", "patched ..." (unchanged since, edited since, or without a backup)
    yamls: dict[str, str]  # tree path -> "absent", "copied, unchanged", "copied, edited since", ...
    manifest: dict | None
    hazards: tuple[str, ...]

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
            lines.append("not patched: run `yolo-nonlocal yolov5 patch path=PATH`")
        lines.append(f"  {YOLO_PY}: {self.yolo_py}")
        for path, state in self.yamls.items():
            lines.append(f"  {path}: {state}")
        try:
            found = importlib.util.find_spec("yolo_nonlocal.nonlocal_block") is not None
        except ImportError:  # pragma: no cover
            found = False
        lines.append(f"NonLocal importable by this Python ({sys.executable}): {'yes' if found else 'no'}")
        for h in self.hazards:
            lines.append(f"note: {h}")
        return "\n".join(lines)
