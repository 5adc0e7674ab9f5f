"""yolo-nonlocal: Non-local blocks (Wang et al., CVPR 2018, arXiv 1711.07971) for YOLO detectors.

Importing this package is cheap: torch is imported only when a block is first used, and Ultralytics
never (its integration registers itself through an import hook when Ultralytics is imported).
"""

from __future__ import annotations

from yolo_nonlocal.utils.lazy import lazy_exports

__version__ = "0.1.0"

__all__ = ["NonLocal", "NonLocal1d", "NonLocal2d", "NonLocal3d", "NonLocalConfigError", "MODES", "ContextBlock",
           "LocalBlock", "register", "unregister", "__version__"]

# public name -> its home module, imported on first use
__getattr__, __dir__ = lazy_exports(__name__, {
    **dict.fromkeys(("NonLocal", "NonLocal1d", "NonLocal2d", "NonLocal3d", "MODES", "NonLocalConfigError"),
                    "nonlocal_block"),
    "ContextBlock": "context_block",
    "LocalBlock": "local_block",
    **dict.fromkeys(("register", "unregister"), "integrations.ultralytics.registration"),
})
