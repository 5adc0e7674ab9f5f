"""Lazy public names for a package ``__init__``: each loads its home module on first use (PEP 562)."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(package: str, homes: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose public ``name`` lives in ``package + "." + homes[name]``.

    Usage in ``__init__.py``: ``__getattr__, __dir__ = lazy_exports(__name__, {"evaluate": "coco"})``. A resolved
    name is cached in the package's namespace, so the import runs once.
    """
    homes = dict(homes)

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(f"{package}.{home}" if home else package)
        value = getattr(module, name)
        import sys

        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        import sys

        return sorted(set(vars(sys.modules[package])) | set(homes))

    return __getattr__, __dir__
