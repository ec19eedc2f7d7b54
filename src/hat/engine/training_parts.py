"""Everything a training is made of, built from its config: data, model, loader, loss, optimisation."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from hat.checks import ConfigError
from hat.data.build import build_splits
from hat.data.datasets import CaptionCollator, EpochShuffleSampler, PairDataset
from hat.data.device_decode import EncodedTrainCrop, read_jpeg_bytes
from hat.data.records import CaptionedImages
from hat.data.transforms import train_transform
from hat.engine.checkpoint import TrainingState
from hat.engine.preemption import ignore_stop_signals
from hat.losses import build_loss
from hat.models.hat import HATModel, build_model
from hat.models.spec import ModelSpec
from hat.models.text_encoder import build_tokenizer
from hat.models.weight_sources import load_weights, open_weight_source
from hat.optim.build import build_optimizer
from hat.run_spec import RunSpec
from hat.runtime import Runtime
from hat.tracking import JsonlTracker, MultiTracker, Tracker

log = logging.getLogger(__name__)


@dataclass
class TrainingParts:
    """The built pieces of a training: ``splits`` (train, val, test), the caption ``collator``, the
    training ``pairs``, their ``sampler`` and ``loader``, the ``state`` the steps change, and the
    ``parameters`` the optimizer (and gradient clipping) see."""

    splits: dict[str, CaptionedImages]
    collator: CaptionCollator
    pairs: PairDataset
    sampler: EpochShuffleSampler
    loader: DataLoader
    state: TrainingState
    parameters: list[torch.nn.Parameter]


def build_training(cfg, spec: RunSpec, config: dict, ranks, runtime: Runtime) -> TrainingParts:
    """Build a training from a validated ``cfg``; ``config`` (the plain run config a checkpoint
    stores) gets the text architecture actually built, so the model can be rebuilt offline."""
    torch.manual_seed(cfg.seed)
    splits = build_splits(spec.data, cfg.seed)
    accumulate = spec.train.accumulate
    _check_batch_fits(spec, splits["train"], ranks.world_size)
    log.info("dataset %s: %s", spec.data.name, {name: len(split) for name, split in splits.items()})
    model = _build_model(cfg, spec.model, config, runtime)
    torch.manual_seed(cfg.seed + ranks.rank)  # same initial weights, a dropout stream per rank
    # One caption width for all batches when chunks or processes exchange caption features, and
    # when compiled (one shape, one graph).
    collator = CaptionCollator(build_tokenizer(spec.model.text), spec.model.text.max_length,
                               pad_to_max_length=ranks.enabled or accumulate > 1 or runtime.compile)
    pairs, sampler, loader = _train_loader(cfg, spec, splits["train"], collator, ranks, runtime)
    loss = build_loss(spec.loss).to(runtime.device)
    parameters = list(chain(model.parameters(), loss.parameters()))
    steps_per_epoch = sampler.batches_per_epoch
    total_steps = min(spec.train.epochs * steps_per_epoch, spec.train.max_steps or math.inf)
    optimizer, scheduler = build_optimizer(spec.optim, model, loss, steps_per_epoch, total_steps)
    state = TrainingState(model, loss, optimizer, scheduler, runtime.grad_scaler())
    return TrainingParts(splits, collator, pairs, sampler, loader, state, parameters)


def _check_batch_fits(spec: RunSpec, train: CaptionedImages, processes: int) -> None:
    """The global batch (``train.batch_size`` x chunks x processes) fits the training pairs (with
    ``train.overfit_batches``: the training images, one caption each)."""
    batch_size, accumulate = spec.train.batch_size, spec.train.accumulate
    global_batch = batch_size * accumulate * processes
    overfit = bool(spec.train.overfit_batches)  # trains on one caption of each image
    available = len(train) if overfit else train.num_pairs
    what = "images (train.overfit_batches takes one caption of each)" if overfit else "pairs"
    if available < global_batch:
        raise ConfigError(
            f"the global batch (train.batch_size={batch_size} x train.accumulate={accumulate} x "
            f"{processes} processes = {global_batch}) exceeds the {available} training {what} of "
            f"dataset={spec.data.name}"
        )


def _build_model(cfg, spec: ModelSpec, config: dict, runtime: Runtime) -> HATModel:
    model = build_model(spec).to(runtime.device)
    config["encoder"]["text"]["config"] = model.text_encoder.model.config.to_diff_dict()
    if cfg.get("init_weights"):
        load_weights(open_weight_source(Path(cfg.init_weights)), model)
        log.info("initial weights from %s", cfg.init_weights)
    model.set_grad_checkpointing(bool(cfg.hardware.grad_checkpointing))
    log.info("model: %.1fM parameters", sum(p.numel() for p in model.parameters()) / 1e6)
    return model


def _train_loader(cfg, spec: RunSpec, split: CaptionedImages, collator: CaptionCollator, ranks, runtime: Runtime):
    """``(pairs, sampler, loader)`` of the training split: each step's batch is this process's
    ``train.batch_size x train.accumulate`` pairs, augmented as ``dataset`` says; with
    ``hardware.image_decode=device`` the workers only read the files and draw the crops. An epoch
    is cut at ``train.limit_batches``; ``train.overfit_batches`` trains on that many batches' worth
    of the first images only, one caption each (two captions of one image in a batch would be each
    other's negatives: the loss could not fall towards 0)."""
    train = spec.train
    augmentation = (spec.model.image.image_size, spec.data.train_crop_scale, spec.data.train_hflip)
    overfit = bool(train.overfit_batches)
    if cfg.hardware.image_decode == "device":
        pairs = PairDataset(split, EncodedTrainCrop(*augmentation), cfg.seed, read=read_jpeg_bytes,
                            first_captions=overfit)
    else:
        pairs = PairDataset(split, train_transform(*augmentation), cfg.seed, first_captions=overfit)
    step_batch = train.batch_size * train.accumulate
    size = len(pairs)
    if overfit:  # the same first images every epoch, reshuffled
        size = min(size, train.overfit_batches * step_batch * ranks.world_size)
    sampler = EpochShuffleSampler(size, cfg.seed, step_batch, ranks.rank, ranks.world_size, train.limit_batches)
    loader = DataLoader(
        pairs,
        batch_size=step_batch,
        sampler=sampler,
        collate_fn=collator,
        num_workers=runtime.num_workers,
        pin_memory=runtime.pin_memory,
        worker_init_fn=ignore_stop_signals,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    return pairs, sampler, loader


def build_tracker(cfg, run_dir: Path, config: dict, resume_id: str | None = None, start_step: int = 0) -> Tracker:
    """Local ``metrics.jsonl`` always, plus W&B for ``logger.backend=wandb`` (``cfg`` is ``logger``).

    ``config`` is the resolved run config (a plain dict) the W&B run records; ``resume_id`` the W&B
    run a resumed training continues; ``start_step`` the step it starts or resumes at.
    """
    trackers: list[Tracker] = [JsonlTracker(run_dir / "metrics.jsonl", start_step)]
    if cfg.backend == "wandb":
        from hat.wandb_tracker import WandbTracker  # wandb is slow to import: only when used

        trackers.append(WandbTracker(cfg, run_dir, config, resume_id))
    return MultiTracker(trackers)
