"""The one data-YAML reader of the package: data YAML -> class names, dataset root, split image files -> label files.

A data YAML is read as Ultralytics reads it, so every tool of the package (the COCO evaluation, ``compare``,
the synthetic sets' ``train_args``) sees the dataset Ultralytics trains on:

- ``path``: the dataset root; relative to the working directory, else to the YAML's folder; the YAML's folder
  when absent;
- ``train`` / ``val`` / ``test`` (and ``validation``, ``minival``): each a directory of images, a ``.txt``
  list of image paths (``./`` entries relative to the list's folder), or a list of both;
- ``names`` as a list or a ``{index: name}`` dict, or ``nc`` alone;
- ``kpt_shape`` (pose datasets: how many values follow a box), ``train_args`` (yolo-nonlocal's own key:
  Ultralytics train arguments the dataset asks for, such as ``mosaic: 0``).

A label file is found by Ultralytics' rule: the last ``/images/`` of an image path becomes ``/labels/`` and
the suffix ``.txt``.

Bad input raises :class:`~yolo_nonlocal.metrics.errors.DataConfigError` (a ``ValueError``) saying what is
wrong and how to fix it. Nothing here imports numpy, torch or Ultralytics.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from yolo_nonlocal.metrics.errors import DataConfigError
from yolo_nonlocal.utils.images import IMAGE_SUFFIXES, is_image

__all__ = ["DataConfigError", "load_data_config", "split_image_files", "label_file_for", "has_images_folder", "SPLITS"]

#: The split keys a data YAML may define, in the order they are listed in errors.
SPLITS: tuple[str, ...] = ("train", "val", "validation", "test", "minival")


def _read_yaml(yaml_file: Path) -> dict[str, Any]:
    if not yaml_file.is_file():
        raise DataConfigError(f"data YAML {str(yaml_file)!r} does not exist; pass data=path/to/data.yaml")
    import yaml

    try:
        cfg = yaml.safe_load(yaml_file.read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as e:
        raise DataConfigError(f"data YAML {str(yaml_file)!r} is not valid YAML: {e}") from None
    if not isinstance(cfg, dict):
        raise DataConfigError(f"data YAML {str(yaml_file)!r} must hold a mapping (path, train, val, names), "
                              f"not {type(cfg).__name__}")
    return cfg


def _names(cfg: Mapping[str, Any], where: str) -> list[str]:
    """The class names, index = class, from ``names`` (list or dict) or ``nc``; checked against ``nc``."""
    names = cfg.get("names")
    if names is None:
        nc = cfg.get("nc")
        if not isinstance(nc, int) or isinstance(nc, bool) or nc < 1:
            raise DataConfigError(f"{where} needs 'names' (a list or a dict) or a positive integer 'nc'")
        return [f"class_{i}" for i in range(nc)]
    if isinstance(names, Mapping):
        try:
            by_index = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise DataConfigError(f"{where}: 'names' keys must be class indices 0..n-1, "
                                  f"got {list(names)[:5]}") from None
        if sorted(by_index) != list(range(len(by_index))):
            raise DataConfigError(f"{where}: 'names' keys must be the class indices 0..{len(by_index) - 1} without "
                                  f"gaps, got {sorted(by_index)[:10]}")
        names = [by_index[i] for i in range(len(by_index))]
    elif isinstance(names, (list, tuple)):
        names = [str(n) for n in names]
    else:
        raise DataConfigError(f"{where}: 'names' must be a list or a dict, not {type(names).__name__}")
    if not names:
        raise DataConfigError(f"{where}: 'names' is empty; a detection dataset needs at least one class")
    try:
        nc_matches = cfg.get("nc") is None or float(cfg["nc"]) == len(names)
    except (TypeError, ValueError):
        nc_matches = False
    if not nc_matches:
        raise DataConfigError(f"{where}: 'nc: {cfg['nc']}' does not match the {len(names)} entries of 'names'")
    return names


def _root(cfg: Mapping[str, Any], base: Path, where: str) -> Path:
    """The dataset root: ``path`` relative to the working directory, else to the YAML's folder; the folder itself."""
    entry = cfg.get("path")
    if not (isinstance(entry, Path) or entry):
        return base
    root = Path(entry).expanduser()
    if root.is_absolute():
        return root
    found = next((c for c in (Path.cwd() / root, base / root) if c.exists()), None)
    if found is None:
        raise DataConfigError(f"{where}: dataset root 'path: {entry}' exists neither relative to the working "
                              f"directory nor to the YAML ({base}); write an absolute path")
    return found


