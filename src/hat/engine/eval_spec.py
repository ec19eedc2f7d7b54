"""What one ``evaluate.py`` run does, resolved once from its config (conf/evaluate.yaml)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hat.checks import ConfigError, show, to_plain
from hat.config import validate_eval_config
from hat.data.records import SPLIT_NAMES
from hat.engine.score_file import SCORE_DTYPES
from hat.models.export import check_export_target
from hat.tracking import LOGGERS
from hat.wandb_tracker import resolve_mode

SOURCES = ("checkpoint", "checkpoints", "scores")
ONE_SOURCE = ("give exactly one of checkpoint=PATH (a model), checkpoints=[PATH,PATH] (an ensemble) "
              "or scores=PATH (scores saved with eval.save_scores=true)")


@dataclass(frozen=True)
class EvalSpec:
    """An evaluation: what is scored, on what, and where the results go.

    Exactly one source: ``checkpoints`` (one model, or the members of an ensemble, each a
    checkpoint, an export folder or a HAT release) or ``scores`` (a file written with
    ``save_scores``, evaluated again without model or dataset). ``split``: None means ``test``, or
    the split of the ``scores`` file. ``dataset``: a dataset config for every model (a release
    needs one); None: each model's stored one. ``release_model``: the ``encoder`` and ``alignment``
    config of a release. ``levels``: ``eval.levels``, 1-based positions of the trained levels to
    fuse (None: all). ``save_scores``: write the scores, as ``scores_dtype`` (float16 or
    float32), before evaluating them. ``logger``: the ``logger`` config (``backend: wandb`` opens a W&B run);
    ``overrides``: the command line's overrides, which tag that run. ``kernel``: ``eval.kernel``, the
    similarity's path (:mod:`hat.kernels.dispatch`). ``export``: a folder to write
    the model to (:func:`hat.models.export.check_export_target` says which). Combinations that
    cannot work, and an ``export`` target that cannot be written, raise a :class:`ConfigError` here.
    """

    run_dir: Path
    checkpoints: tuple[Path, ...] = ()
    scores: Path | None = None
    hardware: Any = None
    split: str | None = None
    dataset: Any = None
    batch_size: int = 128
    levels: list[int] | None = None
    save_scores: bool = False
    scores_dtype: str = "float16"
    release_model: Any = None
    export: Path | None = None
    logger: Any = None
    overrides: tuple[str, ...] = ()
    kernel: str = "auto"

    def __post_init__(self) -> None:
        if bool(self.checkpoints) == (self.scores is not None):
            raise ConfigError(ONE_SOURCE)
        if self.split is not None and self.split not in SPLIT_NAMES:
            raise ConfigError(f"split={self.split!r} is not one of {SPLIT_NAMES}")
        if self.export is not None:
            if len(self.checkpoints) != 1:
                raise ConfigError(f"export={self.export} writes one model: give it with checkpoint=PATH only")
            check_export_target(self.export)  # before the evaluation, not after it
        if self.scores is not None:
            given = [name for name, value in (("dataset", self.dataset), ("eval.save_scores", self.save_scores))
                     if value]
            if given:
                raise ConfigError(f"scores={self.scores} is evaluated from the file alone: drop {' and '.join(given)}")

    @property
    def ensemble(self) -> bool:
        return len(self.checkpoints) > 1


def eval_spec(cfg, run_dir: Path, overrides: Sequence[str] = ()) -> EvalSpec:
    """The :class:`EvalSpec` of evaluate.py's config ``cfg`` (checked here), writing to ``run_dir``;
    ``overrides`` are the command line's (Hydra's task overrides)."""
    validate_eval_config(cfg)
    given = [name for name in SOURCES if cfg.get(name) is not None]
    if len(given) != 1:
        raise ConfigError(f"{ONE_SOURCE}; got {' and '.join(given) if given else 'none of them'}")
    save_scores = cfg.eval.get("save_scores", False)
    if not isinstance(save_scores, bool):
        raise ConfigError(f"eval.save_scores={show(save_scores)} must be true or false")
    scores_dtype = cfg.eval.get("scores_dtype", "float16")
    if scores_dtype not in SCORE_DTYPES:
        raise ConfigError(f"eval.scores_dtype={show(scores_dtype)} is not one of {tuple(SCORE_DTYPES)}")
    _check_logger(cfg.get("logger"))
    return EvalSpec(
        run_dir=run_dir,
        checkpoints=_checkpoints(cfg),
        scores=Path(cfg.scores) if cfg.get("scores") is not None else None,
        hardware=cfg.hardware,
        split=cfg.get("split"),
        dataset=cfg.get("dataset"),
        batch_size=cfg.eval.batch_size,
        levels=to_plain(cfg.eval.get("levels")),
        save_scores=save_scores,
        scores_dtype=scores_dtype,
        release_model=cfg.get("release"),
        export=Path(cfg.export) if cfg.get("export") else None,
        logger=cfg.get("logger"),
        overrides=tuple(overrides),
        kernel=cfg.eval.get("kernel", "auto"),
    )


def _checkpoints(cfg) -> tuple[Path, ...]:
    """``checkpoint=PATH`` as one path, ``checkpoints=[A,B]`` as several (a non-empty list of paths)."""
    if cfg.get("checkpoint") is not None:
        return (Path(str(cfg.checkpoint)),)
    if cfg.get("checkpoints") is None:
        return ()
    paths = to_plain(cfg.checkpoints)
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
        raise ConfigError(f"checkpoints={show(paths)} must be a non-empty list of paths, e.g. checkpoints=[A.pt,B.pt]")
    return tuple(Path(p) for p in paths)


def _check_logger(settings) -> None:
    """The ``logger`` group: ``none``, or ``wandb`` with a mode W&B knows (``logger.mode``, else
    ``$WANDB_MODE``), checked before the evaluation rather than when its W&B run starts."""
    if settings is None:
        return
    if settings.backend not in LOGGERS:
        raise ConfigError(f"logger.backend={settings.backend!r} is not one of {LOGGERS} (logger=none or logger=wandb)")
    if settings.backend == "wandb":
        try:
            resolve_mode(settings.get("mode"), os.environ)
        except ValueError as error:
            raise ConfigError(str(error)) from error
