"""Stop signals end a run at a safe point with `last` written and exit status 75; resume=auto finishes it.

In-process tests raise the signal from inside the run at a chosen moment (a training step, the
validation, the test); the subprocess tests signal a real `train.py` from outside, with loader
workers, as a terminal, `timeout` or a scheduler would.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import hat.engine.loop as loop
import hat.engine.training_run as training_run
from conftest import ROOT, TINY_RUN, descendants, wait_for_step
from hat.engine.checkpoint import load_checkpoint
from hat.engine.preemption import (
    EXIT_PREEMPTED,
    Preempted,
    PreemptionSignals,
    StopRequested,
    requeue_signal,
    stop_signals,
)

STOP_SIGNALS = [signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2]
RUN = [*TINY_RUN, "train.epochs=3", "train.log_every=1", "logger=none"]


def _signal_at_step(monkeypatch, signum, at_step: int, times: int = 1) -> None:
    """Make the training step raise ``signum`` (``times`` times) in the middle of step ``at_step``."""
    real, calls = training_run.training_step, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == at_step:
            for _ in range(times):
                signal.raise_signal(signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(training_run, "training_step", step)


def _signal_while_scoring(monkeypatch, signum, split: str) -> None:
    """Make the first scoring of ``split`` (val or test) receive ``signum`` halfway."""
    real, sent = training_run.score_split, []

    def score(model, data, *args, **kwargs):
        if data.name == split and not sent:
            sent.append(1)
            signal.raise_signal(signum)
        return real(model, data, *args, **kwargs)

    monkeypatch.setattr(training_run, "score_split", score)


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=[s.name for s in STOP_SIGNALS])
def test_each_stop_signal_finishes_the_step_and_writes_last(tmp_path, tiny_config, monkeypatch, signum):
    _signal_at_step(monkeypatch, signum, at_step=3)
    with pytest.raises(Preempted, match=f"interrupted by {signum.name} at step 3"):
        loop.train(tiny_config("train.epochs=1", "logger=none"), tmp_path)
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert (last["epoch"], last["batch"], last["step"]) == (0, 3, 3)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["train/preempted_at_step"] == 3
    assert not (tmp_path / "results.json").exists()


def test_a_second_signal_while_stopping_still_ends_with_last_written(tmp_path, tiny_config, monkeypatch):
    _signal_at_step(monkeypatch, signal.SIGTERM, at_step=2, times=2)
    real_save, during_save = training_run.save_checkpoint, []

    def save(state, path):
        during_save.append(path.name)
        signal.raise_signal(signal.SIGINT)  # a third one, in the middle of writing `last`
        real_save(state, path)

    monkeypatch.setattr(training_run, "save_checkpoint", save)
    with pytest.raises(Preempted, match="SIGTERM at step 2"):
        loop.train(tiny_config("train.epochs=1", "logger=none"), tmp_path)
    assert during_save == ["last.pt"]
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 2


def test_a_signal_during_validation_stops_it_and_the_resumed_run_validates_first(tmp_path, tiny_config, monkeypatch):
    straight = tmp_path / "straight"
    loop.train(tiny_config("train.epochs=2", "logger=none"), straight)

    stopped = tmp_path / "stopped"
    with monkeypatch.context() as patch:
        _signal_while_scoring(patch, signal.SIGTERM, "val")
        with pytest.raises(Preempted, match="at step 15"):
            loop.train(tiny_config("train.epochs=2", "logger=none"), stopped)
    mid = load_checkpoint(stopped / "checkpoints" / "last.pt")
    assert (mid["epoch"], mid["batch"], mid["step"], mid["validated_step"]) == (1, 0, 15, 0)
    assert not (stopped / "checkpoints" / "best.pt").exists()

    loop.train(tiny_config("train.epochs=2", "logger=none", "resume=auto"), stopped)
    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(stopped / "checkpoints" / "last.pt")
    assert (a["best_epoch"], a["best_metric"]) == (b["best_epoch"], b["best_metric"])
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    validated = [json.loads(line)["step"] for line in (stopped / "metrics.jsonl").read_text().splitlines()
                 if "val/rsum" in line]
    assert validated == [15, 30], "the interrupted validation ran once, on resume, before training went on"


def test_a_signal_during_the_final_test_stops_it_and_resume_only_tests(tmp_path, tiny_config, monkeypatch, caplog):
    with monkeypatch.context() as patch:
        _signal_while_scoring(patch, signal.SIGUSR2, "test")
        with pytest.raises(Preempted, match="SIGUSR2 at step 15"):
            loop.train(tiny_config("train.epochs=1", "logger=none"), tmp_path)
    assert not (tmp_path / "results.json").exists()
    done = load_checkpoint(tmp_path / "checkpoints" / "last.pt")

    outcome = loop.train(tiny_config("train.epochs=1", "logger=none", "resume=auto"), tmp_path)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == done["step"] == 15
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["metrics"] == pytest.approx(outcome.test)
    assert outcome.best_monitor == done["best_metric"]


def test_interruptible_blocks_stop_at_once_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    with PreemptionSignals() as signals:
        assert signal.getsignal(signal.SIGTERM) != before
        with pytest.raises(StopRequested), signals.interruptible():
            signal.raise_signal(signal.SIGUSR1)
            pytest.fail("the signal should have ended the block")
        assert signals.requested == "SIGUSR1"
        with pytest.raises(StopRequested), signals.interruptible():
            pass  # a stop already requested ends the next block before it starts
    assert signal.getsignal(signal.SIGTERM) == before


LEAVING_PROCESS = """
import atexit, os, signal, sys, time
from hat.engine.preemption import PreemptionSignals

