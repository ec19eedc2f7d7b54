"""Score a split with a model, print its recall table and write ``results.json``: the last act of
both a training (its best checkpoint on the test split, returned as a :class:`TrainOutcome`) and
``evaluate.py``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from hat.engine.evaluation import protocol_tables
from hat.results import format_tables, write_results


@dataclass
class TrainOutcome:
    """What a finished training returns: the test metrics of the best checkpoint (flat names,
    e.g. ``test/rsum``) and the validation monitor that picked it (what a sweeper should tune on)."""

    test: dict[str, float]
    best_monitor: float | None
    best_epoch: int | None


def report_scores(
    sims: list[torch.Tensor],
    split: str,
    captions_per_image: int,
    protocols: dict[str, int] | None,
    title: str,
    results: Path | None,
    fused_levels: Sequence[int] | None = None,
    extra: dict | None = None,
    row: str = "level",
) -> tuple[dict[str, float], str]:
    """The metrics of per-level scores ``sims`` of ``split`` (each of ``protocols``, fusing
    ``fused_levels``) and their table; prints ``title`` and the table and writes ``results`` (with
    the fields of ``extra``) when it is given (process 0 of a group gives it, the others pass None).
    ``row="model"``: ``sims`` are an ensemble's members' fused scores (see :func:`recall_table`)."""
    metrics = protocol_tables(sims, split, captions_per_image, protocols, fused_levels, row)
    table = format_tables(metrics, split, len(sims), protocols, fused_levels, row)
    if results is not None:
        print(f"\n{title}:\n{table}")
        write_results(results, metrics, **(extra or {}))
    return metrics, table