def load_data_config(data: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """Read a data YAML (or take its dict) and resolve it as Ultralytics does.

    Returns a dict with ``root`` (Path), ``names`` (list[str], index = class), ``nc``, ``kpt_shape`` (a tuple,
    or None), ``train_args`` (a dict, empty when the YAML has none), ``yaml`` (the file, or None) and every other
    entry (``train``, ``val``, ``test``, ...) untouched. A dict may name its file in ``yaml_file`` (as
    Ultralytics' ``check_det_dataset`` returns it), which relative ``path`` entries are then read against.
    """
    yaml_file: Path | None = None
    if isinstance(data, Mapping):
        cfg = dict(data)
        if cfg.get("yaml_file"):
            yaml_file = Path(cfg["yaml_file"])
    elif isinstance(data, (str, os.PathLike)):
        yaml_file = Path(data).expanduser()
        cfg = _read_yaml(yaml_file)
    else:
        raise DataConfigError(f"data must be a data YAML path or a dict, not {type(data).__name__}")

    where = f"data YAML {str(yaml_file)!r}" if yaml_file else "data dict"
    names = _names(cfg, where)
    root = _root(cfg, yaml_file.parent if yaml_file else Path.cwd(), where)
    train_args = cfg.get("train_args") or {}
    if not isinstance(train_args, Mapping):
        raise DataConfigError(f"{where}: 'train_args' must be a mapping of Ultralytics train arguments "
                              f"(for example 'train_args: {{mosaic: 0}}'), not {type(train_args).__name__}")
    kpt_shape = cfg.get("kpt_shape")
    out = {k: v for k, v in cfg.items() if k not in {"names", "path"}}
    out.update(root=Path(root), names=names, nc=len(names), kpt_shape=tuple(kpt_shape) if kpt_shape else None,
               train_args=dict(train_args), yaml=yaml_file)
    return out


def split_image_files(cfg: Mapping[str, Any], split: str = "val") -> list[str]:
    """The sorted absolute image files of a split of a :func:`load_data_config` result, as Ultralytics resolves them.

    Directories are searched recursively; ``.txt`` lists give one image path a line; a list may mix both.
    ``split="val"`` falls back to ``validation`` when only that is defined.
    """
    if not isinstance(split, str) or not split:
        raise DataConfigError(f"split must be a split name such as 'val', not {split!r}")
    if split == "val" and not cfg.get("val") and cfg.get("validation"):
        split = "validation"
    entry = cfg.get(split)
    if not entry:
        known = [k for k in SPLITS if cfg.get(k)]
        where = f"data YAML {str(cfg['yaml'])!r}" if cfg.get("yaml") else "the data dict"
        raise DataConfigError(f"{where} has no {split!r} split; it defines: {', '.join(known) or 'none'}. "
                              f"Pass split=<one of those>")
    root = Path(cfg["root"])
    entries = entry if isinstance(entry, (list, tuple)) else [entry]
    files: list[str] = []
    for item in entries:
        p = Path(item)
        if not p.is_absolute():
            p = (root / item).resolve()
            if not p.exists() and str(item).startswith("../"):
                p = (root / str(item)[3:]).resolve()
        if p.is_dir():
            files += [str(f) for f in p.rglob("*.*") if f.is_file()]
        elif p.is_file():
            parent = str(p.parent) + os.sep
            lines = p.read_text(encoding="utf-8-sig").strip().splitlines()
            for line in (x.strip() for x in lines):
                if line:
                    files.append(line.replace("./", parent, 1) if line.startswith("./") else line)
        else:
            raise DataConfigError(f"split {split!r}: {str(item)!r} resolves to {str(p)!r}, which does not exist")
    images = sorted(os.path.abspath(f) for f in files if is_image(f))
    if not images:
        raise DataConfigError(f"split {split!r} ({entries}) holds no images (suffixes: {', '.join(IMAGE_SUFFIXES)})")
    return images


def label_file_for(image_file: str | os.PathLike) -> str:
    """The YOLO label file of an image: the last ``/images/`` becomes ``/labels/`` and the suffix ``.txt``.

    An image path without an ``/images/`` folder keeps its folder (``/a/x.jpg`` -> ``/a/x.txt``), as Ultralytics'
    rule gives; :func:`has_images_folder` tells the two apart. Pass absolute paths (the rule reads the string).
    """
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return sb.join(os.fspath(image_file).rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt"


def has_images_folder(path: str | os.PathLike) -> bool:
    """Whether an image (or a folder of images) lies in an ``images`` folder, which :func:`label_file_for` needs."""
    return "images" in Path(path).absolute().parts