signum = signal.Signals[sys.argv[1]]
atexit.register(lambda: (os.kill(os.getpid(), signum), time.sleep(0.5)))  # a repeat, during shutdown
with PreemptionSignals() as signals:
    signal.raise_signal(signum)
    assert signals.requested == signum.name
    signals.ignore_until_exit()
    sys.exit(75)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_stop_signal_repeated_while_the_process_exits_keeps_its_exit_status(signum):
    leaving = subprocess.run([sys.executable, "-c", LEAVING_PROCESS, signum.name],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert leaving.returncode == EXIT_PREEMPTED, leaving.stderr[-2000:]
    assert "Traceback" not in leaving.stderr


def test_submitit_preemption_signal_is_read_from_its_environment_variable(monkeypatch):
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    assert requeue_signal() == signal.SIGUSR2
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "HUP")
    assert requeue_signal() == signal.SIGHUP and signal.SIGHUP in stop_signals()
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "NOPE")
    with pytest.raises(ValueError, match="SUBMITIT_PREEMPT_SIGNAL='NOPE' is not a signal name"):
        stop_signals()


def _train(run_dir, *extra) -> subprocess.Popen:
    """``train.py`` as the leader of its own process group (like a job under a shell or a scheduler)."""
    return subprocess.Popen(
        [sys.executable, "train.py", *RUN, *extra, f"hydra.run.dir={run_dir}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )




def _sigterm_the_group_twice(pid: int) -> None:
    """`kill -- -PGID` (GNU timeout, a terminal, torchrun's agent), repeated 0.2 s later."""
    os.killpg(pid, signal.SIGTERM)
    time.sleep(0.2)
    os.killpg(pid, signal.SIGTERM)


def _sigterm_every_process(pid: int) -> None:
    """What SLURM does to a job step: SIGTERM to each of its processes by pid, loader workers included."""
    workers = descendants(pid)
    assert len(workers) >= 2, "the run should have its loader workers by now"
    for each in [*workers, pid]:
        os.kill(each, signal.SIGTERM)


@pytest.fixture(scope="module")
def straight_run_with_workers(tmp_path_factory) -> Path:
    """The last checkpoint of the loader-worker run below, trained without a stop."""
    run_dir = tmp_path_factory.mktemp("straight")
    straight = _train(run_dir, *WITH_WORKERS)
    assert straight.wait(timeout=300) == 0, straight.communicate()[1][-3000:]
    return run_dir / "checkpoints" / "last.pt"


WITH_WORKERS = "hardware.num_workers=2", "train.epochs=2"


@pytest.mark.slow
@pytest.mark.parametrize("send", [_sigterm_the_group_twice, _sigterm_every_process], ids=["group", "every-process"])
def test_sigterm_with_loader_workers_writes_last_and_resumes_identically(tmp_path, straight_run_with_workers, send):
    """Loader workers survive a SIGTERM sent to the group or to each of them: the run finishes its
    step, writes `last` and exits 75, and resuming ends on the weights of the run never stopped."""
    interrupted = _train(tmp_path, *WITH_WORKERS)
    wait_for_step(tmp_path / "metrics.jsonl", 3, interrupted)
    send(interrupted.pid)
    _, stderr = interrupted.communicate(timeout=120)
    assert interrupted.returncode == EXIT_PREEMPTED, stderr[-3000:]
    assert "interrupted by SIGTERM" in stderr and "killed by signal" not in stderr

    stopped = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert 3 <= stopped["step"] and 0 < stopped["batch"] < 15, "the checkpoint should sit inside an epoch"
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["train/preempted_at_step"] == stopped["step"]

    resumed = _train(tmp_path, *WITH_WORKERS, "resume=auto")
    assert resumed.wait(timeout=300) == 0, resumed.communicate()[1][-3000:]
    a = load_checkpoint(straight_run_with_workers)
    b = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 30
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name


@pytest.mark.slow
def test_a_closed_terminal_sighup_mid_epoch_writes_last_and_exits_75(tmp_path):
    """A run in a real terminal (a pty) whose terminal goes away: the kernel sends SIGHUP, the run
    writes `last` at the step reached and exits 75, though nothing it prints can be shown any more."""
    pid, terminal = pty.fork()
    if pid == 0:  # the child: a session leader whose controlling terminal is the pty
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, "train.py", *RUN, *WITH_WORKERS, f"hydra.run.dir={tmp_path}"])
    metrics, shown = tmp_path / "metrics.jsonl", bytearray()
    deadline = time.monotonic() + 180
    while not (metrics.is_file() and '"step": 3' in metrics.read_text()):
        assert time.monotonic() < deadline, f"no step 3 within 180 s: {shown[-3000:].decode(errors='replace')}"
        if select.select([terminal], [], [], 0.1)[0]:  # keep reading, as a terminal does
            shown += os.read(terminal, 65536)
    os.close(terminal)
    _, status = os.waitpid(pid, 0)
    log = (tmp_path / "train.log").read_text()
    assert os.waitstatus_to_exitcode(status) == EXIT_PREEMPTED, log[-3000:]
    assert "received SIGHUP" in log
    stopped = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert 3 <= stopped["step"] and 0 < stopped["batch"] < 15, "the checkpoint should sit inside an epoch"
    lines = metrics.read_text().splitlines()
    assert json.loads(lines[-1])["train/preempted_at_step"] == stopped["step"]
