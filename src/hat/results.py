"""The recall table printed at the end of a run, and ``results.json``."""

from __future__ import annotations

import json
from pathlib import Path

from hat.atomic import atomic_write
from hat.metrics import RECALL_KEYS as COLUMNS
from hat.metrics import metric_name


def format_table(
    metrics: dict[str, float], split: str, num_levels: int, protocol: str | None = None, fused_levels=None
) -> str:
    """A Markdown table: one row per level alone, then the fused score (of ``fused_levels``, 1-based,
    when only some levels are fused)."""
    fused = "fused" if not fused_levels else "fused " + "+".join(f"level{k}" for k in fused_levels)
    rows = [(f"level{k}", k) for k in range(1, num_levels + 1)] + [(fused, None)]
    lines = [
        "| " + " | ".join(("scores", *COLUMNS)) + " |",
        "|" + "---|" * (len(COLUMNS) + 1),
    ]
    for label, level in rows:
        values = [metrics[metric_name(split, key, protocol, level)] for key in COLUMNS]
        lines.append("| " + " | ".join([label, *(f"{v:.2f}" for v in values)]) + " |")
    return "\n".join(lines)


def format_tables(metrics: dict[str, float], split: str, num_levels: int, protocols, fused_levels=None) -> str:
    """:func:`format_table` for each protocol in ``protocols`` (a ``{name: folds}`` mapping or None)."""
    if not protocols:
        return format_table(metrics, split, num_levels, None, fused_levels)
    return "\n\n".join(
        f"{name}:\n" + format_table(metrics, split, num_levels, name, fused_levels) for name in protocols
    )


def write_results(path: Path, metrics: dict[str, float], **extra) -> None:
    """Write ``{"metrics": {flat names: values}, **extra}`` as JSON, atomically."""
    text = json.dumps({"metrics": metrics, **extra}, indent=2, default=str)
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))
