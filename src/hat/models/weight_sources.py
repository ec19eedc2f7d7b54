"""Where model weights can come from: our checkpoints, exported folders, and HAT's released checkpoints.

- a ``.pt`` checkpoint written by training (its ``model`` and ``config``);
- a folder written by ``evaluate.py ... export=DIR`` (``model.safetensors`` + ``config.yaml``);
- one of the authors' PyTorch-Lightning ``.ckpt`` files (converted by :mod:`hat.models.hat_release`;
  it carries no config of ours, so the architecture comes from the caller).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from hat.checks import ConfigError
from hat.models.checkpoint_file import load_checkpoint
from hat.models.export import is_export_folder, read_export
from hat.models.hat_release import load_release_checkpoint
from hat.models.lightning_unpickler import read_lightning_epoch
from hat.models.weights import zip_file_problem

RELEASE_SUFFIX = ".ckpt"


@dataclass
class WeightSource:
    """Weights found at ``path``: ``kind`` is ``checkpoint``, ``export`` or ``release``; ``epoch``: the
    epoch the weights are from (counted from 0, as training logs them; None: not known, or untrained)."""

    path: Path
    kind: str
    config: dict | None
    epoch: int | None
    state_dict: dict | None  # None for releases, which are read and converted by load_weights


def open_weight_source(path: Path) -> WeightSource:
    """Recognise and read what ``path`` holds; errors name the path and what is accepted."""
    if is_export_folder(path):
        state, config, epoch = read_export(path)
        return WeightSource(path, "export", config, epoch, state)
    if path.suffix == RELEASE_SUFFIX and path.is_file():
        return WeightSource(path, "release", None, _release_epoch(path), None)
    if path.is_file():
        checkpoint = load_checkpoint(path)
        return WeightSource(path, "checkpoint", checkpoint["config"], weights_epoch(checkpoint), checkpoint["model"])
    raise ConfigError(
        f"{path} does not exist or is not a model: expected a .pt checkpoint from train.py, a folder with "
        f"model.safetensors and config.yaml (evaluate.py export=DIR), or a HAT release .ckpt"
    )


def weights_epoch(checkpoint: dict) -> int | None:
    """The epoch a training checkpoint's weights are from, counted from 0 as training logs it: the
    checkpoint's ``epoch`` counts finished epochs, so weights written at an epoch's end are from
    ``epoch - 1`` and weights written mid-epoch (``batch`` > 0) from ``epoch``; None before any step."""
    finished, batch = checkpoint.get("epoch"), checkpoint.get("batch", 0)
    if not isinstance(finished, int):
        return None
    epoch = finished if batch else finished - 1
    return epoch if epoch >= 0 else None


def _release_epoch(path: Path) -> int | None:
    """The epoch a HAT release records (Lightning's 0-based index); a file that cannot be read is one line."""
    _require_zip_release(path)
    try:
        return read_lightning_epoch(path)
    except (ValueError, zipfile.BadZipFile) as error:
        raise ConfigError(f"cannot read checkpoint {path}: {error}") from error


def _require_zip_release(path: Path) -> None:
    """Raise ``cannot read checkpoint PATH: REASON`` unless ``path`` is a zip-format torch file."""
    problem = zip_file_problem(path)
    if problem:
        raise ConfigError(
            f"cannot read checkpoint {path}: {problem} (HAT's releases are zip archives written by torch.save)"
        )


def load_weights(source: WeightSource, model: nn.Module) -> None:
    """Load ``source`` into ``model`` strictly: every weight must be placed, each of its shape."""
    if source.kind == "release":
        _load_release(source.path, model)
        return
    try:
        missing, unexpected = model.load_state_dict(source.state_dict, strict=False)
    except RuntimeError as error:  # shape mismatches
        mismatches = [line.strip() for line in str(error).splitlines()[1:]]
        raise ConfigError(
            f"the weights in {source.path} do not fit the configured model: {len(mismatches)} problems "
            f"(e.g. {mismatches[:2]})"
        ) from error
    if missing or unexpected:
        raise ConfigError(
            f"the weights in {source.path} do not fit the configured model: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )


def _load_release(path: Path, model: nn.Module) -> None:
    """Convert and load the HAT release at ``path`` (read without running its pickle); a file that is
    not a zip-format torch file raises ``cannot read checkpoint PATH: REASON``."""
    _require_zip_release(path)
    try:
        load_release_checkpoint(path, model)
    except zipfile.BadZipFile as error:  # a damaged tensor record
        raise ConfigError(f"cannot read checkpoint {path}: damaged zip archive ({error})") from error
    except ValueError as error:
        raise ConfigError(str(error)) from error
