"""Lazy public names for a package ``__init__``: each loads its home module on first use (PEP 562).

Imported at interpreter start-up (the package's ``.pth`` hook imports ``yolo_nonlocal``), so it imports
nothing but ``importlib`` and ``sys``, both loaded by then.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["lazy_exports"]


def lazy_exports(package: str, homes: dict[str, str]) -> tuple:
    """``(__getattr__, __dir__)`` for ``package`` whose public ``name`` lives in ``package + "." + homes[name]``.

    Usage in ``__init__.py``: ``__getattr__, __dir__ = lazy_exports(__name__, {"evaluate": "coco"})``. A resolved
    name is cached in the package's namespace, so the import runs once.
    """
    homes = dict(homes)

    def __getattr__(name: str) -> object:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(f"{package}.{home}" if home else package)
        value = getattr(module, name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(homes))

    return __getattr__, __dir__
