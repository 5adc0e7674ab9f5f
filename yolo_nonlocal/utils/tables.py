"""Plain-text tables for the console: one formatter for every command that prints rows of numbers."""

from __future__ import annotations

from typing import Any, Sequence

__all__ = ["format_table", "percent"]


def percent(value: float | None, std: float | None = None, digits: int = 1) -> str:
    """A fraction as a percentage (``0.123`` -> ``12.3``), with ``± std`` when given; ``-`` for None or negative."""
    if value is None or value < 0:
        return "-"
    text = f"{100 * value:.{digits}f}"
    return text if std is None else f"{text} ± {100 * std:.{digits}f}"


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "", align: str = "", markdown: bool = False
) -> str:
    """Columns padded to their widest cell; ``align`` has one ``<`` or ``>`` a column (default: first left, rest right).

    ``markdown=True`` writes the same table as Markdown (``| a | b |`` rows under a ``|---|--:|`` rule, the
    alignment in the rule), to paste into a report; ``None`` cells are ``-`` in both forms.
    """
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    n = len(headers)
    if any(len(r) != n for r in cells):
        raise ValueError(f"every row needs {n} cells (one a header)")
    align = align or ("<" + ">" * (n - 1))
    if len(align) != n or set(align) - {"<", ">"}:
        raise ValueError(f"align={align!r} needs one '<' or '>' for each of the {n} columns")
    widths = [max(len(r[i]) for r in cells) for i in range(n)]
    if markdown:
        rule = "|" + "|".join("---:" if a == ">" else "---" for a in align) + "|"
        lines = ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in cells]
        lines.insert(1, rule)
    else:
        lines = ["  ".join(f"{r[i]:{align[i]}{widths[i]}}" for i in range(n)).rstrip() for r in cells]
    return "\n".join(([title, ""] if title and markdown else [title] if title else []) + lines)
