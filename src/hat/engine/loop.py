"""The training run: build everything from a config, train with validation every epoch, test the best.

:func:`train` checks the config, takes the run folder (:mod:`hat.engine.run_folder`) and drives a
:class:`TrainingRun` through its verbs: ``setup`` (build, resume), then epochs of ``train_epoch``
and ``validate``, then ``test``. What a checkpoint holds is :class:`hat.engine.checkpoint.TrainingState`
plus the RNG states, the config and the W&B run id.

Nothing is lost on a stop: a stop signal ends the run at the next safe point with ``last``
written (:mod:`hat.engine.preemption`); a batch that cannot be loaded writes ``last`` at the step
reached before the error goes on; a non-finite loss stops before it reaches the weights, keeping
the ``last`` already written (:mod:`hat.engine.failures`). A validation interrupted by a signal is
run again on resume, and a resumed run whose training is done goes straight to the test.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hat.config import validate_train_config
from hat.engine.distributed import from_environment, init_process_group, shutdown_process_group, timeout_error
from hat.engine.failures import TrainingDiverged
from hat.engine.preemption import EXIT_PREEMPTED, Preempted, PreemptionSignals
from hat.engine.run_folder import RunFolder
from hat.engine.test_report import TrainOutcome
from hat.engine.training_run import TrainingRun
from hat.run_spec import RunSpec
from hat.runtime import resolve_runtime

__all__ = ["TrainOutcome", "TrainingDiverged", "TrainingRun", "train"]


def train(cfg, run_dir: Path, signals: PreemptionSignals | None = None, *,
          record: Callable[[], None] | None = None, overrides: list[str] | None = None) -> TrainOutcome:
    """Train as ``cfg`` says, writing checkpoints, ``metrics.jsonl`` and ``results.json`` to ``run_dir``.

    ``signals``: the entry point's active :class:`PreemptionSignals` (so that its handlers stay
    until the process exits); without one, the run installs its own for its duration.
    ``record``: called by process 0 once the run folder is this run's (the entry point writes its
    record of the run there: Hydra's ``.hydra/``); ``overrides``: the command-line overrides the
    run was started with, kept in ``results.json``.
    Raises :class:`Preempted` after writing ``last`` when a stop signal arrives.
    """
    spec = validate_train_config(cfg)
    ranks = from_environment()
    folder = RunFolder(run_dir)
    if ranks.is_main:
        folder.acquire(cfg.get("resume"))
        if record is not None:
            record()
    try:
        if signals is not None:
            return _run(cfg, spec, folder, ranks, signals, overrides)
        with PreemptionSignals() as own_signals:
            return _run(cfg, spec, folder, ranks, own_signals, overrides)
    finally:
        folder.release()


def _run(cfg, spec: RunSpec, folder: RunFolder, ranks, signals: PreemptionSignals, overrides) -> TrainOutcome:
    runtime = resolve_runtime(cfg.hardware, ranks.local_rank, cfg.eval.get("kernel", "auto"))
    timeout_s = float(cfg.hardware.dist_timeout)
    init_process_group(ranks, runtime.device.type, timeout_s)
    exit_code = 1  # until the run returns
    run = None
    try:
        run = TrainingRun(cfg, spec, folder, ranks, runtime, signals, overrides)
        outcome = run.setup().fit()
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
