"""One training as an object with verbs: ``setup``, ``train_epoch``, ``validate``, ``test`` (and
``fit``, which runs them in order); :func:`hat.engine.loop.train` drives it."""

from __future__ import annotations

import logging
import math

import torch
from tqdm import tqdm

from hat.checks import to_plain
from hat.data.records import BadImageError
from hat.engine.checkpoint import CHECKPOINT_FORMAT, capture_rng_state, load_checkpoint, save_checkpoint
from hat.engine.distributed import agree, barrier, gather_objects
from hat.engine.evaluation import protocol_tables, score_split
from hat.engine.failures import bad_training_image, diverged
from hat.engine.preemption import Preempted, PreemptionSignals, StopRequested, iterate_workers_safely
from hat.engine.profiling import StepProfiler
from hat.engine.resume import resume_training
from hat.engine.resume_checks import data_identity
from hat.engine.run_folder import RunFolder
from hat.engine.step import training_step, wrap_for_training
from hat.engine.test_report import TrainOutcome, report_scores
from hat.engine.throughput import ThroughputMeter, progress_line
from hat.engine.train_signals import GradientMonitor, training_metrics
from hat.engine.training_parts import build_tracker, build_training
from hat.provenance import provenance
from hat.run_spec import RunSpec
from hat.tracking import NullTracker

log = logging.getLogger(__name__)


