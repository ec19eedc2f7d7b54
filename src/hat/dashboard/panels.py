"""``python -m hat.dashboard``: the panels of hat's W&B workspace, listed once.

The W&B objects (:mod:`hat.dashboard.wandb_objects`), the local picture
(:mod:`hat.dashboard.preview`) and the check of which panels a run fills
(:mod:`hat.dashboard.coverage`) are all made from :func:`sections`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hat.metrics import metric_name

HEADLINE = ("rsum", "i2t_r1", "t2i_r1")
EXAMPLE_TABLES = ("val/examples/image_queries", "val/examples/caption_queries")
ATTENTION = "val/examples/attention"
CURVES = ("val/recall_curve", "test/recall_curve")
WILDCARD = "/*"  # a key ending in it stands for every key logged below that prefix


@dataclass(frozen=True)
class Panel:
    """One panel. ``kind`` is ``line`` (history metrics against ``trainer/step``), ``bar`` (each
    run's last value, e.g. a test metric), ``chart`` (a custom chart logged with
    ``wandb.plot.line_series``), ``table`` (a logged ``wandb.Table``) or ``media`` (logged images,
    e.g. a list of ``wandb.Image``). ``keys``: the logged keys it shows, one line or bar each; a
    key ending in ``/*`` stands for every key logged below that prefix (``train/lr/*``: one line
    per parameter group). ``title``: its name (default: its one key). ``only``: the runs that log
    it, for a panel that not every training fills (``"GPU runs"``); None when every one does."""

    kind: Literal["line", "bar", "chart", "table", "media"]
    keys: tuple[str, ...]
    title: str = ""
    only: str | None = None

    @property
    def name(self) -> str:
        return self.title or self.keys[0]


@dataclass(frozen=True)
class Section:
    """A named group of panels, shown in this order."""

    name: str
    panels: tuple[Panel, ...]


def split_metrics(split: str, levels: int) -> list[str]:
    """``{split}/rsum``, ``{split}/i2t_r1``, ``{split}/t2i_r1``, then the same for each level alone
    (``{split}/level{k}/...``, k = 1 .. ``levels``), named as :func:`hat.metrics.metric_name` does."""
    return [metric_name(split, key, level=level) for level in (None, *range(1, levels + 1)) for key in HEADLINE]


def level_comparison(split: str, kind: Literal["line", "bar"], levels: int) -> Panel:
    """One panel of ``{split}/level{k}/rsum`` for every level and the fused ``{split}/rsum``."""
    keys = (*(metric_name(split, "rsum", level=level) for level in range(1, levels + 1)), metric_name(split, "rsum"))
    return Panel(kind, keys, f"{split}/rsum per level and fused")


def training_panels() -> tuple[Panel, ...]:
    """The ``train/*`` signals logged every ``train.log_every`` steps."""
    def line(key: str, title: str = "", only: str | None = None) -> Panel:
        return Panel("line", (key,), title, only)

    return (
        line("train/loss"),
        line("train/lr"),
        line("train/lr/*", "train/lr per parameter group"),
        line("train/grad_norm", "train/grad_norm (before clipping)"),
        line("train/clipped_share", "train/clipped_share (over grad_clip)"),
        line("train/temperature", only="learnable-temperature InfoNCE runs"),
        line("train/samples_per_s"),
        line("train/data_wait_share"),
        line("train/peak_mem_gb", only="GPU runs"),
    )


def sections(levels: int = 3) -> tuple[Section, ...]:
    """The workspace, top to bottom, for runs that align ``levels`` levels."""
    def single(kind, keys) -> tuple[Panel, ...]:
        return tuple(Panel(kind, (key,)) for key in keys)

    return (
        Section("Validation", (level_comparison("val", "line", levels), *single("line", split_metrics("val", levels)))),
        Section("Test", (level_comparison("test", "bar", levels), *single("bar", split_metrics("test", levels)))),
        Section("Recall@K curves", single("chart", CURVES)),
        Section("Training", training_panels()),
        Section("Examples", (*single("table", EXAMPLE_TABLES), Panel("media", (ATTENTION,)))),
    )
