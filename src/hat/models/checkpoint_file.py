"""The checkpoint file: written atomically, read back with ``weights_only=True`` and checked.

What the dict holds is described in :mod:`hat.engine.checkpoint` (the training state); readers of
weights (:mod:`hat.models.weight_sources`) need only ``format``, ``model`` and ``config``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hat.atomic import atomic_write, write_failed
from hat.checks import ConfigError
from hat.models.weights import read_torch_file

CHECKPOINT_FORMAT = 1
REQUIRED_KEYS = ("format", "model", "config")


def save_checkpoint(state: dict, path: Path) -> None:
    """Write ``state`` to ``path`` through a temporary file in the same folder and an atomic rename,
    so a crash mid-write never leaves a truncated checkpoint behind.

    A write that fails (a full disk, no permission, a read-only file system) removes the temporary
    file, leaves any previous ``path`` as it was, and raises a one-line
    :class:`hat.atomic.WriteFailed` (a :class:`ConfigError`: train.py prints it and exits with
    status 2): ``cannot write checkpoint PATH: the disk is full (No space left on device); free
    space on MOUNT (N free now), then resume with resume=auto hydra.run.dir=RUN``.
    """
    try:
        atomic_write(path, lambda handle: torch.save(state, handle))
    except (OSError, RuntimeError) as error:
        failed = write_failed(error, path, f"checkpoint {path}", then=_resume_hint(path))
        if failed is None:
            raise
        raise failed from error


def _resume_hint(path: Path) -> str:
    """How the run that was writing ``path`` goes on once the disk is fixed."""
    if path.parent.name != "checkpoints":  # not a run folder's checkpoint
        return "then resume with resume=auto"
    return f"then resume with resume=auto hydra.run.dir={path.parent.parent}"


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
