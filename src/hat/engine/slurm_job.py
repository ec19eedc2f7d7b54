"""How a training inside a SLURM job of Hydra's submitit launcher leaves when a signal stopped it.

By then ``last`` is written (:mod:`hat.engine.preemption`). What the job does next depends on why
it was stopped, and decides what SLURM, submitit's client and the next job see:

- submitit's warning before the time limit (``$SUBMITIT_PREEMPT_SIGNAL``, SIGUSR2): submitit's own
  handler requeues the job with the same call; the requeued job resumes from ``last``
  (``hardware=slurm`` sets ``resume: auto``). Two cases stop instead, with a :class:`JobStopped`
  that names the step in ``last`` and the command that continues the job: a job signalled before
  or during its first optimizer step since it started (its time limit is shorter than
  ``signal_delay_s`` plus the start-up, so every requeue would be signalled at once again, one
  step each time), and a
  job whose ``max_num_timeout`` requeues are spent.
- SIGTERM while SLURM requeues the job (``scontrol requeue``, a preemption with
  ``PreemptMode=REQUEUE``, a node that failed): the process exits with status 75 and no result, so
  the sweep's client goes on waiting for the requeued job, which resumes from ``last``.
- any other stop (``scancel``, the hard end of a time limit): a :class:`JobStopped` fails the job,
  so its logs, its result and the client's summary say where it stopped and how to go on.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from hat.engine.distributed import from_environment
from hat.engine.preemption import EXIT_PREEMPTED, Preempted, PreemptionSignals, requeue_signal

log = logging.getLogger(__name__)


class JobStopped(RuntimeError):
    """A SLURM job stopped before its training finished and will not be requeued; the message says
    where ``last`` stands and the command that continues it."""


@dataclass(frozen=True)
class SubmititJob:
    """What a job knows of its own submission, for its messages.

    ``timeout_min``, ``signal_delay_s``, ``max_num_timeout``: the launcher's settings
    (``hydra.launcher.*``); ``continue_command``: the command line that submits this job again
    into its own folder; ``last``: the path of its ``last`` checkpoint."""

    timeout_min: int
    signal_delay_s: int
    max_num_timeout: int
    continue_command: str
    last: Path


def continue_command(task_overrides: list[str], sweep_dir: str, subdir: str) -> str:
    """``python train.py -m OVERRIDES hydra.sweep.dir=DIR hydra.sweep.subdir=SUBDIR``: the job again,
    alone, in the folder it ran in, where ``resume: auto`` continues it from ``last``."""
    words = [*task_overrides, f"hydra.sweep.dir={sweep_dir}", f"hydra.sweep.subdir={subdir}"]
    return "python train.py -m " + " ".join(shlex.quote(word) for word in words)


def slurm_requeues_this_job() -> bool:
    """True while SLURM requeues the job this process belongs to: ``scontrol`` counts one restart
    more than ``$SLURM_RESTART_COUNT``, the count this run started with (SLURM raises it when it
    decides to requeue, before it signals the job's processes). False outside SLURM, and when
    ``scontrol`` cannot answer (said in a warning)."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        return False
    try:
        shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True,
                               timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired) as error:
        log.warning("cannot ask SLURM whether job %s is being requeued (%s): taking it as stopped", job_id, error)
        return False
    restarts = re.search(r"\bRestarts=(\d+)", shown)
    if restarts is None:
        log.warning("scontrol does not show job %s's restart count: taking it as stopped", job_id)
        return False
    return int(restarts.group(1)) > int(os.environ.get("SLURM_RESTART_COUNT") or 0)


def slurm_job_name() -> str:
    """This job as squeue and submitit name it: ``ARRAYID_TASK`` for a job of an array (a sweep), else its id."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID", "?")


def leave_submitit_job(stop: Preempted, job: SubmititJob, signals: PreemptionSignals) -> NoReturn:
    """End this process after ``stop`` (``last`` written) as the module doc says: requeue through
    submitit, exit 75 without a result for a requeue SLURM makes, or raise :class:`JobStopped`."""
    job_id = slurm_job_name()
    where = f"`last` ({job.last}) holds step {stop.step}; continue with: {job.continue_command}"
    if stop.signum == requeue_signal():
        if stop.step - stop.start_step <= 1:  # the step in progress when the warning came is no progress
            raise JobStopped(
                f"SLURM job {job_id} got {stop.signal_name}, the warning before its time limit, within its first "
                f"training step since it started at step {stop.start_step}: its limit (hydra.launcher.timeout_min="
                f"{job.timeout_min} min) leaves no time to train once hydra.launcher.signal_delay_s="
                f"{job.signal_delay_s} s are kept for the warning. Not requeued again; raise timeout_min or lower "
                f"signal_delay_s; {where}")
        if from_environment().is_main:
            _requeue_through_submitit(stop, job, job_id, where, signals)
    elif slurm_requeues_this_job():
        log.warning("SLURM requeues job %s (%s at step %d): the requeued job continues from %s", job_id,
                    stop.signal_name, stop.step, job.last)
    else:
        raise JobStopped(f"SLURM job {job_id} was stopped by {stop.signal_name} at step {stop.step} and is not "
                         f"requeued (scancel, or the end of its time limit); {where}")
    signals.ignore_until_exit()
    raise SystemExit(EXIT_PREEMPTED)  # no result: submitit's client waits for the requeued job


def _requeue_through_submitit(stop: Preempted, job: SubmititJob, job_id: str, where: str,
                              signals: PreemptionSignals) -> NoReturn:
    """Hand the signal back to submitit's handler (restored), which pickles the same call for the
    requeued job, runs ``scontrol requeue`` and exits; its budget error becomes a :class:`JobStopped`."""
    from submitit.core.utils import UncompletedJobError

    signals.restore()
    log.warning("handing %s to submitit to requeue job %s at step %d", stop.signal_name, job_id, stop.step)
    try:
        signal.raise_signal(stop.signum)
    except UncompletedJobError:
        raise JobStopped(
            f"SLURM job {job_id} reached its time limit again ({stop.signal_name} at step {stop.step}) and has "
            f"used its hydra.launcher.max_num_timeout={job.max_num_timeout} requeues; {where} "
            f"(or raise hydra.launcher.max_num_timeout)") from None
    raise JobStopped(f"submitit's handler of {stop.signal_name} did not requeue SLURM job {job_id}; {where}")
