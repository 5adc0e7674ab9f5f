"""The errors of the metrics package: one base class, so callers catch every bad input with one ``except``."""

from __future__ import annotations

__all__ = ["CocoEvalError", "DataConfigError"]


class CocoEvalError(ValueError):
    """Bad input to the COCO evaluation: the message names the first offending entry and how to fix it."""


class DataConfigError(CocoEvalError):
    """A data YAML (or its dict) that cannot be resolved: missing file, bad YAML, bad ``names``, missing split.

    A :class:`CocoEvalError` (so the evaluation's callers catch it as before) and a ``ValueError``.
    """
