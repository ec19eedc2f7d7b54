"""The training run: build everything from a config, train with validation every epoch, test the best.

:func:`train` checks the config, takes the run folder (:mod:`hat.engine.run_folder`) and drives a
:class:`TrainingRun` through its verbs: ``resume``, then epochs of ``train_epoch`` and
``validate``, then ``test``. What a checkpoint holds is defined in :mod:`hat.engine.checkpoint`.

Nothing is lost on a stop: a stop signal ends the run at the next safe point with ``last``
written (:mod:`hat.engine.preemption`); a batch that cannot be loaded writes ``last`` at the step
reached before the error goes on; a non-finite loss stops before it reaches the weights, keeping
the ``last`` already written. A validation interrupted by a signal is run again on resume, and a
resumed run whose training is done goes straight to the test.
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
from hat.data.problems import DatasetError
from hat.data.records import BadImageError
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
    agree,
    barrier,
    from_environment,
    gather_objects,
    init_process_group,
    shutdown_process_group,
    timeout_error,
)
from hat.engine.evaluation import protocol_tables, score_split
from hat.engine.preemption import (
    EXIT_PREEMPTED,
    Preempted,
    PreemptionSignals,
    StopRequested,
    ignore_stop_signals,
    iterate_workers_safely,
)
from hat.engine.resume import carry_best, resume_path, settings_not_applied
from hat.engine.run_folder import RunFolder
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


TRAINING_STATE = ("loss", "optimizer", "scheduler", "scaler", "epoch", "step", "batch", "best_metric", "best_epoch",
                  "rng")  # what resuming needs beyond the model


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the step that produced it was not applied to the weights."""


@dataclass
class Progress:
    """Counters a resumed run continues from."""

    epoch: int = 0  # finished epochs
    step: int = 0  # optimizer steps
    batch: int = 0  # batches done in the current (unfinished) epoch
    best_metric: float | None = None
    best_epoch: int | None = None
    validated_step: int = 0  # optimizer steps at the last finished validation


@dataclass
class TrainOutcome:
    """What a finished training returns: the test metrics of the best checkpoint (flat names,
    e.g. ``test/rsum``) and the validation monitor that picked it (what a sweeper should tune on)."""

    test: dict[str, float]
    best_monitor: float | None
    best_epoch: int | None


def train(cfg, run_dir: Path, signals: PreemptionSignals | None = None) -> TrainOutcome:
    """Train as ``cfg`` says, writing checkpoints, ``metrics.jsonl`` and ``results.json`` to ``run_dir``.

    ``signals``: the entry point's active :class:`PreemptionSignals` (so that its handlers stay
    until the process exits); without one, the run installs its own for its duration.
    Raises :class:`Preempted` after writing ``last`` when a stop signal arrives.
    """
    validate_train_config(cfg)
    ranks = from_environment()
    folder = RunFolder(run_dir)
    if ranks.is_main:
        folder.acquire(cfg.get("resume"))
    try:
        if signals is not None:
            return _run(cfg, run_dir, ranks, signals)
        with PreemptionSignals() as own_signals:
            return _run(cfg, run_dir, ranks, own_signals)
    finally:
        folder.release()


def _run(cfg, run_dir: Path, ranks, signals: PreemptionSignals) -> TrainOutcome:
    runtime = resolve_runtime(cfg.hardware, ranks.local_rank)
    timeout_s = float(cfg.hardware.get("dist_timeout", 1800))
    init_process_group(ranks, runtime.device.type, timeout_s)
    exit_code = 1  # until the run returns
    run = None
    try:
        run = TrainingRun(cfg, run_dir, ranks, runtime, signals)
        outcome = run.fit()
        exit_code = 0
        return outcome
    except Preempted:
        exit_code = EXIT_PREEMPTED
        raise
    except RuntimeError as error:
        timeout = timeout_error(error, ranks, timeout_s)
        if timeout is None:
            raise
        raise timeout from error
    finally:
        if run is not None:
            run.tracker.finish(exit_code)
        shutdown_process_group()


