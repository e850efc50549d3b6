"""Rows of numbers as text: an aligned table, CSV, JSON or Markdown.

Example:
    >>> print(format_rows([{"epoch": 0, "conv": 0.25, "aIQ": None}], "table"))
    epoch    conv  aIQ
        0  0.2500    -
"""

from __future__ import annotations

import csv
import io
import json

__all__ = ["FORMATS", "format_rows", "same_columns"]

FORMATS = ("table", "csv", "json", "markdown")
"""The formats :func:`format_rows` writes."""


def format_rows(rows: list[dict], fmt: str) -> str:
    """Render rows (dicts with the same keys) as table, csv, json or markdown.

    In ``table`` and ``markdown`` floats show 4 decimals, None shows ``-``
    and booleans ``yes``/``no``; ``csv`` and ``json`` keep the values as they are.

    Args:
        rows: dicts with the same keys, in the same order (the columns; see
            :func:`same_columns`).
        fmt: ``"table"`` (right-aligned columns), ``"csv"``, ``"json"`` or
            ``"markdown"``.

    Returns:
        The text, without a trailing newline.

    Example:
        >>> print(format_rows([{"epoch": 0, "aIQ": 0.51234}], "markdown"))
        | epoch | aIQ |
        |---|---|
        | 0 | 0.5123 |
        >>> print(format_rows([{"epoch": 0, "aIQ": 0.51234}, {"epoch": 1, "aIQ": None}], "csv"))
        epoch,aIQ
        0,0.51234
        1,
    """
    if fmt == "json":
        return json.dumps(rows, indent=2)
    columns = list(rows[0]) if rows else []
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue().rstrip("\n")
    cells = [[_cell(row[column]) for column in columns] for row in rows]
    if fmt == "markdown":
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        return "\n".join(lines + ["| " + " | ".join(line) + " |" for line in cells])
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(line, widths)) for line in cells]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def same_columns(rows: list[dict]) -> list[dict]:
    """The rows with every column any of them has, in the order first seen
    (None where a row lacks one): rows of runs with different probes, in one table.

    Example:
        >>> same_columns([{"run": "a", "conv": 0.5}, {"run": "b", "dense": 0.25}])
        [{'run': 'a', 'conv': 0.5, 'dense': None}, {'run': 'b', 'conv': None, 'dense': 0.25}]
    """
    columns = list(dict.fromkeys(column for row in rows for column in row))
    return [{column: row.get(column) for column in columns} for row in rows]
