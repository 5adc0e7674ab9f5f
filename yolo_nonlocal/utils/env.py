"""Boolean strings and environment switches: one set of truthy / falsy words for the whole package."""

from __future__ import annotations

import os

__all__ = ["TRUE_STRINGS", "FALSE_STRINGS", "parse_bool", "env_flag"]

TRUE_STRINGS = frozenset({"1", "true", "yes", "on", "y", "t"})
FALSE_STRINGS = frozenset({"0", "false", "no", "off", "n", "f"})


def parse_bool(value: object) -> bool:
    """``True``/``False`` from a bool or a string such as ``"True"``, ``"1"``, ``"off"``; ValueError otherwise."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_STRINGS:
        return True
    if text in FALSE_STRINGS:
        return False
    raise ValueError(f"{value!r} is not a boolean; use True or False")


def env_flag(name: str, default: bool = False) -> bool:
    """The boolean environment variable ``name``; unset, empty or unreadable gives ``default``."""
    text = os.environ.get(name, "").strip().lower()
    if text in TRUE_STRINGS:
        return True
    if text in FALSE_STRINGS:
        return False
    return default