class TrainingRun:
    """One training: data, model, optimisation state, counters and the tracker, built from ``cfg``."""

    def __init__(self, cfg, run_dir: Path, ranks, runtime, signals: PreemptionSignals) -> None:
        self.cfg, self.ranks, self.runtime, self.signals = cfg, ranks, runtime, signals
        self.run_dir, self.checkpoints = run_dir, run_dir / "checkpoints"
        self.config = to_plain(cfg)
        self.monitor_names, self.higher_is_better = monitor_terms(cfg.train.monitor, len(cfg.alignment.levels))
        self.max_steps = cfg.train.max_steps or math.inf
        self.accumulate = cfg.train.get("accumulate", 1)
        log.info("device %s, precision %s, process %d of %d", runtime.device, runtime.precision, ranks.rank,
                 ranks.world_size)
        torch.manual_seed(cfg.seed)
        self.splits = build_splits(cfg.dataset, cfg.seed)
        self._check_batch_fits()
        self._build_model()
        torch.manual_seed(cfg.seed + ranks.rank)  # same initial weights, a dropout stream per rank
        # One caption width for all batches when chunks or processes exchange caption features, and
        # when compiled (one shape, one graph).
        self.collator = CaptionCollator(
            build_tokenizer(cfg.encoder.text),
            cfg.encoder.text.max_length,
            pad_to_max_length=ranks.enabled or self.accumulate > 1 or runtime.compile,
        )
        self.pairs, self.sampler, self.loader = _train_loader(cfg, self.splits["train"], self.collator, ranks, runtime)
        self.loss_fn = build_loss(cfg.loss).to(runtime.device)
        self.parameters = list(chain(self.model.parameters(), self.loss_fn.parameters()))
        self.optimizer = torch.optim.Adam(self.parameters, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=cfg.optim.step_size, gamma=cfg.optim.gamma
        )
        self.scaler = runtime.grad_scaler()
        self.progress = Progress()
        self._saved_step: int | None = None  # the step this run's `last` holds
        tracker_run_id = self.resume()
        self.tracker = (
            build_tracker(cfg.logger, run_dir, self.config, tracker_run_id, self.progress.step)
            if ranks.is_main else NullTracker()
        )
        self._step_fn, self._wrapped_frozen = None, None

    def _check_batch_fits(self) -> None:
        global_batch = self.cfg.train.batch_size * self.accumulate * self.ranks.world_size
        if self.splits["train"].num_pairs < global_batch:
            raise ConfigError(
                f"the global batch (train.batch_size={self.cfg.train.batch_size} x train.accumulate x "
                f"{self.ranks.world_size} processes = {global_batch}) exceeds the {self.splits['train'].num_pairs} "
                f"training pairs of dataset={self.cfg.dataset.name}"
            )
        log.info("dataset %s: %s", self.cfg.dataset.name, {name: len(split) for name, split in self.splits.items()})

    def _build_model(self) -> None:
        cfg = self.cfg
        self.model = build_model(cfg).to(self.runtime.device)
        # The checkpoint records the text architecture actually built, so evaluate.py can rebuild
        # the model offline (encoder.pretrained=false) whatever hub name or directory it came from.
        self.config["encoder"]["text"]["config"] = self.model.text_encoder.model.config.to_diff_dict()
        if cfg.get("init_weights"):
            load_weights(open_weight_source(Path(cfg.init_weights)), self.model)
            log.info("initial weights from %s", cfg.init_weights)
        self.model.set_grad_checkpointing(bool(cfg.hardware.get("grad_checkpointing", False)))
        log.info("model: %.1fM parameters", sum(p.numel() for p in self.model.parameters()) / 1e6)

    # -- checkpoints -------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The checkpoint of this moment (a collective: every rank contributes its RNG state)."""
        p = self.progress
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "loss": self.loss_fn.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": p.epoch,
            "step": p.step,
            "batch": p.batch,
            "best_metric": p.best_metric,
            "best_epoch": p.best_epoch,
            "validated_step": p.validated_step,
            "rng": gather_objects(capture_rng_state()),  # one entry per rank
            "config": self.config,
            "tracker_run_id": self.tracker.run_id,
        }

    def save(self, *names: str) -> None:
        """Write this moment's checkpoint under each of ``names``; rank 0 writes, every rank waits for it."""
        state = self.state_dict()
        if self.ranks.is_main:
            for name in names:
                save_checkpoint(state, self.checkpoints / name)
        barrier()
        self._saved_step = self.progress.step

    def resume(self) -> str | None:
        """Load ``resume``'s checkpoint if any; returns the W&B run id it continues (or None)."""
        path = resume_path(self.cfg.get("resume"), self.checkpoints)
        if path is None:
            return None
        state = load_checkpoint(path)
        missing = [key for key in TRAINING_STATE if key not in state]
        if missing:
            raise ConfigError(
                f"resume={path}: the checkpoint holds no training state ({', '.join(missing)} missing); "
                f"start from its weights with init_weights={path} instead"
            )
        self.model.load_state_dict(state["model"])
        self.loss_fn.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.progress = Progress(
            state["epoch"], state["step"], state["batch"], state["best_metric"], state["best_epoch"],
            state.get("validated_step", state["step"]),
        )
        restore_rng_state(_own_rng_state(state["rng"], self.ranks))
        if path == self.checkpoints / "last.pt":
            self._saved_step = self.progress.step
        if self.ranks.is_main:
            for line in settings_not_applied(state["config"], self.config):
                log.warning("resume: %s", line)
        self._keep_best(path)
        log.info("resumed from %s at epoch %d, batch %d, step %d", path, self.progress.epoch, self.progress.batch,
                 self.progress.step)
        return state.get("tracker_run_id")

    def _keep_best(self, path: Path) -> None:
        """Make sure the best checkpoint the counters speak of is in this run's folder: copied from the
        resumed checkpoint's folder, or, when there is none, chosen afresh by the next validation."""
        if self.progress.best_metric is None:
            return
        has_best = gather_objects(carry_best(path, self.checkpoints) if self.ranks.is_main else None)[0]
        if not has_best:
            log.warning("resume: no best.pt beside %s; the next validation chooses the best checkpoint afresh", path)
            self.progress.best_metric = self.progress.best_epoch = None
            self.progress.validated_step = -1

    # -- the verbs ---------------------------------------------------------------------------

    def fit(self) -> TrainOutcome:
        """Train (validating at every epoch's end and where training stops), then test the best."""
        while True:
            if self._needs_validation():
                self.validate()
            if self.progress.epoch >= self.cfg.train.epochs or self.progress.step >= self.max_steps:
                break
            self.train_epoch()
        return self.test()

    def _needs_validation(self) -> bool:
        p = self.progress
        at_boundary = p.batch == 0 or p.step >= self.max_steps
        return at_boundary and p.step != p.validated_step

    def _preempted(self) -> Preempted:
        """The exception that ends a run asked to stop (on any rank), with ``last`` on disk."""
        self.tracker.log_metrics({"train/preempted_at_step": self.progress.step}, self.progress.step)
        return Preempted(self.signals.requested or "a signal on another rank", self.progress.step, self.signals.signum)

    def _any_rank_asked_to_stop(self) -> bool:
        return agree([self.signals.requested is not None], self.runtime.device)[0]

    def _prepare_epoch(self) -> None:
        epoch = self.progress.epoch
        frozen = epoch < self.cfg.train.freeze_epochs
        if frozen != self._wrapped_frozen:
            self.model.set_encoders_frozen(frozen)
            self._step_fn, self._wrapped_frozen = self._wrap_for_training(), frozen
        self.loss_fn.set_epoch(epoch)
        self.model.train()
        self.pairs.set_epoch(epoch)
        self.sampler.set_epoch(epoch, skip_batches=self.progress.batch)

    def _wrap_for_training(self) -> torch.nn.Module:
        """The model as the step calls it: DDP across processes (which syncs exactly the parameters
        that require grad now, so it is rebuilt when the freeze schedule changes them), compiled on GPUs."""
        wrapped = self.model
        if self.ranks.enabled:
            device_ids = [self.runtime.device.index] if self.runtime.device.type == "cuda" else None
            wrapped = DistributedDataParallel(self.model, device_ids=device_ids)
        return self.runtime.compiled(wrapped)

    def train_epoch(self) -> None:
        """The rest of the current epoch (or up to ``train.max_steps``); writes ``last`` and raises
        :class:`Preempted` on a stop signal, and writes ``last`` before a batch's loading error goes on."""
        self._prepare_epoch()
        p = self.progress
        bar = tqdm(total=self.sampler.batches_per_epoch, initial=p.batch, desc=f"epoch {p.epoch}", leave=False,
                   mininterval=1.0, dynamic_ncols=True, disable=None if self.ranks.is_main else True)
        batches = iterate_workers_safely(self.loader)
        meter = ThroughputMeter(self.runtime.device)
        try:
            while p.step < self.max_steps:
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                except Exception as error:
                    raise self._loading_failed(error) from error
                meter.batch_arrived()
                loss, stop = self._step(batch)
                meter.step_done(len(batch["images"]) * self.ranks.world_size)
                bar.update()
                if p.step % self.cfg.train.log_every == 0:
                    self._log_training(loss, meter.read_and_reset(), bar)
                if stop:
                    self.save("last.pt")
                    raise self._preempted()
        finally:
            bar.close()
        if p.batch >= self.sampler.batches_per_epoch:
            self.scheduler.step()
            p.epoch += 1
            p.batch = 0

    def _loading_failed(self, error: Exception) -> Exception:
        """A batch could not be loaded: write `last` at the step reached (a single process: the others
        of a group are not here to join in), and name the file when it is an image's fault."""
        step = self.progress.step
        saved = not self.ranks.enabled
        if saved:
            self.save("last.pt")
            if self.signals.requested is not None:  # a stop signal sent to every process took a worker too
                return self._preempted()
        if not isinstance(error, BadImageError):
            log.error("a training batch could not be loaded after step %d%s", step, "; `last` is written" * saved)
            return error
        written = f"{self.checkpoints / 'last.pt'} holds step {step}: " if saved else ""
        return DatasetError([
            f"a training image cannot be used: {_last_line(error)}; {written}fix or remove the file, or set "
            f"dataset.skip_bad_images=true to decode every image at start-up and drop the bad ones, then resume=auto"
        ])

    def _step(self, batch) -> tuple[torch.Tensor, bool]:
        """One optimizer step: ``(loss, whether any rank was asked to stop)``; a non-finite loss is
        refused before it reaches the weights."""
        p = self.progress
        self.optimizer.zero_grad(set_to_none=True)
        loss = training_step(self.model, self._step_fn, self.loss_fn, batch, self.runtime, self.scaler,
                             self.accumulate)
        diverged, stop = agree([not bool(torch.isfinite(loss)), self.signals.requested is not None],
                               self.runtime.device)
        if diverged:
            last = self.checkpoints / "last.pt"
            kept = (f"{last} (step {self._saved_step}) is kept" if self._saved_step is not None
                    else "no checkpoint had been written yet")
            raise TrainingDiverged(
                f"the training loss is {loss.item()} at step {p.step + 1} (epoch {p.epoch}, batch {p.batch + 1}); "
                f"the step was not applied and {kept}. Lower optim.lr or check the data"
            )
        if self.cfg.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.parameters, self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        p.step += 1
        p.batch += 1
        return loss, stop

    def _log_training(self, loss: torch.Tensor, rates: dict[str, float], bar) -> None:
        bar.set_postfix(loss=f"{loss.item():.3f}", samples_per_s=f"{rates['train/samples_per_s']:.1f}")
        self.tracker.log_metrics(
            {
                "train/loss": loss.item(),
                "train/lr": self.optimizer.param_groups[0]["lr"],
                **rates,
                "train/epoch": self.progress.epoch,
                "train/encoders_frozen": float(self._wrapped_frozen),
            },
            self.progress.step,
        )

    def _score(self, split: str) -> list[torch.Tensor]:
        """Score a split; a single process stops at once on a stop signal (:class:`StopRequested`)
        since scoring holds no training state; processes of a group finish it together."""
        args = (self.model, self.splits[split], self.collator, self.cfg.encoder.image.image_size, self.runtime,
                self.cfg.eval.batch_size, self.ranks)
        if self.ranks.enabled:
            return score_split(*args)
        with self.signals.interruptible():
            return score_split(*args)

    def validate(self) -> None:
        """Score the validation split, keep the best, write ``last`` (and ``best``); a stop signal
        during it leaves ``last`` marked as not validated, so the resumed run validates first."""
        p = self.progress
        epoch = p.epoch - 1 if p.batch == 0 else p.epoch
        try:
            sims = self._score("val")
        except StopRequested:
            self.save("last.pt")
            raise self._preempted() from None
        val = protocol_tables(sims, "val", self.splits["val"].captions_per_image, None)
        value = sum(val[name] for name in self.monitor_names)
        self.tracker.log_metrics({**val, "val/monitor": value, "train/epoch": epoch}, p.step)
        self.tracker.log_examples(sims, self.splits["val"], "val", p.step, explain=self._attention_figure)
        log.info("epoch %d step %d: val/rsum %.2f, %s %.2f", epoch, p.step, val["val/rsum"], self.cfg.train.monitor,
                 value)
        improved = p.best_metric is None or (value > p.best_metric if self.higher_is_better else value < p.best_metric)
        if improved:
            p.best_metric, p.best_epoch = value, epoch
        p.validated_step = p.step
        self.save(*(("best.pt", "last.pt") if improved else ("last.pt",)))
        if self._any_rank_asked_to_stop():
            raise self._preempted()

    def _attention_figure(self, image: int, caption: str):
        """The attention figure (:func:`hat.explain.attention_figure`) of a validation image and a caption."""
        from hat.explain import attention_figure
        from hat.retriever import Retriever

        examples, split = self.cfg.logger.examples, self.splits["val"]
        retriever = Retriever(self.model, self.cfg, self.collator.tokenizer, self.runtime)
        return attention_figure(retriever, split.load_image(split.records[image]), caption,
                                examples.attention_cell, examples.attention_words, full_width=True)

    def test(self) -> TrainOutcome:
        """Test the best checkpoint, print the table, write ``results.json``."""
        p = self.progress
        if self._any_rank_asked_to_stop():
            raise self._preempted()  # `last` holds the finished training: a resumed run only tests
        best_path = self.checkpoints / "best.pt"
        self.model.load_state_dict(load_checkpoint(best_path)["model"])
        protocols = to_plain(self.cfg.dataset.get("test_protocols"))
        try:
            sims = self._score("test")
        except StopRequested:
            raise self._preempted() from None
        test = protocol_tables(sims, "test", self.splits["test"].captions_per_image, protocols)
        self.tracker.log_metrics(test, p.step)
        self.tracker.log_summary({**test, "best/monitor": p.best_metric, "best/epoch": p.best_epoch})
        if self.ranks.is_main:
            print(f"\ntest split, best checkpoint (epoch {p.best_epoch}):\n"
                  + format_tables(test, "test", self.model.num_levels, protocols))
            write_results(
                self.run_dir / "results.json",
                test,
                checkpoint=str(best_path),
                best_epoch=p.best_epoch,
                monitor={self.cfg.train.monitor: p.best_metric},
                provenance=provenance(self.config),
            )
            self.tracker.log_file(self.run_dir / "results.json")
        return TrainOutcome(test, p.best_metric, p.best_epoch)


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
        worker_init_fn=ignore_stop_signals,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    return pairs, sampler, loader


def _last_line(error: Exception) -> str:
    """A DataLoader worker's error arrives with the worker's traceback in its message; its last line
    is the original message (``hat.data.records.BadImageError: PATH: REASON``), without the type."""
    line = str(error).strip().splitlines()[-1]
    return line.split(": ", 1)[1] if line.startswith(("hat.", "BadImageError")) else line


def _own_rng_state(states: list[dict], ranks) -> dict:
    """This rank's saved RNG state; a run resumed on another number of processes reseeds its extra ranks."""
    if len(states) == ranks.world_size:
        return states[ranks.rank]
    log.warning("the checkpoint holds RNG states of %d processes, this run has %d", len(states), ranks.world_size)
    return states[min(ranks.rank, len(states) - 1)]
