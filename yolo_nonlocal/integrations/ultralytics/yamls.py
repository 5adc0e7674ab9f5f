"""The shipped model YAMLs: where they are, and how Ultralytics finds them by bare name from any folder.

The folder itself is found by :mod:`yolo_nonlocal.utils.model_yamls` (the one finder, shared with the YOLOv5
patcher); only its top level holds Ultralytics YAMLs.

:func:`patch` wraps ``check_yaml`` in ``ultralytics.nn.tasks`` (which ``yaml_model_load`` calls): Ultralytics'
own lookup (with the scale letter stripped) is tried first, then the top level of :func:`model_yaml_dir`.
"""

from __future__ import annotations

from yolo_nonlocal.integrations import import_hooks
from yolo_nonlocal.utils.model_yamls import find_model_yaml, model_yaml_dir

__all__ = ["model_yaml_dir", "find_model_yaml", "patch", "unpatch", "KEY"]

KEY = "yolo_nonlocal.yamls.check_yaml"


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
