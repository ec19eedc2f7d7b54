"""What a checkpoint holds, written atomically, read back with ``weights_only=True``.

A checkpoint is a plain dict:

- ``format``: :data:`CHECKPOINT_FORMAT`;
- ``model``: the model's state dict; ``loss``: the loss module's state dict (a learnable
  temperature, or empty);
- ``optimizer``, ``scheduler``, ``scaler``: their state dicts;
- ``epoch``: the number of finished epochs (training resumes at this epoch index);
- ``step``: optimizer steps taken; ``batch``: batches done in the unfinished epoch ``epoch``
  (0 at an epoch boundary), where a resumed run continues;
- ``best_metric``, ``best_epoch``: the best value of ``train.monitor`` so far and its epoch;
- ``validated_step``: the step of the last finished validation (see :class:`TrainingState`);
- ``rng``: one ``{"torch": CPU state, "cuda": [per-device states]}`` per process, in rank order;
- ``config``: the resolved run config as a plain dict;
- ``tracker_run_id``: the W&B run a resumed training continues (``None`` without one).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hat.models.checkpoint_file import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint

__all__ = ["CHECKPOINT_FORMAT", "TrainingState", "capture_rng_state", "load_checkpoint", "restore_rng_state",
           "save_checkpoint"]

COUNTERS = ("epoch", "step", "batch", "best_metric", "best_epoch", "validated_step")


@dataclass
class TrainingState:
    """What a training changes as it goes and a resumed run continues from: the model, the loss
    module, the optimizer, the scheduler and the gradient scaler, and the counters.

    ``epoch``: finished epochs; ``step``: optimizer steps; ``batch``: batches done in the
    unfinished epoch; ``best_metric``/``best_epoch``: the best validation monitor so far;
    ``validated_step``: the step of the last finished validation.
    """

    model: nn.Module
    loss: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    epoch: int = 0
    step: int = 0
    batch: int = 0
    best_metric: float | None = None
    best_epoch: int | None = None
    validated_step: int = 0

    MODULES = ("model", "loss", "optimizer", "scheduler", "scaler")

    def record_validation(self, monitor: float, epoch: int, higher_is_better: bool) -> bool:
        """Count a finished validation of ``epoch`` at this step; returns whether ``monitor`` is the
        best so far (then ``best_metric`` and ``best_epoch`` hold it)."""
        best = self.best_metric
        improved = best is None or (monitor > best if higher_is_better else monitor < best)
        if improved:
            self.best_metric, self.best_epoch = monitor, epoch
        self.validated_step = self.step
        return improved

    def state_dict(self) -> dict:
        """The state dicts of the modules and the counters, under the checkpoint's keys."""
        return {
            **{name: getattr(self, name).state_dict() for name in self.MODULES},
            **{name: getattr(self, name) for name in COUNTERS},
        }

    def load_state_dict(self, state: dict) -> None:
        """Load a checkpoint's training state (``validated_step`` defaults to ``step``, as in
        checkpoints written before it existed). Raises KeyError naming what is missing."""
        missing = [key for key in (*self.MODULES, *COUNTERS[:-1]) if key not in state]
        if missing:
            raise KeyError(", ".join(missing))
        for name in self.MODULES:
            getattr(self, name).load_state_dict(state[name])
        for name in COUNTERS:
            setattr(self, name, state.get(name, state["step"]))


def capture_rng_state() -> dict:
    """The random number generator states that a resumed run must continue from."""
    cuda = [state for state in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []
    return {"torch": torch.get_rng_state(), "cuda": cuda}


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