class TrainingRun:
    """One training: its parts (:class:`hat.engine.training_parts.TrainingParts`), the state the steps
    change (``self.state``), the tracker, and the verbs that move it on."""

    def __init__(self, cfg, spec: RunSpec, folder: RunFolder, ranks, runtime, signals: PreemptionSignals,
                 overrides: list[str] | None = None) -> None:
        """``cfg``: the run config (checkpoints store it; seed, hardware, logger, resume, initial weights
        are read from it); ``spec``: what :func:`hat.config.validate_train_config` resolved the rest
        to; ``folder``: the run folder (process 0 holds it and checks it is still its own before every
        step and write); ``overrides``: the command line's, kept in ``results.json``."""
        self.cfg, self.spec, self.ranks, self.runtime, self.signals = cfg, spec, ranks, runtime, signals
        self.overrides = overrides
        self.folder, self.run_dir, self.checkpoints = folder, folder.run_dir, folder.checkpoints
        self.config = to_plain(cfg)
        self.max_steps = spec.train.max_steps or math.inf
        self._saved_step: int | None = None  # the step this run's `last` holds
        self.start_step = 0  # the step this process started or resumed from (set by setup)
        self._step_fn, self._wrapped_frozen = None, None
        self.tracker = NullTracker()  # until setup() starts the run's own
        self.profiler = StepProfiler(spec.train.profile_steps, self.run_dir / "profile", runtime.device)

    def setup(self) -> TrainingRun:
        """Build the parts, resume from ``resume``'s checkpoint (if any) and start the tracker."""
        log.info("device %s, precision %s, process %d of %d", self.runtime.device, self.runtime.precision,
                 self.ranks.rank, self.ranks.world_size)
        self.parts = build_training(self.cfg, self.spec, self.config, self.ranks, self.runtime)
        self.state, self.model, self.splits = self.parts.state, self.parts.state.model, self.parts.splits
        self.gradients = GradientMonitor(self.parts.parameters, self.spec.optim.grad_clip)
        self.data = data_identity(self.spec.data, self.splits)  # every checkpoint records it
        tracker_run_id = self.resume()
        self.start_step = self.state.step
        self.tracker = (build_tracker(self.cfg.logger, self.run_dir, self.config, tracker_run_id, self.state.step)
                        if self.ranks.is_main else NullTracker())
        return self

    # -- checkpoints -------------------------------------------------------------------------

    def save(self, *names: str) -> None:
        """Write this moment's checkpoint under each of ``names`` (see :mod:`hat.engine.checkpoint`);
        every rank gives its RNG state, rank 0 writes, every rank waits for it. A run whose folder
        was taken over writes nothing."""
        self._stop_if_taken_over(fresh=True)
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            **self.state.state_dict(),
            "rng": gather_objects(capture_rng_state()),  # one entry per rank
            "config": self.config,
            "data": self.data,
            "tracker_run_id": self.tracker.run_id,
        }
        if self.ranks.is_main:
            for name in names:
                save_checkpoint(checkpoint, self.checkpoints / name)
        barrier()
        self._saved_step = self.state.step

    def resume(self) -> str | None:
        """Load ``resume``'s checkpoint if any (:func:`hat.engine.resume.resume_training`); returns
        the W&B run id it continues (or None)."""
        resumed = resume_training(self.cfg.get("resume"), self.checkpoints, self.state, self.config, self.ranks,
                                  self.data, self.cfg.get("resume_changes") == "allow")
        if resumed is None:
            return None
        path, tracker_run_id = resumed
        if path == self.checkpoints / "last.pt":
            self._saved_step = self.state.step
        return tracker_run_id

    # -- the verbs ---------------------------------------------------------------------------

    def fit(self) -> TrainOutcome:
        """Train (validating at every epoch's end and where training stops), then test the best."""
        try:
            while True:
                if self._needs_validation():
                    self.validate()
                finished = self.state.epoch >= self.spec.train.epochs or self.state.step >= self.max_steps
                if finished or self._stopped_early():
                    break
                self.train_epoch()
        finally:
            self.profiler.close()
        return self.test()

    def _stopped_early(self) -> bool:
        """``train.early_stop`` validations have passed since the best (``best`` holds it)."""
        patience, s = self.spec.train.early_stop, self.state
        if patience is None or s.best_epoch is None or s.batch != 0 or s.epoch - 1 - s.best_epoch < patience:
            return False
        log.info("early stop after epoch %d: %s has not improved for %d validations (best %.4g at epoch %d)",
                 s.epoch - 1, self.spec.train.monitor, patience, s.best_metric, s.best_epoch)
        self.tracker.log_summary({"train/early_stop_epoch": s.epoch - 1})
        return True

    def _needs_validation(self) -> bool:
        s = self.state
        at_boundary = s.batch == 0 or s.step >= self.max_steps
        return at_boundary and s.step != s.validated_step

    def _preempted(self) -> Preempted:
        """The exception that ends a run asked to stop (on any rank), with ``last`` on disk."""
        self.tracker.log_metrics({"train/preempted_at_step": self.state.step}, self.state.step)
        return Preempted(self.signals.requested or "a signal on another rank", self.state.step, self.signals.signum,
                         self.start_step)

    def _stop_if_taken_over(self, fresh: bool = False) -> None:
        """Raise :class:`RunFolderTakenOver` on every rank when the folder is no longer this run's."""
        taken = self.folder.taken_over(fresh=fresh)
        if agree([taken is not None], self.runtime.device)[0]:
            raise taken or self.folder.taken_over_elsewhere()

    def _any_rank_asked_to_stop(self) -> bool:
        return agree([self.signals.requested is not None], self.runtime.device)[0]

    def _prepare_epoch(self) -> None:
        epoch = self.state.epoch
        frozen = epoch < self.spec.train.freeze_epochs
        if frozen != self._wrapped_frozen:
            self.model.set_encoders_frozen(frozen, stage_norms=self.spec.train.freeze_stage_norms)
            self._step_fn, self._wrapped_frozen = wrap_for_training(self.model, self.ranks, self.runtime), frozen
        self.state.loss.set_epoch(epoch)
        self.model.train_mode(dropout=self.spec.train.dropout)
        self.parts.pairs.set_epoch(epoch)
        self.parts.sampler.set_epoch(epoch, skip_batches=self.state.batch)

    def train_epoch(self) -> None:
        """The rest of the current epoch (or up to ``train.max_steps``); writes ``last`` and raises
        :class:`Preempted` on a stop signal, and writes ``last`` before a batch's loading error goes on."""
        self._prepare_epoch()
        s, sampler = self.state, self.parts.sampler
        bar = tqdm(total=sampler.batches_per_epoch, initial=s.batch, desc=f"epoch {s.epoch}", leave=False,
                   mininterval=1.0, dynamic_ncols=True, disable=None if self.ranks.is_main else True)
        batches = iterate_workers_safely(self.parts.loader)
        meter = ThroughputMeter(self.runtime.device)
        try:
            while s.step < self.max_steps:
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                except Exception as error:
                    raise self._loading_failed(error) from error
                meter.batch_arrived()
                loss, stop = self._step(batch)
                meter.step_done(len(batch["images"]) * self.ranks.world_size)
                self.profiler.step()
                bar.update()
                if s.step % self.spec.train.log_every == 0:
                    self._log_training(loss, meter.read_and_reset(), bar)
                if stop:
                    self.save("last.pt")
                    raise self._preempted()
        finally:
            bar.close()
        if s.batch >= sampler.batches_per_epoch:
            s.epoch, s.batch = s.epoch + 1, 0

    def _loading_failed(self, error: Exception) -> Exception:
        """A batch could not be loaded: write `last` at the step reached (a single process: the others
        of a group are not here to join in), and name the file when it is an image's fault."""
        saved = not self.ranks.enabled
        if saved:
            self.save("last.pt")
            if self.signals.requested is not None:  # a stop signal sent to every process took a worker too
                return self._preempted()
        if not isinstance(error, BadImageError):
            log.error("a training batch could not be loaded after step %d%s", self.state.step,
                      "; `last` is written" * saved)
            return error
        return bad_training_image(error, self.checkpoints / "last.pt" if saved else None, self.state.step)

    def _step(self, batch) -> tuple[torch.Tensor, bool]:
        """One optimizer step: ``(loss, whether any rank was asked to stop)``; a non-finite loss is
        refused before it reaches the weights."""
        s = self.state
        s.optimizer.zero_grad(set_to_none=True)
        chunks = self.spec.train.accumulate
        loss = training_step(self.model, self._step_fn, s.loss, batch, self.runtime, s.scaler, chunks)
        taken = self.folder.taken_over()
        flags = [not bool(torch.isfinite(loss)), self.signals.requested is not None, taken is not None]
        not_finite, stop, taken_any = agree(flags, self.runtime.device)
        if taken_any:
            raise taken or self.folder.taken_over_elsewhere()
        if not_finite:
            raise diverged(loss.item(), s.step + 1, s.epoch, s.batch + 1, self.checkpoints / "last.pt",
                           self._saved_step)
        self.gradients.before_step(s.optimizer, s.scaler, logged=(s.step + 1) % self.spec.train.log_every == 0)
        s.scaler.step(s.optimizer)
        s.scaler.update()
        s.scheduler.step()
        s.step, s.batch = s.step + 1, s.batch + 1
        return loss, stop

    def _log_training(self, loss: torch.Tensor, rates: dict[str, float], bar) -> None:
        bar.set_postfix(loss=f"{loss.item():.3f}", samples_per_s=f"{rates['train/samples_per_s']:.1f}")
        metrics = training_metrics(loss.item(), self.state, rates, self.gradients, self._wrapped_frozen)
        self.tracker.log_metrics(metrics, self.state.step)
        if bar.disable and self.ranks.is_main:  # no terminal to draw the bar on: a line in the log instead
            total = min(self.spec.train.epochs * self.parts.sampler.batches_per_epoch, self.max_steps)
            log.info(progress_line(self.state.epoch, self.state.step, int(total), loss.item(), rates))

    def _score(self, split: str) -> list[torch.Tensor]:
        """Score a split; a single process stops at once on a stop signal (:class:`StopRequested`)
        since scoring holds no training state; processes of a group finish it together."""
        args = (self.model, self.splits[split], self.parts.collator, self.spec.model.image.image_size,
                self.runtime, self.cfg.eval.batch_size, self.ranks)
        if self.ranks.enabled:
            return score_split(*args)
        with self.signals.interruptible():
            return score_split(*args)

    def validate(self) -> None:
        """Score the validation split, keep the best, write ``last`` (and ``best``); a stop signal
        during it leaves ``last`` marked as not validated, so the resumed run validates first."""
        s = self.state
        epoch = s.epoch - 1 if s.batch == 0 else s.epoch
        try:
            sims = self._score("val")
        except StopRequested:
            self.save("last.pt")
            raise self._preempted() from None
        val = protocol_tables(sims, "val", self.splits["val"].captions_per_image, None)
        value = sum(val[name] for name in self.spec.train.monitor_names)
        self.tracker.log_metrics({**val, "val/monitor": value, "train/epoch": epoch}, s.step)
        self.tracker.log_examples(sims, self.splits["val"], "val", s.step, explain=self._attention_figure)
        log.info("epoch %d step %d: val/rsum %.2f, %s %.2f", epoch, s.step, val["val/rsum"], self.spec.train.monitor,
                 value)
        improved = s.record_validation(value, epoch, self.spec.train.higher_is_better)
        self.save(*(("last.pt", "best.pt") if improved else ("last.pt",)))  # best.pt only ever beside a last.pt
        if self._any_rank_asked_to_stop():
            raise self._preempted()

    def _attention_figure(self, image: int, caption: str):
        """:func:`hat.explain.attention_figure` of a validation image and a caption, W&B-sized."""
        from hat.explain import split_attention_figure

        return split_attention_figure(self.model, self.cfg, self.parts.collator.tokenizer, self.runtime,
                                      self.splits["val"], image, caption)

    def test(self) -> TrainOutcome:
        """Test the best checkpoint, print the table, write ``results.json``."""
        s = self.state
        if self._any_rank_asked_to_stop():
            raise self._preempted()  # `last` holds the finished training: a resumed run only tests
        self._stop_if_taken_over(fresh=True)
        best_path = self.checkpoints / "best.pt"
        self.model.load_state_dict(load_checkpoint(best_path)["model"])
        try:
            sims = self._score("test")
        except StopRequested:
            raise self._preempted() from None
        results = self.run_dir / "results.json"
        test, _ = report_scores(
            sims, "test", self.splits["test"].captions_per_image, self.spec.data.test_protocols,
            f"test split, best checkpoint (epoch {s.best_epoch})", results if self.ranks.is_main else None,
            extra={"checkpoint": str(best_path), "best_epoch": s.best_epoch, "overrides": self.overrides,
                   "monitor": {self.spec.train.monitor: s.best_metric}, "provenance": provenance(self.config)},
        )
        self.tracker.log_metrics(test, s.step)
        self.tracker.log_recall_curve(sims, self.splits["test"].captions_per_image, "test", s.step)
        self.tracker.log_summary({**test, "best/monitor": s.best_metric, "best/epoch": s.best_epoch})
        if self.ranks.is_main:
            self.tracker.log_file(results)
        return TrainOutcome(test, s.best_metric, s.best_epoch)

