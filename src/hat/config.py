"""Checks of a run config that fail before any work, with messages that name field, value and what is allowed.

The library reads configs by attribute (``cfg.train.batch_size``) and ``.get``; an OmegaConf
``DictConfig`` composed by Hydra or built with ``OmegaConf.create`` both work.
"""

from __future__ import annotations

import os
from pathlib import Path

from hat.checks import ConfigError, require_int, require_int_list, require_number, show, to_plain
from hat.data.device_decode import IMAGE_DECODE
from hat.data.shapes import MAX_CAPTIONS_PER_IMAGE
from hat.data.spec import data_spec
from hat.kernels.dispatch import check_kernel_choice
from hat.losses import loss_spec
from hat.metrics import METRIC_KEYS, RANK_KEYS
from hat.models.spec import model_spec
from hat.optim.build import OPTIMIZERS
from hat.optim.schedule import SCHEDULES
from hat.run_spec import OptimSpec, RunSpec, TrainSpec
from hat.runtime import COMPILE_MODES, DEVICES, PRECISIONS
from hat.threads import check_threads_setting
from hat.tracking import LOGGERS
from hat.wandb_tracker import MODES, normalise_mode


def validate_train_config(cfg) -> RunSpec:
    """Every check a training run needs before it builds anything; returns what the config resolves to."""
    try:
        require_int("seed", cfg.seed, 0)
        model = model_spec(cfg)
        loss = loss_spec(cfg.loss)
        train = _check_train(cfg)
        optim = _check_optim(cfg.optim)
        validate_eval_config(cfg)
        _check_hardware(cfg.hardware)
        _check_image_decode(cfg)
        _check_logger(cfg.logger)
        _check_resume(cfg.get("resume"))
        _check_resume_changes(cfg.get("resume_changes", "refuse"))
        _check_init_weights(cfg.get("init_weights"))
        _check_dataset_sizes(cfg.dataset)
        data = data_spec(cfg.dataset)
    except (ValueError, FileNotFoundError) as error:
        raise ConfigError(str(error)) from error
    return RunSpec(model=model, data=data, train=train, optim=optim, loss=loss)


def validate_eval_config(cfg) -> None:
    """Checks of ``eval`` (of evaluate.py's config, or of a training config): the batch size, the fused
    levels and the similarity's kernel (missing from configs written before it existed: auto)."""
    require_int("eval.batch_size", cfg.eval.batch_size, 1, why="images or captions encoded at once")
    require_int_list("eval.levels", cfg.eval.get("levels"), 1, optional=True)
    check_kernel_choice(cfg.eval.get("kernel", "auto"))


def _check_train(cfg) -> TrainSpec:
    train = cfg.train
    require_int("train.batch_size", train.batch_size, 2, why="the loss needs negatives in the batch")
    require_int("train.accumulate", train.accumulate, 1, why="GradCache chunks of train.batch_size")
    require_int("train.epochs", train.epochs, 1)
    require_int("train.max_steps", train.max_steps, 1, optional=True)
    require_int("train.freeze_epochs", train.freeze_epochs, 0)
    require_int("train.log_every", train.log_every, 1, why="optimizer steps between train/* metrics")
    require_int("train.early_stop", train.early_stop, 1, optional=True,
                why="validations without a better train.monitor before training stops")
    require_int("train.limit_batches", train.limit_batches, 1, optional=True, why="batches an epoch")
    require_int("train.overfit_batches", train.overfit_batches, 0,
                why="batches of the first images (one caption each) trained on; 0: off")
    require_int("train.profile_steps", train.profile_steps, 0, why="optimizer steps traced by torch.profiler; 0: off")
    for flag, meaning in (("dropout", "false: no dropout or drop path"),
                          ("freeze_stage_norms", "true: the tapped stages' norms freeze with the backbones, as HAT's")):
        if not isinstance(train[flag], bool):
            raise ConfigError(f"train.{flag}={train[flag]!r} must be true or false ({meaning})")
    names, higher_is_better = monitor_terms(train.monitor, len(cfg.alignment.levels))
    return TrainSpec(train.epochs, train.max_steps, train.batch_size, train.accumulate, train.freeze_epochs,
                     train.log_every, str(train.monitor), tuple(names), higher_is_better, train.early_stop,
                     train.limit_batches, train.overfit_batches, train.profile_steps, train.dropout,
                     train.freeze_stage_norms)


