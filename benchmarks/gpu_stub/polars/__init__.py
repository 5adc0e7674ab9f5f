"""A stand-in for polars on the lent GPU machine, whose image has no polars (its runtime is too large to carry).

Ultralytics' trainer imports polars only to read results.csv back (``BaseTrainer.read_results_csv``:
``pl.read_csv(bytes, infer_schema_length=None).to_dict(as_series=False)``); this module answers exactly
that call with the standard library. It is put on PYTHONPATH by benchmarks/gpu_evidence.sh only, never
installed: everywhere else the real polars (an Ultralytics dependency) is used.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

__version__ = "0.0-stand-in"


class DataFrame:
    def __init__(self, columns: dict[str, list]):
        self._columns = columns

    def to_dict(self, as_series: bool = True) -> dict[str, list]:
        return {k: list(v) for k, v in self._columns.items()}


_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _column(values: list[str]) -> list:
    """Typed as polars infers a column: all integers -> int, all numbers -> float, else the strings."""
    if values and all(_INT.match(v) for v in values):
        return [int(v) for v in values]
    if values and all(_FLOAT.match(v) for v in values):
        return [float(v) for v in values]
    return values


def read_csv(source, infer_schema_length=None, **_kwargs) -> DataFrame:
    if isinstance(source, (bytes, bytearray)):
        text = bytes(source).decode()
    else:
        text = Path(source).read_text()
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return DataFrame({})
    header = rows[0]
    return DataFrame({h: _column([row[i] for row in rows[1:] if i < len(row)]) for i, h in enumerate(header)})
