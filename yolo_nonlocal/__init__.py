"""yolo-nonlocal: Non-local blocks (Wang et al., CVPR 2018, arXiv 1711.07971) for YOLO detectors.

Importing this package is cheap: torch is imported only when a block is first used, and Ultralytics
never (its integration registers itself through an import hook when Ultralytics is imported).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["NonLocal", "NonLocal1d", "NonLocal2d", "NonLocal3d", "NonLocalConfigError", "MODES", "ContextBlock",
           "LocalBlock", "register", "unregister", "__version__"]

_LAZY = {
    "NonLocal": "yolo_nonlocal.nonlocal_block",
    "NonLocal1d": "yolo_nonlocal.nonlocal_block",
    "NonLocal2d": "yolo_nonlocal.nonlocal_block",
    "NonLocal3d": "yolo_nonlocal.nonlocal_block",
    "MODES": "yolo_nonlocal.nonlocal_block",
    "NonLocalConfigError": "yolo_nonlocal.nonlocal_block",
    "ContextBlock": "yolo_nonlocal.context_block",
    "LocalBlock": "yolo_nonlocal.local_block",
    "register": "yolo_nonlocal.integrations.ultralytics.registration",
    "unregister": "yolo_nonlocal.integrations.ultralytics.registration",
}


def __getattr__(name: str):
    """Resolve the public names lazily, so that `import yolo_nonlocal` imports neither torch nor ultralytics."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'yolo_nonlocal' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
