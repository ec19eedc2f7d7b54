"""A real one-node SLURM cluster (scripts/local_slurm.sh), driven as a cluster user and its
administrator would, with two loader workers in every job (SLURM signals them too):

- a sweep job that hits its time limit is signalled by SLURM, writes `last`, is requeued by
  submitit, resumes, and ends with the weights and test metrics of an uninterrupted run. The job
  is submitted with a 10-minute limit; once it is training, the test cuts its limit to one or two
  minutes past the time it has run, with `scontrol update`, so SLURM's own time-limit machinery
  sends `--signal=USR2@110` within its 30 s check interval while the job is surely mid-training (a
  fixed short limit could signal it before Python has installed any handler, since SLURM may
  signal up to 30 s early). Once requeued, the limit goes back to 10 minutes;
- a sweep of two jobs, one requeued by `scontrol requeue` mid-epoch: the requeued job resumes at
  the step it reached, and the client waits for it and exits 0 with both results;
- a sweep whose one job is stopped by a plain `scancel` (`last` at the step reached, not requeued)
  and whose other fails on a bad config value: each job's own log and `train.log` end with its
  error, sacct shows neither as COMPLETED, and the client's last line sums both up;
- a job of two DDP tasks requeued once ends on the weights of an uninterrupted two-process run.

The cluster script itself can be run again at once while its cluster is up (a second `.ci/run`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from hat.engine.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow
SCRIPT = ROOT / "scripts" / "local_slurm.sh"
TRAINING = [
    "dataset=shapes", "dataset.num_train=40", "dataset.num_val=8", "dataset.num_test=8",
    "encoder=tiny", "encoder.image.image_size=32", "train.batch_size=8", "train.epochs=80",
    "train.freeze_epochs=1", "train.log_every=5", "optim.lr=1e-3", "logger=none",
]  # 25 steps an epoch, 2000 in all: about 90 s on one core of a 2-core CI machine. The signal comes
# at slurmctld's next time-limit check, 10 to 30 s after the limit is cut (measured), sometimes later;
# 500 steps (20 s) lost that race, so the job finished before it was signalled.
STEPS = 2000


def _slurm_or_skip() -> None:
    """Skip where no cluster answers (a developer machine without it); CI starts one, so there a
    missing cluster is a failure, not a skip."""
    if shutil.which("sinfo") is None or not SCRIPT.is_file():
        reason = "SLURM is not installed here (bash scripts/local_slurm.sh installs and starts it)"
    else:
        status = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, text=True)
        if status.returncode == 0:
            return
        reason = f"the local SLURM cluster does not answer: {(status.stdout + status.stderr).strip()}"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; .ci/run must start it")
    pytest.skip(reason)


def _run(*command) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


def _wait(condition, what: str, timeout: float, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the sweep ended before {what}: {process.communicate()[1][-4000:]}")
        time.sleep(0.5)
    raise AssertionError(f"no {what} within {timeout} s")


def _elapsed_s(job_id: str) -> int:
    """Seconds the job has run, from squeue's ``[[D-]H:]M:SS``."""
    parts = [int(part) for part in _run("squeue", "-h", "-j", job_id, "-o", "%M").replace("-", ":").split(":")]
    return sum(part * unit for part, unit in zip(reversed(parts), (1, 60, 3600, 86400)))


def _finished_states(job_id: str) -> list[str] | None:
    """The states of each run of the job (sacct -D: requeued runs too) once the last one has ended."""
    states = _run("sacct", "-j", job_id, "-D", "-n", "-X", "-o", "State").split()
    return states if states and states[-1] not in ("RUNNING", "PENDING", "COMPLETING", "REQUEUED") else None


def _last_step(metrics: Path) -> int:
    if not metrics.is_file():
        return 0
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines() if line.endswith("}")]
    return max(steps, default=0)


def _lock_holders() -> list[str]:
    """Processes with local_slurm.sh's lock file open (its flock lives as long as any of them)."""
    holders = []
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            if os.readlink(fd) == "/tmp/local_slurm.lock":
                holders.append((fd.parent.parent / "comm").read_text().strip())
        except OSError:  # a process or descriptor gone meanwhile
            continue
    return holders


def test_the_cluster_script_runs_again_without_waiting_on_its_lock_while_the_cluster_is_up():
    """A second `.ci/run` (or `start` after a stop) must not wait on a lock a daemon inherited."""
    _slurm_or_skip()
    assert _lock_holders() == [], "a daemon of the running cluster holds local_slurm.sh's lock"
    # timeout: a hang guard only. A start that waited on the lock would fail after flock's 300 s, naming it.
    result = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert _lock_holders() == []


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ON_SLURM = ["hardware=slurm", "hardware.num_workers=2", "hydra.launcher.gpus_per_node=null",
            "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10"]
SHORT = [*TRAINING[:6], "train.freeze_epochs=1", "train.log_every=1", "optim.lr=1e-3", "logger=none"]
TWELVE_EPOCHS = "train.epochs=12"  # of 25 batches of 8 pairs: 300 steps


