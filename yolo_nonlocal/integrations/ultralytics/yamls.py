"""The shipped model YAMLs: where they are, and how Ultralytics finds them by bare name from any folder.

``model_yaml_dir()`` is the one finder of the package's ``model_yamls`` folder: in a wheel it is
``yolo_nonlocal/model_yamls`` (force-included); in an editable (development) install the package folder has
none and the YAMLs are at the repository top level, next to the package. Only its top level holds
Ultralytics YAMLs; its subfolders hold the YOLOv5/YOLOv7 YAMLs of ``yolo-nonlocal yolov5 patch``.

:func:`patch` wraps ``check_yaml`` in ``ultralytics.nn.tasks`` (which ``yaml_model_load`` calls): Ultralytics'
own lookup (with the scale letter stripped) is tried first, then the top level of :func:`model_yaml_dir`.
"""

from __future__ import annotations

from pathlib import Path

from yolo_nonlocal.integrations import import_hooks

__all__ = ["model_yaml_dir", "find_model_yaml", "patch", "unpatch", "KEY"]

KEY = "yolo_nonlocal.yamls.check_yaml"


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


def _make_check_yaml(orig):
    def check_yaml(file, suffix=(".yaml", ".yml"), hard=True, *a, **kw):
        found = orig(file, suffix, False, *a, **kw)
        if found:
            return found
        ours = find_model_yaml(file)
        if ours is not None:
            return str(ours)
        return orig(file, suffix, hard, *a, **kw)

    return check_yaml


def patch(tasks) -> None:
    """Wrap ``tasks.check_yaml`` (idempotent; re-applied after a reload)."""
    import_hooks.wrap(tasks, "check_yaml", _make_check_yaml, key=KEY)


def unpatch(tasks) -> None:
    import_hooks.unwrap(tasks, "check_yaml", key=KEY)