def _check_optim(cfg) -> OptimSpec:
    """The optimizer, its schedule and its rate scales (see conf/optim/hat.yaml)."""
    if cfg.name not in OPTIMIZERS:
        raise ConfigError(f"optim.name={cfg.name!r} is not one of {tuple(OPTIMIZERS)}")
    if cfg.schedule not in SCHEDULES:
        raise ConfigError(f"optim.schedule={cfg.schedule!r} is not one of {SCHEDULES}")
    warmup_steps = require_int("optim.warmup_steps", cfg.warmup_steps, 0, why="optimizer steps of linear warmup")
    warmup_epochs = require_number("optim.warmup_epochs", cfg.warmup_epochs, 0, why="epochs of linear warmup")
    if warmup_steps and warmup_epochs:
        raise ConfigError(f"optim.warmup_steps={warmup_steps} and optim.warmup_epochs={warmup_epochs}: "
                          "give the warmup in steps or in epochs, and set the other to 0")
    return OptimSpec(
        name=cfg.name,
        lr=require_number("optim.lr", cfg.lr, 0, exclusive=True),
        weight_decay=require_number("optim.weight_decay", cfg.weight_decay, 0),
        schedule=cfg.schedule,
        warmup_steps=warmup_steps,
        warmup_epochs=warmup_epochs,
        step_size=require_int("optim.step_size", cfg.step_size, 1, why="epochs between learning-rate decays"),
        gamma=require_number("optim.gamma", cfg.gamma, 0, exclusive=True, why="the factor of each learning-rate decay"),
        min_lr_ratio=require_number("optim.min_lr_ratio", cfg.min_lr_ratio, 0, maximum=1,
                                    why="the cosine's final rate as a fraction of optim.lr"),
        backbone_lr_scale=require_number("optim.backbone_lr_scale", cfg.backbone_lr_scale, 0, exclusive=True,
                                         why="the backbones' top block rate as a fraction of optim.lr"),
        layer_decay=require_number("optim.layer_decay", cfg.layer_decay, 0, exclusive=True, maximum=1,
                                   why="each backbone block's rate as a fraction of the block above"),
        grad_clip=require_number("optim.grad_clip", cfg.grad_clip, 0, exclusive=True, why="max gradient norm",
                                 optional=True),
    )


def monitor_terms(monitor: str, num_levels: int | None) -> tuple[list[str], bool]:
    """Parse ``train.monitor`` ("val/i2t_r1+val/t2i_r1"): (metric names summed, higher is better);
    ``val/levelK/...`` names need ``1 <= K <= num_levels`` (any K >= 1 for None)."""
    names = [term.strip() for term in str(monitor).split("+")]
    allowed = f"'+'-separated names val/METRIC or val/levelK/METRIC with METRIC in {METRIC_KEYS}"
    directions = set()
    for name in names:
        parts = name.split("/")
        level_ok = len(parts) == 2 or (
            len(parts) == 3 and parts[1].startswith("level") and parts[1][5:].isdigit()
            and 1 <= int(parts[1][5:]) and (num_levels is None or int(parts[1][5:]) <= num_levels)
        )
        if parts[0] != "val" or not level_ok or parts[-1] not in METRIC_KEYS:
            raise ConfigError(f"train.monitor={monitor!r}: {name!r} is not a validation metric; expected {allowed}")
        directions.add(parts[-1] not in RANK_KEYS)
    if len(directions) != 1:
        raise ConfigError(f"train.monitor={monitor!r} mixes recalls (higher is better) with ranks (lower is better)")
    return names, directions.pop()


def monitor_direction(monitor: str) -> str:
    """``maximize`` for a ``train.monitor`` of recalls, ``minimize`` for one of ranks: the direction
    a tuner of the value train.py returns must take (``hparams_search=optuna`` reads it)."""
    return "maximize" if monitor_terms(monitor, None)[1] else "minimize"


def _check_hardware(cfg) -> None:
    if cfg.device not in DEVICES:
        raise ConfigError(f"hardware.device={cfg.device!r} is not one of {DEVICES}")
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"hardware.precision={cfg.precision!r} is not one of {PRECISIONS}")
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("hardware.device=cuda but no CUDA GPU is available; use hardware=auto or hardware=cpu")
    require_int("hardware.num_workers", cfg.num_workers, 0, why="data-loading processes; 0 loads in the main process")
    if "threads" in cfg:
        check_threads_setting(cfg.threads)
    require_number("hardware.dist_timeout", cfg.dist_timeout, 0, exclusive=True,
                   why="seconds a collective waits for a stopped process")
    if cfg.get("compile_mode", "default") not in COMPILE_MODES:
        raise ConfigError(f"hardware.compile_mode={cfg.compile_mode!r} is not one of {COMPILE_MODES}")
    if cfg.image_decode not in IMAGE_DECODE:
        raise ConfigError(f"hardware.image_decode={cfg.image_decode!r} is not one of {IMAGE_DECODE}")


