"""Model weights as a portable folder: ``model.safetensors`` plus the run config as ``config.yaml``.

``python evaluate.py checkpoint=PATH export=DIR`` writes one; ``evaluate.py checkpoint=DIR``
reads it, and ``train.py init_weights=DIR`` starts training from it.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from safetensors.torch import save

from hat.atomic import atomic_write
from hat.config import ConfigError
from hat.models.weights import read_safetensors

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"


def export_model(state_dict: dict[str, torch.Tensor], config: dict, folder: Path) -> None:
    """Write ``state_dict`` and ``config`` (a plain dict) to ``folder``, each file atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in state_dict.items()}
    payload = save(tensors)
    atomic_write(folder / WEIGHTS_FILE, lambda handle: handle.write(payload))
    text = OmegaConf.to_yaml(OmegaConf.create(config))
    atomic_write(folder / CONFIG_FILE, lambda handle: handle.write(text.encode("utf-8")))


def is_export_folder(path: Path) -> bool:
    return path.is_dir() and (path / WEIGHTS_FILE).is_file()


def read_export(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """``(state_dict, config)`` of an export folder; errors name the folder and the missing or unreadable file."""
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        if not (folder / name).is_file():
            raise ConfigError(f"{folder} is not an exported model: it has no {name} (expected {WEIGHTS_FILE} and {CONFIG_FILE})")
    weights = folder / WEIGHTS_FILE
    return read_safetensors(weights, f"exported weights {weights}"), _read_config(folder / CONFIG_FILE)


def _read_config(path: Path) -> dict:
    """The run config in the YAML file ``path`` as a plain dict; a file that is not one raises a
    one-line :class:`ConfigError` naming it."""
    try:
        config = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except (yaml.YAMLError, OmegaConfBaseException, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read exported config {path}: {' '.join(str(error).split())}") from error
    if not isinstance(config, dict):
        raise ConfigError(f"cannot read exported config {path}: it holds a {type(config).__name__}, expected a mapping")
    return config
