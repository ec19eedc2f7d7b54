"""SIGTERM/SIGUSR1 stop a run at a step boundary with `last` written and exit status 75; resume=auto finishes it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, TINY_RUN
from hat.engine.checkpoint import load_checkpoint
from hat.engine.preemption import EXIT_PREEMPTED, PreemptionSignals

pytestmark = pytest.mark.slow
RUN = [*TINY_RUN, "train.epochs=3", "train.log_every=1"]


def _train(run_dir, *extra) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "train.py", *RUN, *extra, f"hydra.run.dir={run_dir}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_for_step(metrics, step: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metrics.is_file() and any(
            json.loads(line).get("step", 0) >= step for line in metrics.read_text().splitlines() if line
        ):
            return
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.05)
    raise AssertionError(f"no step {step} within {timeout} s")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_signal_stops_mid_epoch_with_status_75_and_resume_matches_an_uninterrupted_run(tmp_path, signum):
    straight = _train(tmp_path / "straight")
    interrupted_dir = tmp_path / "interrupted"
    interrupted = _train(interrupted_dir)
    _wait_for_step(interrupted_dir / "metrics.jsonl", 3, interrupted)
    interrupted.send_signal(signum)
    _, stderr = interrupted.communicate(timeout=120)
    assert interrupted.returncode == EXIT_PREEMPTED, stderr[-3000:]
    assert f"interrupted by {signal.Signals(signum).name}" in stderr

    stopped = load_checkpoint(interrupted_dir / "checkpoints" / "last.pt")
    assert 0 < stopped["batch"] < 15, "the checkpoint should sit inside an epoch"
    lines = (interrupted_dir / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["train/preempted_at_step"] == stopped["step"]

    resumed = _train(interrupted_dir, "resume=auto")
    assert resumed.wait(timeout=300) == 0, resumed.communicate()[1][-3000:]
    assert straight.wait(timeout=300) == 0, straight.communicate()[1][-3000:]
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(interrupted_dir / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 45
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name


def test_handlers_are_restored_after_the_run():
    before = signal.getsignal(signal.SIGTERM)
    with PreemptionSignals() as signals:
        assert signal.getsignal(signal.SIGTERM) != before
        signal.raise_signal(signal.SIGTERM)
        assert signals.requested == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) == before
