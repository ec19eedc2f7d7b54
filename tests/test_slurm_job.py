"""How a training in a SLURM job leaves after a stop signal (hat.engine.slurm_job), and the errors
that cross submitit's pickle round trip to a sweep's client. The real cluster runs these paths in
tests/test_slurm.py; here each decision is driven directly."""

from __future__ import annotations

import pickle
import signal
from pathlib import Path

import cloudpickle
import pytest
from submitit.core.utils import UncompletedJobError

from hat.checks import ConfigError
from hat.data.problems import DatasetError
from hat.engine import slurm_job
from hat.engine.distributed import CollectiveTimeout
from hat.engine.failures import TrainingDiverged
from hat.engine.preemption import EXIT_PREEMPTED, Preempted, PreemptionSignals, stop_signals
from hat.engine.run_folder import RunFolderError
from hat.engine.slurm_job import JobStopped, SubmititJob, continue_command, leave_submitit_job

JOB = SubmititJob(timeout_min=2, signal_delay_s=120, max_num_timeout=3,
                  continue_command="python train.py -m seed=1 hydra.sweep.dir=/s hydra.sweep.subdir=1",
                  last=Path("/s/1/checkpoints/last.pt"))

ERRORS = [
    Preempted("SIGTERM", 31, int(signal.SIGTERM), 12),
    TrainingDiverged("the training loss is nan at step 4"),
    ConfigError("train.batch_size=0 must be an integer >= 2"),
    DatasetError(["captions.json: missing", "img/3.jpg: cannot be read"]),
    CollectiveTimeout("process 1 of 2 waited longer than hardware.dist_timeout=10 s"),
    RunFolderError("the run folder /r is in use by another run"),
    JobStopped("SLURM job 7_1 was stopped by SIGTERM at step 52"),
]


@pytest.mark.parametrize("dump", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_errors_cross_the_pickle_round_trip_with_their_message(error, dump):
    back = pickle.loads(dump(error))
    assert type(back) is type(error) and str(back) == str(error)
    if isinstance(error, Preempted):
        assert (back.step, back.signum, back.start_step) == (31, signal.SIGTERM, 12)
    if isinstance(error, DatasetError):
        assert back.problems == error.problems


def test_the_continue_command_quotes_what_the_shell_would_split():
    command = continue_command(["seed=1", "alignment.levels=[4,8]", "logger.name=my run"], "/runs/s", "1")
    assert command == ("python train.py -m seed=1 'alignment.levels=[4,8]' 'logger.name=my run' "
                       "hydra.sweep.dir=/runs/s hydra.sweep.subdir=1")


@pytest.mark.parametrize("stopped_at", [40, 41], ids=["before-its-first-step", "during-its-first-step"])
def test_a_time_limit_warning_before_the_second_step_is_not_requeued_again(monkeypatch, stopped_at):
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    stop = Preempted("SIGUSR2", stopped_at, int(signal.SIGUSR2), start_step=40)
    with PreemptionSignals() as signals, pytest.raises(JobStopped) as stopped:
        leave_submitit_job(stop, JOB, signals)
    message = str(stopped.value)
    assert "hydra.launcher.timeout_min=2 min" in message and "signal_delay_s=120 s" in message
    assert "Not requeued again" in message and f"holds step {stopped_at}" in message
    assert JOB.continue_command in message


def test_a_spent_requeue_budget_names_the_step_in_last_and_the_command_that_continues(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "7")

    def submitits_handler(signum, frame):  # what submitit's handler raises once max_num_timeout is spent
        raise UncompletedJobError("Job not requeued because: timed-out too many times.")

    previous = signal.signal(signal.SIGUSR2, submitits_handler)
    try:
        with PreemptionSignals() as signals, pytest.raises(JobStopped) as stopped:
            leave_submitit_job(Preempted("SIGUSR2", 90, int(signal.SIGUSR2), start_step=40), JOB, signals)
        assert signal.getsignal(signal.SIGUSR2) is submitits_handler, "submitit's handler was given the signal back"
    finally:
        signal.signal(signal.SIGUSR2, previous)
    message = str(stopped.value)
    assert "max_num_timeout=3 requeues" in message
    assert f"`last` ({JOB.last}) holds step 90; continue with: {JOB.continue_command}" in message


def test_a_stop_while_slurm_requeues_the_job_exits_75_without_a_result(monkeypatch):
    monkeypatch.setattr(slurm_job, "slurm_requeues_this_job", lambda: True)
    before = {signum: signal.getsignal(signum) for signum in stop_signals()}
    try:
        with PreemptionSignals() as signals, pytest.raises(SystemExit) as leaving:
            leave_submitit_job(Preempted("SIGTERM", 52, int(signal.SIGTERM), start_step=0), JOB, signals)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN, "a repeated SIGTERM cannot kill it on its way out"
    finally:  # the test process keeps its own handlers
        for signum, handler in before.items():
            signal.signal(signum, handler)
    assert leaving.value.code == EXIT_PREEMPTED


def test_a_stop_that_slurm_does_not_requeue_fails_the_job_with_where_last_stands(monkeypatch):
    monkeypatch.setattr(slurm_job, "slurm_requeues_this_job", lambda: False)
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "6")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    with PreemptionSignals() as signals, pytest.raises(JobStopped) as stopped:
        leave_submitit_job(Preempted("SIGTERM", 52, int(signal.SIGTERM)), JOB, signals)
    assert str(stopped.value).startswith("SLURM job 6_1 was stopped by SIGTERM at step 52 and is not requeued")
    assert JOB.continue_command in str(stopped.value)


def test_outside_slurm_nothing_is_being_requeued(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert slurm_job.slurm_requeues_this_job() is False
