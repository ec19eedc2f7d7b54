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
from pathlib import Path

import torch
from torch import nn

from hat.atomic import atomic_write
from hat.config import ConfigError
from hat.models.weights import read_torch_file

CHECKPOINT_FORMAT = 1
REQUIRED_KEYS = ("format", "model", "config")
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


def save_checkpoint(state: dict, path: Path) -> None:
    """Write ``state`` to ``path`` through a temporary file in the same folder and an atomic rename,
    so a crash mid-write never leaves a truncated checkpoint behind."""
    atomic_write(path, lambda handle: torch.save(state, handle))


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only``: it may come from a stranger).

    A missing file raises FileNotFoundError; any other file that is not a checkpoint this version
    reads (empty, truncated, foreign, holding Python objects, another format) raises a one-line
    :class:`ConfigError` ``cannot read checkpoint PATH: REASON``.
    """
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    state = read_torch_file(path, f"checkpoint {path}")
    problem = _checkpoint_problem(state)
    if problem:
        raise ConfigError(f"cannot read checkpoint {path}: {problem}")
    return state


def _checkpoint_problem(state) -> str | None:
    """What keeps ``state`` (a loaded file) from being a checkpoint this version reads, or None."""
    if not isinstance(state, dict):
        return f"holds a {type(state).__name__}, not a hat checkpoint (a dict with keys {list(REQUIRED_KEYS)})"
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        return f"not a hat checkpoint: it has no {missing} (its keys: {sorted(map(str, state))[:8]})"
    if state["format"] != CHECKPOINT_FORMAT:
        return f"checkpoint format {state['format']!r}, this version reads format {CHECKPOINT_FORMAT}"
    if not isinstance(state["config"], dict):
        return f"'config' is a {type(state['config']).__name__}, expected a dict (the run config)"
    model = state["model"]
    if not isinstance(model, dict) or not all(isinstance(value, torch.Tensor) for value in model.values()):
        return "'model' is not a state dict (a dict of tensors)"
    return None


def capture_rng_state() -> dict:
    """The random number generator states that a resumed run must continue from."""
    cuda = [state for state in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []
    return {"torch": torch.get_rng_state(), "cuda": cuda}


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
