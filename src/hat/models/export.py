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
EPOCH_KEY = "hat.epoch"
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
    state_dict: dict[str, torch.Tensor], config: dict, folder: Path, tokenizer=None, card: str | None = None,
    epoch: int | None = None,
) -> None:
    """Write ``state_dict`` and ``config`` (a plain dict) to ``folder``, each file atomically, and
    ``tokenizer`` (a transformers tokenizer, with ``save_pretrained``) and the ``card`` text when given.
    The weights file's metadata holds ``epoch`` (:data:`EPOCH_KEY`), the epoch the weights are from.
    A write that fails (a full disk, no permission) raises a one-line :class:`hat.atomic.WriteFailed`."""
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in state_dict.items()}
    payload = save(tensors, metadata=None if epoch is None else {EPOCH_KEY: str(epoch)})
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


def model_card(config: dict, state_dict: dict[str, torch.Tensor], source: Path, epoch: int | None, title: str,
               table: str) -> str:
    """The Markdown card of an exported model: where it came from (``source``, the ``epoch`` its
    weights are from), its architecture as built (from ``config`` and the sizes in ``state_dict``),
    how to load it, the evaluation ``table`` (under ``title``) and the full training ``config``."""
    encoder, alignment = config["encoder"], config["alignment"]
    trained = "an untrained model" if epoch is None else f"epoch {epoch} (epochs count from 0)"
    return "\n".join(
        [
            "# HAT image-text retrieval model",
            "",
            f"Exported from `{source}`, weights from {trained}.",
            "",
            f"- image encoder: {_describe_image_encoder(encoder, state_dict)}",
            f"- text encoder: {_describe_text_encoder(encoder, state_dict)}",
            f"- levels: text layers {alignment['levels']}, {alignment['direction']} cross attention, "
            f"lambda {alignment['smooth']}, width {encoder['embed_dim']}",
            f"- {_millions(state_dict, '')} parameters in all",
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


def _describe_image_encoder(encoder: dict, state_dict: dict[str, torch.Tensor]) -> str:
    """The image backbone as built: its family, timm architecture, the arguments that changed it
    (a tiny Swin is ``swin_base_...`` with other widths), input size and parameter count."""
    image = encoder["image"]
    changed = f" with {image['kwargs']}" if image.get("kwargs") else ""
    return (f"{image['family']} `{image['name']}`{changed}, {image['image_size']} px, "
            f"{_millions(state_dict, 'image_encoder.')} parameters")


def _describe_text_encoder(encoder: dict, state_dict: dict[str, torch.Tensor]) -> str:
    """The text model as built: its source (a hub name or folder, or a BERT built from config with its
    width), layers and parameter count."""
    text = encoder["text"]
    if text.get("name"):
        source = f"`{text['name']}`"
    else:
        config = text.get("config") or {}
        source = f"BERT built from config (width {config.get('hidden_size', '?')})"
    return f"{source}, {text['num_layers']} layers, {_millions(state_dict, 'text_encoder.')} parameters"


def _millions(state_dict: dict[str, torch.Tensor], prefix: str) -> str:
    count = sum(t.numel() for name, t in state_dict.items() if name.startswith(prefix) and t.is_floating_point())
    return f"{count / 1e6:.3g} M" if count >= 1e5 else f"{count:,}"


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def is_export_folder(path: Path) -> bool:
    return path.is_dir() and (path / WEIGHTS_FILE).is_file()


def read_export(folder: Path) -> tuple[dict[str, torch.Tensor], dict, int | None]:
    """``(state_dict, config, epoch)`` of an export folder (``epoch``: the epoch the weights are from,
    None when the export does not say); errors name the folder and the missing or unreadable file."""
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        if not (folder / name).is_file():
            raise ConfigError(
                f"{folder} is not an exported model: it has no {name} (expected {WEIGHTS_FILE} and {CONFIG_FILE})"
            )
    weights = folder / WEIGHTS_FILE
    state = read_safetensors(weights, f"exported weights {weights}")
    return state, _read_config(folder / CONFIG_FILE), _exported_epoch(weights)


def _exported_epoch(weights: Path) -> int | None:
    """The epoch in the weights file's metadata (written by :func:`export_model`), or None."""
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as handle:
        value = (handle.metadata() or {}).get(EPOCH_KEY)
    return int(value) if value is not None and value.lstrip("-").isdigit() else None


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
