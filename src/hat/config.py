"""Checks of a run config that fail before any work, with messages that name field, value and what is allowed.

The library reads configs by attribute (``cfg.train.batch_size``) and ``.get``; an OmegaConf
``DictConfig`` composed by Hydra or built with ``OmegaConf.create`` both work.
"""

from __future__ import annotations

import os
from pathlib import Path

from hat.alignment import DIRECTIONS
from hat.data.build import check_dataset_root
from hat.data.device_decode import IMAGE_DECODE
from hat.engine.runtime import COMPILE_MODES, DEVICES, PRECISIONS
from hat.losses import LOSSES
from hat.metrics import METRIC_KEYS, RANK_KEYS
from hat.models.levels import IMAGE_FAMILIES, check_levels, default_image_levels
from hat.tracking import LOGGERS
from hat.wandb_tracker import MODES, normalise_mode


def to_plain(node):
    """A config node as plain Python containers (lists and dicts), resolving interpolations."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


class ConfigError(ValueError):
    """A config value that cannot work; the message names the field, the value and what is allowed."""


def validate_train_config(cfg) -> None:
    """Every check a training run needs before it builds anything."""
    try:
        validate_model_config(cfg)
        _check_loss(cfg.loss)
        _check_train(cfg)
        _check_hardware(cfg.hardware)
        _check_image_decode(cfg)
        _check_logger(cfg.logger)
        _check_resume(cfg.get("resume"))
        _check_init_weights(cfg.get("init_weights"))
        check_dataset_root(cfg.dataset)
    except (ValueError, FileNotFoundError) as error:
        raise ConfigError(str(error)) from error


def validate_model_config(cfg) -> None:
    """Checks of ``encoder`` and ``alignment``: levels within the encoders' depths, and settings."""
    text, image, align = cfg.encoder.text, cfg.encoder.image, cfg.alignment
    if image.family not in IMAGE_FAMILIES:
        raise ConfigError(f"encoder.image.family={image.family!r} is not one of {IMAGE_FAMILIES}")
    if cfg.encoder.pretrained and not text.get("name"):
        raise ConfigError(
            f"encoder.pretrained=true but encoder.text.name is null (encoder={cfg.encoder.name}): "
            f"these encoders exist only with random weights; set encoder.pretrained=false"
        )
    check_levels("alignment.levels", list(align.levels), text.num_layers, f"{text.num_layers} layers of the text encoder")
    image_levels = align.get("image_levels")
    if image_levels is None:
        image_levels = default_image_levels(list(align.levels), image.family, image.depth, text.num_layers)
    else:
        check_levels("alignment.image_levels", list(image_levels), image.depth, f"{image.depth} taps of the image encoder")
        if len(image_levels) != len(align.levels):
            raise ConfigError(
                f"alignment.image_levels={list(image_levels)} has {len(image_levels)} levels but "
                f"alignment.levels={list(align.levels)} has {len(align.levels)}; they must pair one to one"
            )
    if align.direction not in DIRECTIONS:
        raise ConfigError(f"alignment.direction={align.direction!r} is not one of {DIRECTIONS}")
    if not align.smooth > 0:
        raise ConfigError(f"alignment.smooth={align.smooth} must be > 0 (HAT uses 9.0)")
    if align.block_elements is not None and not align.block_elements >= 1:
        raise ConfigError(f"alignment.block_elements={align.block_elements} must be >= 1 or null")


def _check_loss(cfg) -> None:
    if cfg.name not in LOSSES:
        raise ConfigError(f"loss.name={cfg.name!r} is not one of {LOSSES}")
    if cfg.name.startswith("hinge") and not cfg.margin >= 0:
        raise ConfigError(f"loss.margin={cfg.margin} must be >= 0 (HAT uses 0.2)")
    if not cfg.get("warmup_epochs", 0) >= 0:
        raise ConfigError(f"loss.warmup_epochs={cfg.warmup_epochs} must be >= 0")
    if cfg.name == "infonce" and not cfg.temperature > 0:
        raise ConfigError(f"loss.temperature={cfg.temperature} must be > 0")


def _check_train(cfg) -> None:
    train = cfg.train
    if not train.batch_size >= 2:
        raise ConfigError(f"train.batch_size={train.batch_size} must be >= 2: the loss needs negatives in the batch")
    if not (isinstance(train.get("accumulate", 1), int) and train.get("accumulate", 1) >= 1):
        raise ConfigError(
            f"train.accumulate={train.accumulate} must be an integer >= 1 (GradCache chunks of train.batch_size)"
        )
    if not train.epochs >= 1:
        raise ConfigError(f"train.epochs={train.epochs} must be >= 1")
    if train.max_steps is not None and not train.max_steps >= 1:
        raise ConfigError(f"train.max_steps={train.max_steps} must be >= 1 or null")
    if not train.freeze_epochs >= 0:
        raise ConfigError(f"train.freeze_epochs={train.freeze_epochs} must be >= 0")
    if not cfg.optim.lr > 0:
        raise ConfigError(f"optim.lr={cfg.optim.lr} must be > 0")
    monitor_terms(train.monitor, len(cfg.alignment.levels))