def _sweep(sweep_dir: Path, *overrides: str) -> subprocess.Popen:
    """``python train.py -m ... hardware=slurm`` into ``sweep_dir``, its output kept for the test."""
    return subprocess.Popen(
        [sys.executable, "train.py", "-m", *overrides, *ON_SLURM, f"hydra.sweep.dir={sweep_dir}"],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _slurm_job(sweep_dir: Path, number: int) -> str:
    """The SLURM name of the sweep's job ``number`` from submitit's folder for it: ``ARRAY_TASK`` in a
    sweep of several jobs, the plain id for a sweep of one."""
    def named() -> str | None:
        names = [path.name for path in (sweep_dir / ".submitit").glob("*") if path.name.split("_")[0].isdigit()]
        arrays = [name for name in names if name.endswith(f"_{number}")]
        return arrays[0] if arrays else next((name for name in names if name.isdigit() and number == 0), None)

    return _wait(named, f"job #{number}'s submission", 60)


def _preempted_step(metrics: Path) -> int:
    """The step at which the run in ``metrics``'s folder was stopped by a signal (its last such line)."""
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if "preempted_at_step" in line]
    assert lines, "the run logged no stop"
    return lines[-1]["train/preempted_at_step"]


def _states(job: str) -> list[str]:
    """The state of each run of ``job`` (requeued runs too) in SLURM's accounting."""
    return _run("sacct", "-j", job, "-D", "-n", "-X", "-o", "State").split()


def _stop_sweep(sweep: subprocess.Popen, sweep_dir: Path) -> None:
    if sweep.poll() is None:
        sweep.kill()
        for folder in (sweep_dir / ".submitit").glob("*_*"):
            subprocess.run(["scancel", folder.name])


