"""The recall table printed at the end of a run, and ``results.json``."""

from __future__ import annotations

import json
from pathlib import Path

from hat.atomic import atomic_write
from hat.metrics import RECALL_KEYS as COLUMNS
from hat.metrics import metric_name

TABLE_COLUMNS = ("protocol", "scores", *COLUMNS)


def table_rows(
    metrics: dict[str, float], split: str, count: int, protocol: str | None = None, fused_levels=None,
    row: str = "level",
) -> list[list]:
    """``[label, *values of COLUMNS]`` per row of a table: ``{row}1 .. {row}{count}`` alone (one
    model's levels, or with ``row="model"`` an ensemble's members), then the fused score (of
    ``fused_levels``, 1-based, when only some levels are fused; ``ensemble`` for members)."""
    if row == "model":
        fused = "ensemble"
    else:
        fused = "fused" if not fused_levels else "fused " + "+".join(f"level{k}" for k in fused_levels)
    rows = [(f"{row}{k}", k) for k in range(1, count + 1)] + [(fused, None)]
    return [[label, *(metrics[metric_name(split, key, protocol, number, row)] for key in COLUMNS)]
            for label, number in rows]


def protocol_table_rows(
    metrics: dict[str, float], split: str, count: int, protocols, fused_levels=None, row: str = "level"
) -> list[list]:
    """:func:`table_rows` of each protocol in ``protocols`` (a ``{name: folds}`` mapping or None), each
    row led by the protocol's name ("" without protocols): the columns of :data:`TABLE_COLUMNS`."""
    return [[name or "", *values] for name in (protocols or [None])
            for values in table_rows(metrics, split, count, name, fused_levels, row)]


def format_table(
    metrics: dict[str, float], split: str, count: int, protocol: str | None = None, fused_levels=None,
    row: str = "level",
) -> str:
    """:func:`table_rows` as a Markdown table."""
    lines = [
        "| " + " | ".join(("scores", *COLUMNS)) + " |",
        "|" + "---|" * (len(COLUMNS) + 1),
    ]
    for label, *values in table_rows(metrics, split, count, protocol, fused_levels, row):
        lines.append("| " + " | ".join([label, *(f"{v:.2f}" for v in values)]) + " |")
    return "\n".join(lines)


def format_tables(metrics: dict[str, float], split: str, count: int, protocols, fused_levels=None,
                  row: str = "level") -> str:
    """:func:`format_table` for each protocol in ``protocols`` (a ``{name: folds}`` mapping or None)."""
    if not protocols:
        return format_table(metrics, split, count, None, fused_levels, row)
    return "\n\n".join(
        f"{name}:\n" + format_table(metrics, split, count, name, fused_levels, row) for name in protocols
    )


def write_results(path: Path, metrics: dict[str, float], **extra) -> None:
    """Write ``{"metrics": {flat names: values}, **extra}`` as JSON, atomically."""
    text = json.dumps({"metrics": metrics, **extra}, indent=2, default=str)
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))
