"""``python -m hat.dashboard``: the panels of hat's W&B workspace, listed once.

The W&B objects (:mod:`hat.dashboard.wandb_objects`) and the local picture
(:mod:`hat.dashboard.preview`) are both made from :func:`sections`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hat.metrics import metric_name

HEADLINE = ("rsum", "i2t_r1", "t2i_r1")
TRAINING = ("train/loss", "train/lr", "train/samples_per_s", "train/data_wait_share", "train/peak_mem_gb")
EXAMPLE_TABLES = ("val/examples/image_queries", "val/examples/caption_queries")
ATTENTION = "val/examples/attention"
CURVES = ("val/recall_curve", "test/recall_curve")


@dataclass(frozen=True)
class Panel:
    """One panel showing one logged key. ``kind`` is ``line`` (a history metric against
    ``trainer/step``), ``bar`` (each run's last value, e.g. a test metric), ``chart`` (a custom chart
    logged with ``wandb.plot.line_series``), ``table`` (a logged ``wandb.Table``) or ``media`` (logged
    images, e.g. a list of ``wandb.Image``)."""

    kind: Literal["line", "bar", "chart", "table", "media"]
    key: str


@dataclass(frozen=True)
class Section:
    """A named group of panels, shown in this order."""

    name: str
    panels: tuple[Panel, ...]


def split_metrics(split: str, levels: int) -> list[str]:
    """``{split}/rsum``, ``{split}/i2t_r1``, ``{split}/t2i_r1``, then the same for each level alone
    (``{split}/level{k}/...``, k = 1 .. ``levels``), named as :func:`hat.metrics.metric_name` does."""
    return [metric_name(split, key, level=level) for level in (None, *range(1, levels + 1)) for key in HEADLINE]


def sections(levels: int = 3) -> tuple[Section, ...]:
    """The workspace, top to bottom, for runs that align ``levels`` levels."""
    return (
        Section("Validation", tuple(Panel("line", key) for key in split_metrics("val", levels))),
        Section("Test", tuple(Panel("bar", key) for key in split_metrics("test", levels))),
        Section("Recall@K curves", tuple(Panel("chart", key) for key in CURVES)),
        Section("Training", tuple(Panel("line", key) for key in TRAINING)),
        Section("Examples", (*(Panel("table", key) for key in EXAMPLE_TABLES), Panel("media", ATTENTION))),
    )
