"""The shipped model YAMLs (top-level ``model_yamls/`` of the repository): the one finder of the package.

In a wheel the folder is ``yolo_nonlocal/model_yamls`` (force-included); in an editable (development) install
the package folder has none and the YAMLs are at the repository top level, next to the package. Its top level
holds the Ultralytics YAMLs (``yolov8-nl.yaml``, ...); ``yolov5/`` and ``yolov7/`` hold those that
``yolo-nonlocal yolov5 patch`` copies into a clone.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["model_yaml_dir", "find_model_yaml"]


def model_yaml_dir() -> Path:
    """Folder of the model YAMLs shipped with the package (raises FileNotFoundError, saying how to fix it)."""
    import yolo_nonlocal

    candidates = []
    try:
        from importlib.resources import files

        candidates.append(Path(str(files("yolo_nonlocal") / "model_yamls")))
    except Exception:  # namespace-package oddities of some editable installs
        pass
    here = Path(yolo_nonlocal.__file__).resolve().parent
    candidates += [here / "model_yamls", here.parent / "model_yamls"]
    for c in candidates:
        if c.is_dir() and any(c.glob("*.yaml")):
            return c
    raise FileNotFoundError(
        "yolo-nonlocal: the model YAML folder is missing (looked in "
        + ", ".join(str(c) for c in dict.fromkeys(candidates))
        + "); reinstall the package (pip install --force-reinstall <the yolo-nonlocal wheel or source folder>)"
    )


def find_model_yaml(name: str | Path) -> Path | None:
    """The shipped YAML for a bare file name (``yolov8-nl.yaml``), or None.

    Only bare names are looked up, and only at the top level of :func:`model_yaml_dir`.
    """
    name = str(name)
    p = Path(name)
    if p.name != name or p.suffix not in {".yaml", ".yml"}:
        return None
    try:
        candidate = model_yaml_dir() / p.name
    except FileNotFoundError:
        return None
    return candidate if candidate.is_file() else None
