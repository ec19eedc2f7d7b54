"""A trained model as a portable folder: what :func:`hat.load` needs and a card for people.

``python evaluate.py checkpoint=PATH export=DIR`` writes ``model.safetensors`` (the weights),
``config.yaml`` (the run config), ``tokenizer/`` (the tokenizer's files, so loading needs no
hub or package) and ``README.md`` (the model card: architecture, the evaluation table, the
training config). ``evaluate.py checkpoint=DIR`` and ``hat.load(DIR)`` read it, and
``train.py init_weights=DIR`` starts training from it.

``DIR`` is a path that does not exist yet (created with its parents), an empty folder, or an
earlier export (its files are replaced). Anything else (a file, a folder of other files, whose
``README.md`` or ``config.yaml`` would be overwritten) is refused by :func:`check_export_target`,
which evaluate.py runs before any evaluation. A write that fails on the way (a full disk) is one
line naming the folder and what to do.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from safetensors.torch import save

from hat.atomic import atomic_write, write_failed
from hat.checks import ConfigError
from hat.models.weights import read_safetensors

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
CARD_FILE = "README.md"
TOKENIZER_FOLDER = "tokenizer"
EXPECTED = "a new or empty folder, or an earlier export to replace"


def check_export_target(folder: Path) -> None:
    """Raise a one-line :class:`ConfigError` naming ``export=FOLDER`` unless :func:`export_model` can
    write there without overwriting anything but an earlier export (see the module's docstring)."""
    if folder.is_dir():
        if is_export_folder(folder):
            return
        others = sorted(path.name for path in folder.iterdir())
        if others:
            listed = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
            raise ConfigError(f"export={folder} is a folder that holds other files ({listed}), not an earlier "
                              f"export: give {EXPECTED}")
        ancestor = folder
    elif folder.exists() or folder.is_symlink():
        kind = "file" if folder.is_file() else "path that is not a folder"
        raise ConfigError(f"export={folder} is an existing {kind}: give {EXPECTED}")
    else:
        ancestor = folder.absolute().parent
        while not ancestor.exists() and ancestor.parent != ancestor:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise ConfigError(f"export={folder} cannot be created: {ancestor} is a file, not a folder; give {EXPECTED}")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"export={folder} cannot be written: {ancestor} is not writable"
                          f"{' (a read-only file system)' if _read_only(ancestor) else ''}; give {EXPECTED} "
                          "that you can write")


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def export_model(
    state_dict: dict[str, torch.Tensor], config: dict, folder: Path, tokenizer=None, card: str | None = None
) -> None:
    """Write ``state_dict`` and ``config`` (a plain dict) to ``folder``, each file atomically, and
    ``tokenizer`` (a transformers tokenizer, with ``save_pretrained``) and the ``card`` text when given.
    A write that fails (a full disk, no permission) raises a one-line :class:`hat.atomic.WriteFailed`."""
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in state_dict.items()}
    payload = save(tensors)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / WEIGHTS_FILE, lambda handle: handle.write(payload))
        _write_text(folder / CONFIG_FILE, OmegaConf.to_yaml(OmegaConf.create(config)))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(folder / TOKENIZER_FOLDER))
        if card is not None:
            _write_text(folder / CARD_FILE, card)
    except OSError as error:
        raise write_failed(error, folder / WEIGHTS_FILE, f"the exported model in {folder}",
                           then="then export again (or give another export= folder)") from error


def model_card(config: dict, source: Path, title: str, table: str) -> str:
    """The Markdown card of an exported model: where it came from, its architecture, how to load it,
    the evaluation ``table`` (under ``title``) and the full training ``config``."""
    encoder, alignment = config["encoder"], config["alignment"]
    return "\n".join(
        [
            "# HAT image-text retrieval model",
            "",
            f"Exported from `{source}`.",
            "",
            f"- image encoder: `{encoder['image']['name']}` ({encoder['image']['image_size']} px)",
            f"- text encoder: {encoder['text']['num_layers']} layers "
            f"(`{encoder['text'].get('name') or 'BERT from config'}`)",
            f"- levels: text layers {alignment['levels']}, {alignment['direction']} cross attention, "
            f"lambda {alignment['smooth']}, width {encoder['embed_dim']}",
            "",
            "```python",
            "import hat",
            "model = hat.load(\"PATH/TO/THIS/FOLDER\")",
            "scores = model.score(model.encode_images([\"photo.jpg\"]), model.encode_texts([\"a dog on a beach\"]))",
            "```",
            "",
            f"## {title}",
            "",
            table,
            "",
            "## Training config",
            "",
            "```yaml",
            OmegaConf.to_yaml(OmegaConf.create(config)).rstrip(),
            "```",
            "",
        ]
    )


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def is_export_folder(path: Path) -> bool:
    return path.is_dir() and (path / WEIGHTS_FILE).is_file()


def read_export(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """``(state_dict, config)`` of an export folder; errors name the folder and the missing or unreadable file."""
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        if not (folder / name).is_file():
            raise ConfigError(
                f"{folder} is not an exported model: it has no {name} (expected {WEIGHTS_FILE} and {CONFIG_FILE})"
            )
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
