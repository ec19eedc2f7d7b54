"""How a training that cannot go on says so: a diverged loss, a batch that cannot be loaded."""

from __future__ import annotations

from pathlib import Path

from hat.data.problems import DatasetError
from hat.data.records import BadImageError


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the step that produced it was not applied to the weights."""


def diverged(loss: float, step: int, epoch: int, batch: int, last: Path, saved_step: int | None) -> TrainingDiverged:
    """The error for a non-finite ``loss`` at 1-based ``step`` (``batch`` of ``epoch``), naming the
    ``last`` checkpoint kept (at ``saved_step``, None when none was written)."""
    kept = f"{last} (step {saved_step}) is kept" if saved_step is not None else "no checkpoint had been written yet"
    return TrainingDiverged(
        f"the training loss is {loss} at step {step} (epoch {epoch}, batch {batch}); "
        f"the step was not applied and {kept}. Lower optim.lr or check the data"
    )


def bad_training_image(error: BadImageError, last: Path | None, step: int) -> DatasetError:
    """The error for a training image that cannot be decoded mid-run; ``last``: the checkpoint
    written at ``step`` (None when none could be written)."""
    written = f"{last} holds step {step}: " if last is not None else ""
    return DatasetError([
        f"a training image cannot be used: {last_line(error)}; {written}fix or remove the file, or set "
        f"dataset.skip_bad_images=true to decode every image at start-up and drop the bad ones, then resume=auto"
    ])


def last_line(error: BaseException) -> str:
    """An error's message as the user needs it: a DataLoader worker's error arrives with the worker's
    traceback in its message, whose last line is the original message (without its type for ours,
    ``hat.data.records.BadImageError: PATH: REASON``)."""
    lines = str(error).strip().splitlines()
    if not lines or not lines[0].startswith("Caught "):
        return str(error)
    line = lines[-1]
    return line.split(": ", 1)[1] if line.startswith(("hat.", "BadImageError")) else line
