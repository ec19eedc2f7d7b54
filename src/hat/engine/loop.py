"""The training run: build everything from a config, train with validation every epoch, test the best.

One function, :func:`train`, reads top to bottom: checks, data, model, optimisation state,
optional resume, the epoch loop (freeze schedule, steps, validation, checkpoints), and the final
test of the best checkpoint. What a checkpoint holds is defined in :mod:`hat.engine.checkpoint`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from hat.config import ConfigError, monitor_terms, to_plain, validate_train_config
from hat.data.build import build_splits
from hat.data.datasets import CaptionCollator, EpochShuffleSampler, PairDataset
from hat.data.device_decode import EncodedTrainCrop, read_jpeg_bytes
from hat.data.transforms import train_transform
from hat.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from hat.engine.distributed import (
    any_rank,
    barrier,
    from_environment,
    gather_objects,
    gather_with_grad,
    init_process_group,
    shutdown_process_group,
)
from hat.engine.evaluation import protocol_tables, score_split
from hat.engine.preemption import EXIT_PREEMPTED, Preempted, PreemptionSignals
from hat.engine.runtime import resolve_runtime
from hat.engine.step import training_step
from hat.engine.throughput import ThroughputMeter
from hat.losses import build_loss
from hat.models.hat import build_model
from hat.models.text_encoder import build_tokenizer
from hat.models.weight_sources import load_weights, open_weight_source
from hat.provenance import provenance
from hat.results import format_tables, write_results
from hat.tracking import NullTracker, build_tracker

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """Counters a resumed run continues from."""

    epoch: int = 0  # finished epochs
    step: int = 0  # optimizer steps
    batch: int = 0  # batches done in the current (unfinished) epoch
    best_metric: float | None = None
    best_epoch: int | None = None


def train(cfg, run_dir: Path) -> dict[str, float]:
    """Train as ``cfg`` says, writing checkpoints, ``metrics.jsonl`` and ``results.json`` to ``run_dir``.

    Returns the test metrics of the best checkpoint (flat names, e.g. ``test/rsum``).
    """
    validate_train_config(cfg)
    config = to_plain(cfg)
    monitor_names, higher_is_better = monitor_terms(cfg.train.monitor, len(cfg.alignment.levels))
    ranks = from_environment()
    torch.manual_seed(cfg.seed)
    runtime = resolve_runtime(cfg.hardware, ranks.local_rank)
    init_process_group(ranks, runtime.device.type)
    log.info(
        "device %s, precision %s, process %d of %d", runtime.device, runtime.precision, ranks.rank, ranks.world_size
    )

    splits = build_splits(cfg.dataset, cfg.seed)
    accumulate = cfg.train.get("accumulate", 1)
    global_batch = cfg.train.batch_size * accumulate * ranks.world_size
    if splits["train"].num_pairs < global_batch:
        raise ConfigError(
            f"the global batch (train.batch_size={cfg.train.batch_size} x train.accumulate x "
            f"{ranks.world_size} processes = {global_batch}) exceeds the {splits['train'].num_pairs} "
            f"training pairs of dataset={cfg.dataset.name}"
        )
    log.info("dataset %s: %s", cfg.dataset.name, {name: len(split) for name, split in splits.items()})
    model = build_model(cfg).to(runtime.device)
    # The checkpoint records the text architecture actually built, so evaluate.py can rebuild
    # the model offline (encoder.pretrained=false) whatever hub name or directory it came from.
    config["encoder"]["text"]["config"] = model.text_encoder.model.config.to_diff_dict()
    if cfg.get("init_weights"):
        load_weights(open_weight_source(Path(cfg.init_weights)), model)
        log.info("initial weights from %s", cfg.init_weights)
    model.set_grad_checkpointing(bool(cfg.hardware.get("grad_checkpointing", False)))
    model.feature_gather = gather_with_grad  # global negatives: every rank scores the whole global batch
    torch.manual_seed(cfg.seed + ranks.rank)  # same initial weights, a dropout stream per rank
    # One caption width for all batches when chunks or processes exchange caption features, and
    # when compiled (one shape, one graph).
    collator = CaptionCollator(
        build_tokenizer(cfg.encoder.text),
        cfg.encoder.text.max_length,
        pad_to_max_length=ranks.enabled or accumulate > 1 or runtime.compile,
    )
    image_size = cfg.encoder.image.image_size
    pairs, sampler, loader = _train_loader(cfg, splits["train"], collator, ranks, runtime)

    loss_fn = build_loss(cfg.loss).to(runtime.device)
    parameters = list(chain(model.parameters(), loss_fn.parameters()))
    optimizer = torch.optim.Adam(parameters, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.optim.step_size, gamma=cfg.optim.gamma)
    scaler = runtime.grad_scaler()

    def wrap_for_training() -> torch.nn.Module:
        """The model as the step calls it: DDP across processes (which syncs exactly the parameters
        that require grad now, so it is rebuilt when the freeze schedule changes them), compiled on GPUs."""
        wrapped = model
        if ranks.enabled:
            device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
            wrapped = DistributedDataParallel(model, device_ids=device_ids)
        return runtime.compiled(wrapped)

    log.info("model: %.1fM parameters", sum(p.numel() for p in model.parameters()) / 1e6)

    checkpoints = run_dir / "checkpoints"
    progress = Progress()
    resume_path = _resume_path(cfg.get("resume"), checkpoints)
    tracker_run_id = None
    if resume_path is not None:
        state = load_checkpoint(resume_path)
        model.load_state_dict(state["model"])
        loss_fn.load_state_dict(state["loss"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        progress = Progress(
            state["epoch"], state["step"], state["batch"], state["best_metric"], state["best_epoch"]
        )
        restore_rng_state(_own_rng_state(state["rng"], ranks))
        tracker_run_id = state.get("tracker_run_id")
        log.info(
            "resumed from %s at epoch %d, batch %d, step %d", resume_path, progress.epoch, progress.batch, progress.step
        )

    def checkpoint_state() -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": model.state_dict(),
            "loss": loss_fn.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": progress.epoch,
            "step": progress.step,
            "batch": progress.batch,
            "best_metric": progress.best_metric,
            "best_epoch": progress.best_epoch,
            "rng": gather_objects(capture_rng_state()),  # one entry per rank
            "config": config,
            "tracker_run_id": tracker.run_id,
        }

    tracker = build_tracker(cfg.logger, run_dir, config, tracker_run_id) if ranks.is_main else NullTracker()

    def save_checkpoint_on_main(state: dict, path: Path) -> None:
        """Rank 0 writes; every rank waits for it, so a following read sees the file."""
        if ranks.is_main:
            save_checkpoint(state, path)
        barrier()

    exit_code = 1  # until the run returns
    try:
        with PreemptionSignals() as signals:
            max_steps = cfg.train.max_steps or math.inf
            step_fn, wrapped_frozen = None, None
            while progress.epoch < cfg.train.epochs and progress.step < max_steps:
                epoch = progress.epoch
                frozen = epoch < cfg.train.freeze_epochs
                if frozen != wrapped_frozen:
                    model.set_encoders_frozen(frozen)
                    step_fn, wrapped_frozen = wrap_for_training(), frozen
                loss_fn.set_epoch(epoch)
                model.train()
                pairs.set_epoch(epoch)
                sampler.set_epoch(epoch, skip_batches=progress.batch)
                bar = tqdm(loader, desc=f"epoch {epoch}", leave=False, mininterval=1.0, dynamic_ncols=True,
                           disable=None if ranks.is_main else True)
                meter = ThroughputMeter(runtime.device)
                for batch in bar:
                    meter.batch_arrived()
                    optimizer.zero_grad(set_to_none=True)
                    loss = training_step(model, step_fn, loss_fn, batch, runtime, scaler, accumulate)
                    if cfg.optim.grad_clip:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(parameters, cfg.optim.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                    progress.step += 1
                    progress.batch += 1
                    meter.step_done(len(batch["images"]) * ranks.world_size)
                    if progress.step % cfg.train.log_every == 0:
                        rates = meter.read_and_reset()
                        bar.set_postfix(loss=f"{loss.item():.3f}", samples_per_s=f"{rates['train/samples_per_s']:.1f}")
                        tracker.log_metrics(
                            {
                                "train/loss": loss.item(),
                                "train/lr": optimizer.param_groups[0]["lr"],
                                **rates,
                                "train/epoch": epoch,
                                "train/encoders_frozen": float(frozen),
                            },
                            progress.step,
                        )
                    if any_rank(signals.requested is not None, runtime.device):
                        bar.close()
                        save_checkpoint_on_main(checkpoint_state(), checkpoints / "last.pt")
                        tracker.log_metrics({"train/preempted_at_step": progress.step}, progress.step)
                        raise Preempted(signals.requested or "a signal on another rank", progress.step)
                    if progress.step >= max_steps:
                        break
                bar.close()
                if progress.batch >= sampler.batches_per_epoch:
                    scheduler.step()
                    progress.epoch += 1
                    progress.batch = 0

                sims = score_split(model, splits["val"], collator, image_size, runtime, cfg.eval.batch_size, ranks)
                val = protocol_tables(sims, "val", splits["val"].captions_per_image, None)
                value = sum(val[name] for name in monitor_names)
                tracker.log_metrics({**val, "val/monitor": value, "train/epoch": epoch}, progress.step)
                tracker.log_examples(sims, splits["val"], "val", progress.step)
                log.info(
                    "epoch %d step %d: val/rsum %.2f, %s %.2f", epoch, progress.step, val["val/rsum"], cfg.train.monitor, value
                )
                improved = progress.best_metric is None or (
                    value > progress.best_metric if higher_is_better else value < progress.best_metric
                )
                if improved:
                    progress.best_metric, progress.best_epoch = value, epoch
                state = checkpoint_state()
                if improved:
                    save_checkpoint_on_main(state, checkpoints / "best.pt")
                save_checkpoint_on_main(state, checkpoints / "last.pt")

            best_path = checkpoints / "best.pt"
            model.load_state_dict(load_checkpoint(best_path)["model"])
            protocols = to_plain(cfg.dataset.get("test_protocols"))
            sims = score_split(model, splits["test"], collator, image_size, runtime, cfg.eval.batch_size, ranks)
            test = protocol_tables(sims, "test", splits["test"].captions_per_image, protocols)
            tracker.log_metrics(test, progress.step)
            tracker.log_summary({**test, "best/monitor": progress.best_metric, "best/epoch": progress.best_epoch})
            if ranks.is_main:
                print(
                    f"\ntest split, best checkpoint (epoch {progress.best_epoch}):\n"
                    + format_tables(test, "test", model.num_levels, protocols)
                )
                write_results(
                    run_dir / "results.json",
                    test,
                    checkpoint=str(best_path),
                    best_epoch=progress.best_epoch,
                    monitor={cfg.train.monitor: progress.best_metric},
                    provenance=provenance(config),
                )
                tracker.log_file(run_dir / "results.json")
            exit_code = 0
            return test
    except Preempted:
        exit_code = EXIT_PREEMPTED
        raise
    finally:
        tracker.finish(exit_code)
        shutdown_process_group()


def _train_loader(cfg, split, collator: CaptionCollator, ranks, runtime):
    """``(pairs, sampler, loader)`` of the training split: each step's batch is this process's
    ``train.batch_size x train.accumulate`` pairs, augmented as ``dataset`` says; with
    ``hardware.image_decode=device`` the workers only read the files and draw the crops."""
    augmentation = (cfg.encoder.image.image_size, cfg.dataset.train_crop_scale, cfg.dataset.train_hflip)
    if cfg.hardware.get("image_decode", "cpu") == "device":
        pairs = PairDataset(split, EncodedTrainCrop(*augmentation), cfg.seed, read=read_jpeg_bytes)
    else:
        pairs = PairDataset(split, train_transform(*augmentation), cfg.seed)
    step_batch = cfg.train.batch_size * cfg.train.get("accumulate", 1)
    sampler = EpochShuffleSampler(len(pairs), cfg.seed, step_batch, ranks.rank, ranks.world_size)
    loader = DataLoader(
        pairs,
        batch_size=step_batch,
        sampler=sampler,
        collate_fn=collator,
        num_workers=runtime.num_workers,
        pin_memory=runtime.pin_memory,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    return pairs, sampler, loader


def _own_rng_state(states: list[dict], ranks) -> dict:
    """This rank's saved RNG state; a run resumed on another number of processes reseeds its extra ranks."""
    if len(states) == ranks.world_size:
        return states[ranks.rank]
    log.warning("the checkpoint holds RNG states of %d processes, this run has %d", len(states), ranks.world_size)
    return states[min(ranks.rank, len(states) - 1)]


def _resume_path(resume, checkpoints: Path) -> Path | None:
    """``auto``: ``<run dir>/checkpoints/last.pt`` when it exists; a path: that file; null: none."""
    if resume is None:
        return None
    if resume == "auto":
        last = checkpoints / "last.pt"
        if last.is_file():
            return last
        log.info("resume=auto: no checkpoint at %s, starting fresh", last)
        return None
    return Path(str(resume))
