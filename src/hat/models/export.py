"""Model weights as a portable folder: ``model.safetensors`` plus the run config as ``config.yaml``.

``python evaluate.py checkpoint=PATH export=DIR`` writes one; ``evaluate.py checkpoint=DIR``
reads it, and ``train.py init_weights=DIR`` starts training from it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save

from hat.atomic import atomic_write
from hat.config import ConfigError

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
    """``(state_dict, config)`` of an export folder; errors name the folder and the missing file."""
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        if not (folder / name).is_file():
            raise ConfigError(f"{folder} is not an exported model: it has no {name} (expected {WEIGHTS_FILE} and {CONFIG_FILE})")
    config = OmegaConf.to_container(OmegaConf.load(folder / CONFIG_FILE), resolve=True)
    return load_file(str(folder / WEIGHTS_FILE)), config