def _check_image_decode(cfg) -> None:
    """The device-decode path reads JPEG files, which a generated dataset does not have."""
    if cfg.hardware.image_decode == "device" and cfg.dataset.name == "shapes":
        raise ConfigError(
            "hardware.image_decode=device decodes JPEG files from disk, but dataset=shapes draws its images "
            "in memory; use hardware.image_decode=cpu or a dataset on disk (dataset=f30k|coco)"
        )


def _check_logger(cfg) -> None:
    if cfg.backend not in LOGGERS:
        raise ConfigError(
            f"logger.backend={cfg.backend!r} is not one of {LOGGERS} (choose logger=none or logger=wandb)"
        )
    if cfg.backend != "wandb":
        return
    if cfg.mode is not None and cfg.mode not in MODES:
        raise ConfigError(f"logger.mode={cfg.mode!r} is not one of {MODES} (or null: $WANDB_MODE, else by login)")
    if cfg.mode is None and os.environ.get("WANDB_MODE"):
        normalise_mode(os.environ["WANDB_MODE"], "WANDB_MODE")
    if not cfg.project:
        raise ConfigError("logger.project is empty: W&B needs a project name")
    require_number("logger.init_timeout", cfg.init_timeout, 0, exclusive=True, why="seconds to reach the server")
    for key, minimum in (("queries", 0), ("top_k", 1), ("thumbnail", 8), ("curve_max_k", 1), ("attention_pairs", 0),
                         ("attention_cell", 16), ("attention_words", 1)):
        require_int(f"logger.examples.{key}", cfg.examples[key], minimum)


def _check_dataset_sizes(cfg) -> None:
    """The counts and sizes of ``dataset``: captions per image, the generated splits, the validation
    subset, the test folds and the training crops' area range."""
    if cfg.name == "shapes":
        require_int("dataset.captions_per_image", cfg.captions_per_image, 1, maximum=MAX_CAPTIONS_PER_IMAGE,
                    why=f"shapes writes at most {MAX_CAPTIONS_PER_IMAGE} distinct captions per image")
        for key in ("num_train", "num_val", "num_test"):
            require_int(f"dataset.{key}", cfg[key], 1, why="images generated for the split")
        require_int("dataset.render_size", cfg.render_size, 1, why="pixels the images are drawn at")
    require_int("dataset.val_images", cfg.get("val_images"), 1, why="the first N validation images", optional=True)
    test_images = require_int("dataset.test_images", cfg.get("test_images"), 1, optional=True,
                              why="the first N test images")
    protocols = to_plain(cfg.get("test_protocols"))
    if protocols is not None and not isinstance(protocols, dict):
        raise ConfigError(f"dataset.test_protocols={show(protocols)} must be null or a mapping NAME: FOLDS")
    for name, folds in (protocols or {}).items():
        require_int(f"dataset.test_protocols.{name}", folds, 1, why="equal folds of the test images")
        if test_images is not None and test_images % folds:
            raise ConfigError(f"dataset.test_images={test_images} must be a multiple of {folds}: "
                              f"dataset.test_protocols.{name} splits the test images into {folds} equal folds")
    _check_crop_scale(cfg.train_crop_scale)


def _check_crop_scale(value) -> None:
    """``dataset.train_crop_scale``: [MIN, MAX] fractions of the image area a training crop covers."""
    scale = to_plain(value)
    if not (isinstance(scale, list) and len(scale) == 2):
        raise ConfigError(f"dataset.train_crop_scale={show(scale)} must be [MIN, MAX] (fractions of the image area)")
    low, high = (require_number(f"dataset.train_crop_scale[{k}]", bound, 0, exclusive=True, maximum=1)
                 for k, bound in enumerate(scale))
    if low > high:
        raise ConfigError(f"dataset.train_crop_scale={scale} must be [MIN, MAX] with MIN <= MAX")


def _check_init_weights(path) -> None:
    if path is not None and not Path(str(path)).exists():
        raise ConfigError(
            f"init_weights={path}: no such file or folder (expected a .pt checkpoint, an exported folder "
            f"with model.safetensors, or a HAT release .ckpt)"
        )


RESUME_CHANGES = ("refuse", "allow")  # what a resumed run does when its data differ from its checkpoint's


def _check_resume_changes(value) -> None:
    if value not in RESUME_CHANGES:
        raise ConfigError(f"resume_changes={value!r} is not one of {RESUME_CHANGES} (what a resumed run does when "
                          f"its data differ from its checkpoint's)")


def _check_resume(resume) -> None:
    if resume in (None, "auto"):
        return
    if not Path(str(resume)).is_file():
        raise ConfigError(f"resume={resume}: no such checkpoint file (expected auto, null, or a path to a .pt file)")
