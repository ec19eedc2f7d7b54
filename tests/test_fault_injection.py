"""SIGKILL at random moments (a random number of steps into a resumed run, or in the middle of a
checkpoint write): `resume=auto` always continues from an intact checkpoint, and the run ends with
results.json and the weights of a run that was never killed."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, wait_for_step
from hat.engine.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow
RUN = [
    "dataset=shapes", "dataset.num_train=8", "dataset.num_val=8", "dataset.num_test=8",
    "encoder=tiny", "encoder.image.image_size=32", "hardware=cpu", "hardware.num_workers=0",
    "train.batch_size=8", "train.epochs=12", "train.freeze_epochs=1", "train.log_every=1",
    "optim.lr=1e-3", "logger=none",
]  # 5 steps an epoch: a checkpoint write every few seconds
KILLS = 10
DURING_WRITE = {2, 5, 8}  # these kills wait for a checkpoint's temporary file to appear


def _start(run_dir, *extra) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "train.py", *RUN, *extra, f"hydra.run.dir={run_dir}"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _kill_during_a_write(process: subprocess.Popen, checkpoints, timeout: float = 120) -> bool:
    """SIGKILL the run as soon as a checkpoint's temporary file exists; True when one was caught."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if checkpoints.is_dir() and any(checkpoints.glob(".*.tmp")):
            os.killpg(process.pid, signal.SIGKILL)
            return True
        time.sleep(0.0005)
    return False


def test_sigkill_at_random_moments_always_resumes_from_an_intact_checkpoint(tmp_path):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    straight = _start(tmp_path / "straight")
    run_dir, checkpoints = tmp_path / "killed", tmp_path / "killed" / "checkpoints"
    steps, caught_mid_write = [], 0
    for kill in range(KILLS):
        process = _start(run_dir, "resume=auto")
        if kill in DURING_WRITE:
            caught = _kill_during_a_write(process, checkpoints)
            caught_mid_write += caught and any(checkpoints.glob(".*.tmp"))
        else:
            # A few steps past where it resumed (fewer than an epoch's five, so the 10 kills cannot
            # carry the run to its end whatever the machine's speed), then a random fraction of a step.
            start = load_checkpoint(checkpoints / "last.pt")["step"] if (checkpoints / "last.pt").exists() else 0
            wait_for_step(run_dir / "metrics.jsonl", start + rng.randint(0, 4), process)
            time.sleep(rng.uniform(0.0, 0.3))
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
        assert process.returncode == -signal.SIGKILL, f"kill {kill} (seed {seed}): the run ended on its own first"
        if (checkpoints / "last.pt").exists():
            steps.append(load_checkpoint(checkpoints / "last.pt")["step"])  # intact: it loads
    assert steps == sorted(steps), f"a resumed run went back in steps: {steps} (seed {seed})"
    assert caught_mid_write >= 1, "no kill landed inside a checkpoint write"

    final = _start(run_dir, "resume=auto")
    assert final.wait(timeout=300) == 0, final.communicate()[1][-3000:]
    assert straight.wait(timeout=300) == 0, straight.communicate()[1][-3000:]
    assert not list(checkpoints.glob(".*.tmp")), "temporary files of killed writers are cleaned up"
    assert json.loads((run_dir / "results.json").read_text())["metrics"] == \
        json.loads((tmp_path / "straight" / "results.json").read_text())["metrics"]
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(checkpoints / "last.pt")
    assert a["step"] == b["step"] == 60
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name


def test_a_disk_that_fills_up_stops_the_run_with_one_line_and_loses_nothing_written(small_disk):
    # Epoch 0 writes best.pt and last.pt of about 6 MB each (the encoders frozen: no optimizer state
    # for them); epoch 1's checkpoint, with Adam's state of the unfrozen encoders, is about 18 MB and
    # cannot be written beside them on a 20 MB disk.
    disk = small_disk("20m")
    run_dir, checkpoints = disk / "run", disk / "run" / "checkpoints"
    run = [*(item for item in RUN if not item.startswith("train.epochs=")), "train.epochs=2",
           f"hydra.run.dir={run_dir}"]
    full = subprocess.run([sys.executable, "train.py", *run], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert full.returncode == 2, full.stderr[-3000:]
    assert "Traceback" not in full.stderr, full.stderr[-3000:]
    line = full.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: cannot write checkpoint {checkpoints}/"), line
    assert f": the disk is full (No space left on device); free space on {disk} (" in line, line
    assert line.endswith(f"then resume with resume=auto hydra.run.dir={run_dir}"), line
    assert sorted(path.name for path in checkpoints.iterdir()) == ["best.pt", "last.pt"]  # no temporary file
    assert load_checkpoint(checkpoints / "last.pt")["epoch"] == 1 and not (run_dir / "results.json").exists()

    small_disk.remount(disk, "size=64m")  # the space freed: the run goes on from epoch 0's checkpoint
    resumed = subprocess.run([sys.executable, "train.py", *run, "resume=auto"], cwd=ROOT, capture_output=True,
                             text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert load_checkpoint(checkpoints / "last.pt")["epoch"] == 2 and (run_dir / "results.json").is_file()
