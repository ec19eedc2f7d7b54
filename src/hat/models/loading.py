"""Rebuild a model from saved weights: the config it was trained with, random weights, then the saved ones.

Used by ``evaluate.py`` and by :func:`hat.load`. Rebuilding reads no model files and downloads
nothing: the stored config's model locations (weight files, hub names, folders) are never read,
and it may not pick code to import (see :func:`check_rebuild_config`). Only the tokenizer is
loaded, from the export folder's own ``tokenizer/`` when it has one, else from
``encoder.text.tokenizer`` (or ``.name``), without running code shipped with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hat.checks import ConfigError, to_plain
from hat.models.export import TOKENIZER_FOLDER
from hat.models.hat import HATModel, build_model
from hat.models.spec import ModelSpec, model_spec
from hat.models.text_encoder import build_tokenizer
from hat.models.weight_sources import WeightSource, load_weights, open_weight_source

# timm.create_model arguments that name files or settings for timm to read, even with random weights.
TIMM_READING_KWARGS = ("checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


@dataclass
class LoadedModel:
    """A model rebuilt from ``source`` with its weights loaded (on the CPU, in evaluation mode),
    the config it was built from (``encoder``, ``alignment`` and, when stored, ``dataset``) and
    its tokenizer."""

    source: WeightSource
    config: DictConfig
    model: HATModel
    tokenizer: object


def rebuild_config(source: WeightSource, release_model=None, dataset=None) -> tuple[DictConfig, ModelSpec]:
    """The config the model is rebuilt from: ``source``'s own (``release_model``, the ``encoder``
    and ``alignment`` config, for a release), with ``dataset`` when given and random initial
    weights, checked (see :func:`check_rebuild_config`), and the model spec it resolves to."""
    if source.kind == "release" and release_model is None:
        raise ConfigError(
            f"{source.path} is one of HAT's released checkpoints, which carry no config of ours: "
            f"give its architecture (the encoder and alignment config of HAT)"
        )
    try:
        cfg = OmegaConf.create({"seed": 0, **to_plain(release_model)} if source.kind == "release" else source.config)
        if dataset is not None:
            cfg.dataset = dataset
        cfg.encoder.pretrained = False
        tokenizer = source.path / TOKENIZER_FOLDER
        if source.kind == "export" and tokenizer.is_dir():
            cfg.encoder.text.tokenizer = str(tokenizer)
        check_rebuild_config(cfg)
        spec = model_spec(cfg)
    except OmegaConfBaseException as error:  # a stored config without the settings of a model
        first_line = str(error).splitlines()[0]
        raise ConfigError(f"the config of {source.path} does not describe a model: {first_line}") from error
    except ValueError as error:
        raise ConfigError(str(error)) from error
    return cfg, spec


def check_rebuild_config(cfg) -> None:
    """A model rebuilt with random weights reads no files and imports nothing its config names.

    ``encoder.image.name`` must be a timm architecture (``hf-hub:`` and ``local-dir:`` names make
    timm read a config there even without weights), and ``encoder.image.kwargs`` may not hold
    :data:`TIMM_READING_KWARGS`. (``pkg:`` names and the text encoder's settings are checked where
    they are used, see :func:`hat.models.weights.resolve_model_location`.)
    """
    image = cfg.encoder.image
    if not re.fullmatch(r"[\w.-]+", str(image.name)):
        raise ConfigError(
            f"encoder.image.name={image.name!r} is not a timm architecture name (e.g. swin_base_patch4_window7_224): "
            f"the model is rebuilt from saved weights, so it is never read from a hub repo or folder"
        )
    reading = [key for key in TIMM_READING_KWARGS if key in (image.get("kwargs") or {})]
    if reading:
        raise ConfigError(
            f"encoder.image.kwargs.{reading[0]}={image.kwargs[reading[0]]!r}: the model is rebuilt from saved "
            f"weights and reads nothing else; remove {reading}"
        )


def rebuild(source: WeightSource, cfg: DictConfig, spec: ModelSpec) -> LoadedModel:
    """Build the model ``spec`` describes (resolved from ``cfg``, see :func:`rebuild_config`) with
    random weights, load ``source`` into it, and load its tokenizer."""
    tokenizer = build_tokenizer(spec.text)
    model = build_model(spec)
    load_weights(source, model)
    return LoadedModel(source, cfg, model.eval(), tokenizer)


def load_model(path: Path, release_model=None) -> LoadedModel:
    """The model at ``path`` (a ``.pt`` checkpoint, an export folder or a HAT release ``.ckpt``)."""
    source = open_weight_source(Path(path))
    return rebuild(source, *rebuild_config(source, release_model))