def monitor_terms(monitor: str, num_levels: int) -> tuple[list[str], bool]:
    """Parse ``train.monitor`` ("val/i2t_r1+val/t2i_r1"): (metric names summed, higher is better)."""
    names = [term.strip() for term in str(monitor).split("+")]
    allowed = f"'+'-separated names val/METRIC or val/levelK/METRIC with METRIC in {METRIC_KEYS}"
    directions = set()
    for name in names:
        parts = name.split("/")
        level_ok = len(parts) == 2 or (
            len(parts) == 3 and parts[1].startswith("level") and parts[1][5:].isdigit()
            and 1 <= int(parts[1][5:]) <= num_levels
        )
        if parts[0] != "val" or not level_ok or parts[-1] not in METRIC_KEYS:
            raise ConfigError(f"train.monitor={monitor!r}: {name!r} is not a validation metric; expected {allowed}")
        directions.add(parts[-1] not in RANK_KEYS)
    if len(directions) != 1:
        raise ConfigError(f"train.monitor={monitor!r} mixes recalls (higher is better) with ranks (lower is better)")
    return names, directions.pop()


def _check_hardware(cfg) -> None:
    if cfg.device not in DEVICES:
        raise ConfigError(f"hardware.device={cfg.device!r} is not one of {DEVICES}")
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"hardware.precision={cfg.precision!r} is not one of {PRECISIONS}")
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("hardware.device=cuda but no CUDA GPU is available; use hardware=auto or hardware=cpu")
    if not cfg.num_workers >= 0:
        raise ConfigError(f"hardware.num_workers={cfg.num_workers} must be >= 0")
    if cfg.get("compile_mode", "default") not in COMPILE_MODES:
        raise ConfigError(f"hardware.compile_mode={cfg.compile_mode!r} is not one of {COMPILE_MODES}")
    if cfg.get("image_decode", "cpu") not in IMAGE_DECODE:
        raise ConfigError(f"hardware.image_decode={cfg.image_decode!r} is not one of {IMAGE_DECODE}")


def _check_image_decode(cfg) -> None:
    """The device-decode path reads JPEG files, which a generated dataset does not have."""
    if cfg.hardware.get("image_decode", "cpu") == "device" and cfg.dataset.name == "shapes":
        raise ConfigError(
            "hardware.image_decode=device decodes JPEG files from disk, but dataset=shapes draws its images "
            "in memory; use hardware.image_decode=cpu or a dataset on disk (dataset=f30k|coco)"
        )


def _check_logger(cfg) -> None:
    if cfg.backend not in LOGGERS:
        raise ConfigError(f"logger.backend={cfg.backend!r} is not one of {LOGGERS} (choose logger=none or logger=wandb)")
    if cfg.backend != "wandb":
        return
    if cfg.mode is not None and cfg.mode not in MODES:
        raise ConfigError(f"logger.mode={cfg.mode!r} is not one of {MODES} (or null: $WANDB_MODE, else by login)")
    if cfg.mode is None and os.environ.get("WANDB_MODE"):
        normalise_mode(os.environ["WANDB_MODE"], "WANDB_MODE")
    if not cfg.project:
        raise ConfigError("logger.project is empty: W&B needs a project name")
    if cfg.init_timeout <= 0:
        raise ConfigError(f"logger.init_timeout={cfg.init_timeout} must be > 0 seconds")
    examples = cfg.examples
    for key, minimum in (("queries", 0), ("top_k", 1), ("thumbnail", 8), ("curve_max_k", 1)):
        if examples[key] < minimum:
            raise ConfigError(f"logger.examples.{key}={examples[key]} must be >= {minimum}")


def _check_init_weights(path) -> None:
    if path is not None and not Path(str(path)).exists():
        raise ConfigError(
            f"init_weights={path}: no such file or folder (expected a .pt checkpoint, an exported folder "
            f"with model.safetensors, or a HAT release .ckpt)"
        )


def _check_resume(resume) -> None:
    if resume in (None, "auto"):
        return
    if not Path(str(resume)).is_file():
        raise ConfigError(f"resume={resume}: no such checkpoint file (expected auto, null, or a path to a .pt file)")
