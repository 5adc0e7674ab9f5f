"""The patcher's record in a tree: ``.yolo-nonlocal/manifest.json`` and the backup beside it.

The manifest lists every file the patch wrote (``models/yolo.py``: modified, with the checksums before and
after and the path of the backup of the original; each copied YAML: created, with its checksum) and the
folders it created, so that unpatching restores every byte and removes only what is unchanged since.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from yolo_nonlocal.integrations.yolov5.tree import STATE_DIR, PatchError, rel

__all__ = ["GITIGNORE", "MANIFEST", "MANIFEST_FORMAT", "load_manifest", "manifest_bytes", "package_version", "state_dir"]

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
GITIGNORE = b"# yolo-nonlocal bookkeeping (unpatch needs it): not for git\n*\n"


def state_dir(root: Path) -> Path:
    return root / STATE_DIR


def load_manifest(root: Path) -> dict | None:
    """The tree's manifest, or None where it has none; PatchError for one that cannot be read."""
    path = state_dir(root) / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PatchError(f"{rel(root, path)} is unreadable ({e}); restore it from {STATE_DIR}/ or delete that folder "
                         "after checking models/yolo.py by hand") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT or "files" not in manifest:
        raise PatchError(f"{rel(root, path)} is not a yolo-nonlocal manifest of format {MANIFEST_FORMAT}")
    return manifest


def manifest_bytes(previous: dict | None, flavour: str, files: dict, created_dirs: list) -> bytes:
    """The manifest to write: this package's version, the first patch time, files and folders (deepest first)."""
    manifest = {
        "tool": "yolo-nonlocal",
        "format": MANIFEST_FORMAT,
        "version": package_version(),
        "flavour": flavour,
        "patched_at": (previous or {}).get("patched_at")
        or _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "files": files,
        "created_dirs": sorted(created_dirs, key=lambda d: (-d.count("/"), d)),
    }
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


def package_version() -> str:
    try:
        from yolo_nonlocal import __version__

        return __version__
    except ImportError:  # pragma: no cover
        return "unknown"
