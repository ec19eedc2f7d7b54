"""Where a resumed run continues from, and what it carries over or cannot change.

A resumed run takes its model, optimizer, schedule, counters and random state from the
checkpoint. Settings that those states fix (the learning rate and schedule live in the
optimizer's and scheduler's state) are not applied when they differ on the command line: the
run says so with a warning, naming each one, instead of keeping the old value silently.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from hat.atomic import atomic_write
from hat.checks import ConfigError
from hat.engine.checkpoint import TrainingState, load_checkpoint, restore_rng_state
from hat.engine.distributed import gather_objects
from hat.engine.resume_checks import data_differences, model_differences, model_settings

log = logging.getLogger(__name__)

# Settings a resumed run takes from the checkpoint's state whatever the config says.
KEPT_FROM_CHECKPOINT = {
    "optim.lr": "the optimizer's state holds the learning rate",
    "optim.weight_decay": "the optimizer's state holds the weight decay",
    "optim.name": "the optimizer's state belongs to the checkpoint's optimizer",
    "optim.schedule": "the scheduler's state holds the schedule",
    "optim.step_size": "the scheduler's state holds its step size",
    "optim.gamma": "the scheduler's state holds its decay factor",
    "optim.min_lr_ratio": "the scheduler's state holds the cosine's final rate",
    "optim.warmup_steps": "the scheduler's state holds the warmup",
    "optim.warmup_epochs": "the scheduler's state holds the warmup",
    "optim.backbone_lr_scale": "the optimizer's parameter groups hold the backbones' rates",
    "optim.layer_decay": "the optimizer's parameter groups hold the backbones' rates",
    "seed": "the random state is restored from the checkpoint",
}


def resume_path(resume, checkpoints: Path) -> Path | None:
    """``auto``: ``<run dir>/checkpoints/last.pt`` when it exists; a path: that file; null: none."""
    if resume is None:
        return None
    if resume == "auto":
        last = checkpoints / "last.pt"
        if last.is_file():
            return last
        log.info("resume=auto: no checkpoint at %s, starting fresh", last)
        return None
    return Path(str(resume))


def settings_not_applied(saved: dict, current: dict) -> list[str]:
    """One line per setting of :data:`KEPT_FROM_CHECKPOINT` whose value in ``current`` differs from
    ``saved`` (both resolved run configs as plain dicts)."""
    lines = []
    for key, why in KEPT_FROM_CHECKPOINT.items():
        old, new = _lookup(saved, key), _lookup(current, key)
        if old != new:
            lines.append(f"{key}={new} is not applied, the run continues with {old}: {why}")
    return lines


def _lookup(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def carry_best(resume: Path, checkpoints: Path) -> bool:
    """Copy ``best.pt`` beside ``resume`` (a checkpoint of another run folder) into ``checkpoints``
    unless this run already has one; True when this run has a ``best.pt`` afterwards."""
    own = checkpoints / "best.pt"
    if own.is_file():
        return True
    source = resume.parent / "best.pt"
    if not source.is_file():
        return False
    with source.open("rb") as reader:
        atomic_write(own, lambda handle: shutil.copyfileobj(reader, handle))
    log.info("copied %s to %s: the best checkpoint so far comes along with the resumed run", source, own)
    return True


def resume_training(
    resume, checkpoints: Path, state: TrainingState, config: dict, ranks, data: dict, allow_changes: bool = False
) -> tuple[Path, str | None] | None:
    """Load the checkpoint ``resume`` names (see :func:`resume_path`) into ``state`` and this rank's
    RNG; warn (rank 0) for each setting of ``config`` the checkpoint overrides; bring its folder's
    best checkpoint into ``checkpoints`` (:func:`keep_best`). Returns ``(path, W&B run id)``, or
    None when there is nothing to resume.

    ``data``: this run's :func:`hat.engine.resume_checks.data_identity`. A checkpoint whose model
    does not fit ``state.model`` stops the run (:class:`ConfigError`, one line); one trained on other
    data too, unless ``allow_changes`` (``resume_changes=allow``): then the best checkpoint is
    chosen afresh by the next validation."""
    path = resume_path(resume, checkpoints)
    if path is None:
        return None
    checkpoint = load_checkpoint(path)
    if "model" not in checkpoint:
        raise ConfigError(f"resume={path}: the checkpoint holds no training state (model missing); "
                          f"start from its weights with init_weights={path} instead")
    misfit = model_differences(checkpoint["model"], state.model)
    if misfit:
        raise ConfigError(
            f"resume={path}: the checkpoint's model does not fit this config ({'; '.join(misfit)}); it was "
            f"trained with {model_settings(checkpoint.get('config', {}))}, this run asks for "
            f"{model_settings(config)}: resume with the settings it was trained with")
    changed = data_differences(checkpoint.get("data"), data)
    if changed and not allow_changes:
        raise ConfigError(
            f"resume={path}: the checkpoint was trained on other data ({'; '.join(changed)}); resume with the "
            f"data it was trained on, start from its weights in a new folder (init_weights={path}), or continue "
            f"anyway with resume_changes=allow (the best checkpoint is then chosen afresh)")
    try:
        state.load_state_dict(checkpoint)
    except KeyError as missing:
        raise ConfigError(
            f"resume={path}: the checkpoint holds no training state ({missing.args[0]} missing); "
            f"start from its weights with init_weights={path} instead"
        ) from None
    except ValueError as mismatch:  # another number or size of parameter groups, an older scheduler
        raise ConfigError(
            f"resume={path}: {mismatch}; resume with the optim settings the run started with, or start "
            f"from its weights with init_weights={path}"
        ) from None
    restore_rng_state(own_rng_state(checkpoint["rng"], ranks))
    if ranks.is_main:
        for line in settings_not_applied(checkpoint["config"], config):
            log.warning("resume: %s", line)
    if changed:
        log.warning("resume_changes=allow: %s; the best checkpoint is chosen afresh", "; ".join(changed))
        forget_best(state)
    keep_best(path, checkpoints, state, ranks)
    log.info("resumed from %s at epoch %d, batch %d, step %d", path, state.epoch, state.batch, state.step)
    return path, checkpoint.get("tracker_run_id")


def forget_best(state: TrainingState) -> None:
    """Let the next validation choose the best checkpoint afresh (and run before training goes on)."""
    state.best_metric = state.best_epoch = None
    state.validated_step = -1


def keep_best(path: Path, checkpoints: Path, state: TrainingState, ranks) -> None:
    """Make sure the best checkpoint ``state``'s counters speak of is in ``checkpoints``: copied from
    the resumed checkpoint's folder, or, when there is none or the one there is another epoch's (a
    run stopped between writing ``last`` and ``best``), chosen afresh by the next validation."""
    if state.best_metric is None:
        return
    problem = gather_objects(best_problem(path, checkpoints, state) if ranks.is_main else None)[0]
    if problem:
        log.warning("resume: %s; the next validation chooses the best checkpoint afresh", problem)
        forget_best(state)


def best_problem(path: Path, checkpoints: Path, state: TrainingState) -> str | None:
    """Why this run's ``best.pt`` (carried from beside ``path`` when it has none) is not the best
    checkpoint ``state`` speaks of, or None when it is."""
    if not carry_best(path, checkpoints):
        return f"no best.pt beside {path}"
    best = load_checkpoint(checkpoints / "best.pt")
    if (best.get("best_epoch"), best.get("best_metric")) != (state.best_epoch, state.best_metric):
        return (f"{checkpoints / 'best.pt'} is the best of epoch {best.get('best_epoch')} (monitor "
                f"{best.get('best_metric')}) where {path} records epoch {state.best_epoch} ({state.best_metric})")
    return None


def own_rng_state(states: list[dict], ranks) -> dict:
    """This rank's saved RNG state; a run resumed on another number of processes reseeds its extra ranks."""
    if len(states) == ranks.world_size:
        return states[ranks.rank]
    log.warning("the checkpoint holds RNG states of %d processes, this run has %d", len(states), ranks.world_size)
    return states[min(ranks.rank, len(states) - 1)]
