"""An evaluation's W&B run (``python evaluate.py ... logger=wandb``), beside the training runs.

The run has job type ``eval``, lives in ``logger.project`` (``hat``, as training runs do) and
``logger.group`` (give the group of a sweep to see the evaluation in ``python -m hat.report
--wandb GROUP``), and is tagged ``eval`` plus the command line's overrides: the report makes
those its columns, so the run is a row named by its ``checkpoint=PATH``. Its summary holds the
flat metrics (``test/rsum`` ...), its history the table, its files ``results.json``.
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import OmegaConf

from hat.engine.eval_spec import EvalSpec
from hat.results import TABLE_COLUMNS

PATH_OVERRIDES = ("checkpoint", "checkpoints", "scores")  # tags that keep the end of their value


def evaluation_tags(overrides: Sequence[str]) -> list[str]:
    """``eval`` and the command line's ``overrides`` as W&B tags, the logger's own settings left
    out (they say where the run goes, not what it measured); a path keeps its end when cut."""
    from hat.wandb_tracker import override_tags

    measured = [item for item in overrides if not item.lstrip("+~").startswith("logger")]
    return ["eval", *override_tags(measured, keep_end=PATH_OVERRIDES)]


def track_evaluation(
    spec: EvalSpec, name: str, config: dict, metrics: dict[str, float], split: str, rows: list[list]
) -> None:
    """With ``logger=wandb`` in ``spec``, one W&B run named ``name`` (unless ``logger.name`` is set)
    with ``config``, ``metrics`` as its summary, ``rows`` (:data:`hat.results.TABLE_COLUMNS`) as the
    table ``{split}/table`` and ``results.json`` of ``spec.run_dir``; nothing for ``logger=none``.
    A W&B failure is a warning, never an error (:class:`hat.wandb_tracker.WandbTracker`)."""
    settings = spec.logger
    if settings is None or settings.backend != "wandb":
        return
    from hat.wandb_tracker import WandbTracker  # wandb is slow to import: only when used

    labelled = OmegaConf.merge(settings, {
        "tags": [*settings.get("tags", []), *evaluation_tags(spec.overrides)],
        "name": settings.get("name") or name,
    })
    tracker = WandbTracker(labelled, spec.run_dir, config, job_type="eval")
    try:
        tracker.log_summary(metrics)
        tracker.log_table(f"{split}/table", TABLE_COLUMNS, rows)
        tracker.log_file(spec.run_dir / "results.json")
    finally:
        tracker.finish()