def test_a_sweep_job_at_its_time_limit_is_requeued_and_resumes_to_an_uninterrupted_result(tmp_path):
    _slurm_or_skip()
    reference = subprocess.Popen(
        [sys.executable, "train.py", *TRAINING, "hardware=cpu", "hardware.num_workers=2",
         f"hydra.run.dir={tmp_path / 'reference'}"],
        cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    sweep_dir = tmp_path / "sweep"
    sweep = subprocess.Popen(
        [sys.executable, "train.py", "-m", *TRAINING, *ON_SLURM, "hydra.launcher.signal_delay_s=110",
         f"hydra.sweep.dir={sweep_dir}"],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    job_dir = sweep_dir / "0"
    try:
        _wait(lambda: _last_step(job_dir / "metrics.jsonl") >= 20, "training step 20 in the SLURM job", 240, sweep)
        job_id = _slurm_job(sweep_dir, 0)
        limit = _elapsed_s(job_id) // 60 + 2  # minutes: USR2 (110 s before it) is due now, the limit 2 min on
        _run("scontrol", "update", f"JobId={job_id}", f"TimeLimit={limit}")
        _wait(lambda: "REQUEUED" in _states(job_id) or _run("squeue", "-h", "-j", job_id, "-o", "%T") == "PENDING",
              "requeue of the job at its time limit", 90, sweep)
        stopped_at = _last_step(job_dir / "metrics.jsonl")
        _run("scontrol", "update", f"JobId={job_id}", "TimeLimit=10")
        _, errors = sweep.communicate(timeout=360)
    finally:
        _stop_sweep(sweep, sweep_dir)
    assert sweep.returncode == 0, errors[-4000:]
    assert reference.wait(timeout=300) == 0, reference.communicate()[1][-3000:]

    log = (job_dir / "train.log").read_text()
    assert "received SIGUSR2" in log and "killed by signal" not in log, log[-3000:]
    resumed = re.search(r"resumed from \S+last\.pt at epoch \d+, batch \d+, step (\d+)", log)
    assert resumed, log[-3000:]
    assert 20 <= int(resumed.group(1)) <= stopped_at < STEPS
    states = _wait(lambda: _finished_states(job_id), "the job's end in its accounting (after its result file)", 60)
    assert states[0] == "REQUEUED" and states[-1] == "COMPLETED", states
    _assert_same_weights(tmp_path / "reference", job_dir, STEPS)
    expected = json.loads((tmp_path / "reference" / "results.json").read_text())["metrics"]
    assert json.loads((job_dir / "results.json").read_text())["metrics"] == expected


def _assert_same_weights(reference: Path, run: Path, steps: int) -> None:
    a = load_checkpoint(reference / "checkpoints" / "last.pt")
    b = load_checkpoint(run / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == steps
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name


def test_a_job_requeued_by_scontrol_resumes_where_it_stopped_and_the_client_collects_both_jobs(tmp_path):
    _slurm_or_skip()
    sweep = _sweep(tmp_path, *SHORT, "train.batch_size=8", TWELVE_EPOCHS, "seed=1,2")
    try:
        _wait(lambda: _last_step(tmp_path / "0" / "metrics.jsonl") >= 30, "step 30 in job #0", 240, sweep)
        requeued = _slurm_job(tmp_path, 0)
        _run("scontrol", "requeue", requeued)
        output, _ = sweep.communicate(timeout=400)
    finally:
        _stop_sweep(sweep, tmp_path)
    assert sweep.returncode == 0, output[-4000:]
    assert output.rstrip().splitlines()[-1].endswith("sweep of 2 jobs: #0 finished, #1 finished"), output[-2000:]
    assert all((tmp_path / job / "results.json").is_file() for job in ("0", "1"))

    log = (tmp_path / "0" / "train.log").read_text()
    stopped_at = _preempted_step(tmp_path / "0" / "metrics.jsonl")
    assert f"SLURM requeues job {requeued} (SIGTERM at step {stopped_at})" in log, log[-3000:]
    assert re.search(rf"resumed from \S+last\.pt at epoch \d+, batch \d+, step {stopped_at}\b", log), log[-3000:]
    assert 30 <= stopped_at < 300 and load_checkpoint(tmp_path / "0" / "checkpoints" / "last.pt")["step"] == 300
    states = _wait(lambda: _finished_states(requeued), "job #0's end in its accounting", 60)
    assert states[0] == "REQUEUED" and states[-1] == "COMPLETED", states


def test_a_cancelled_job_keeps_last_a_failed_one_ends_its_logs_with_its_error_and_the_client_says_both(tmp_path):
    _slurm_or_skip()
    sweep = _sweep(tmp_path, *SHORT, TWELVE_EPOCHS, "train.batch_size=8,0")  # job #1: a batch of 0 cannot train
    try:
        _wait(lambda: _last_step(tmp_path / "0" / "metrics.jsonl") >= 20, "step 20 in job #0", 240, sweep)
        cancelled, failed = _slurm_job(tmp_path, 0), _slurm_job(tmp_path, 1)
        _run("scancel", cancelled)
        output, _ = sweep.communicate(timeout=300)
    finally:
        _stop_sweep(sweep, tmp_path)
    assert sweep.returncode == 1, output[-4000:]
    assert "sweep of 2 jobs: #0 failed, #1 failed" in output.rstrip().splitlines()[-1], output[-2000:]

    stopped_at = _preempted_step(tmp_path / "0" / "metrics.jsonl")
    assert load_checkpoint(tmp_path / "0" / "checkpoints" / "last.pt")["step"] == stopped_at >= 20
    stop_line = (f"job failed: SLURM job {cancelled} was stopped by SIGTERM at step {stopped_at} and is not "
                 f"requeued")
    error_line = "job failed: train.batch_size=0 must be an integer >= 2"
    for job, folder, line in ((cancelled, "0", stop_line), (failed, "1", error_line)):
        job_log = next((tmp_path / ".submitit" / job).glob("*_log.out")).read_text().rstrip().splitlines()
        train_log = (tmp_path / folder / "train.log").read_text().rstrip().splitlines()
        assert line in job_log[-1] and line in train_log[-1], (job_log[-3:], train_log[-3:])
        assert line.removeprefix("job failed: ") in output
    cancelled_states = _wait(lambda: _finished_states(cancelled), "job #0's end in its accounting", 60)
    assert len(cancelled_states) == 1 and cancelled_states[0].startswith("CANCELLED"), cancelled_states  # no requeue
    assert _wait(lambda: _finished_states(failed), "job #1's end in its accounting", 60) == ["FAILED"]


def test_a_two_task_ddp_job_requeued_once_ends_on_the_weights_of_an_uninterrupted_two_process_run(tmp_path):
    _slurm_or_skip()
    per_rank = [*SHORT, "train.batch_size=4", "train.epochs=6"]  # 25 steps of 2 x 4 pairs an epoch: 150 steps
    reference = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py", *per_rank,
         "hardware=ddp", "hardware.device=cpu", "hardware.num_workers=2", f"hydra.run.dir={tmp_path / 'reference'}"],
        cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    sweep_dir = tmp_path / "sweep"
    sweep = _sweep(sweep_dir, *per_rank, "hydra.launcher.tasks_per_node=2")
    try:
        _wait(lambda: _last_step(sweep_dir / "0" / "metrics.jsonl") >= 30, "step 30 of the DDP job", 240, sweep)
        job = _slurm_job(sweep_dir, 0)
        _run("scontrol", "requeue", job)
        output, _ = sweep.communicate(timeout=400)
    finally:
        _stop_sweep(sweep, sweep_dir)
    assert sweep.returncode == 0, output[-4000:]
    assert reference.wait(timeout=300) == 0, reference.communicate()[1][-3000:]
    stopped_at = _preempted_step(sweep_dir / "0" / "metrics.jsonl")
    assert 30 <= stopped_at < 150
    _assert_same_weights(tmp_path / "reference", sweep_dir / "0", 150)
    states = _wait(lambda: _finished_states(job), "the job's end in its accounting", 60)
    assert states[0] == "REQUEUED" and states[-1] == "COMPLETED", states
