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
- ``rng``: one ``{"torch": CPU state, "cuda": [per-device states]}`` per process, in rank order;
- ``config``: the resolved run config as a plain dict;
- ``tracker_run_id``: the W&B run a resumed training continues (``None`` without one).
"""

from __future__ import annotations

from pathlib import Path

import torch

from hat.atomic import atomic_write

CHECKPOINT_FORMAT = 1
REQUIRED_KEYS = ("format", "model", "config")


def save_checkpoint(state: dict, path: Path) -> None:
    """Write ``state`` to ``path`` through a temporary file in the same folder and an atomic rename,
    so a crash mid-write never leaves a truncated checkpoint behind."""
    atomic_write(path, lambda handle: torch.save(state, handle))


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`; errors name the file and what is wrong."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"cannot read checkpoint {path}: {error}") from error
    missing = [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise ValueError(f"{path} is not a hat checkpoint: missing {missing}")
    if state["format"] != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} has checkpoint format {state['format']}, this version reads {CHECKPOINT_FORMAT}")
    return state


def capture_rng_state() -> dict:
    """The random number generator states that a resumed run must continue from."""
    cuda = [state for state in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []
    return {"torch": torch.get_rng_state(), "cuda": cuda}


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
