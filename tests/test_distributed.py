"""Two processes under torchrun (gloo on the CPU) equal one process with the global batch."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, TINY_RUN, descendants, wait_for_step
from hat.data.datasets import EpochShuffleSampler

pytestmark = pytest.mark.slow
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def test_sampler_shards_interleave_into_the_single_process_batches():
    single = list(EpochShuffleSampler(40, seed=3, batch_size=8))
    shards = [list(EpochShuffleSampler(40, seed=3, batch_size=4, rank=r, world_size=2)) for r in range(2)]
    rebuilt = [i for k in range(5) for shard in shards for i in shard[4 * k : 4 * k + 4]]
    assert rebuilt == single


@pytest.mark.parametrize("chunks", [1, 2], ids=["plain", "gradcache"])
def test_two_processes_give_the_loss_gradients_and_metrics_of_one_with_twice_the_batch(tmp_path, chunks):
    script = str(ROOT / "tests" / "distributed_step.py")
    one = subprocess.run([sys.executable, script, str(tmp_path / "one.pt")], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([*TORCHRUN, script, str(tmp_path / "two.pt"), str(chunks)], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    torch.testing.assert_close(b["loss"], a["loss"], rtol=1e-5, atol=1e-5)
    assert a["grads"].keys() == b["grads"].keys()
    for name, grad in a["grads"].items():  # float32 noise, measured against each tensor's own scale
        error = (b["grads"][name] - grad).abs().max().item()
        assert error <= 2e-5 * grad.abs().max().item() + 1e-5, (name, error)
    assert b["metrics"] == pytest.approx(a["metrics"])


def test_torchrun_training_writes_one_run_directory(tmp_path):
    result = subprocess.run(
        [*TORCHRUN, str(ROOT / "train.py"), *TINY_RUN, "hardware=ddp", "hardware.device=cpu",
         "hardware.num_workers=0", "train.batch_size=4", "train.epochs=1", "train.log_every=1"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [p for p in (tmp_path / "runs").glob("*/*") if p.is_dir()]
    assert len(runs) == 1, runs
    run = runs[0]
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "results.json").is_file()
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [line["step"] for line in logged if "train/loss" in line]
    assert steps == sorted(set(steps)) == list(range(1, 16)), "one writer: each step logged once"


def _torchrun_training(run_dir, *extra) -> subprocess.Popen:
    return subprocess.Popen(
        [*TORCHRUN, str(ROOT / "train.py"), *TINY_RUN, "hardware=ddp", "hardware.device=cpu",
         "hardware.num_workers=0", "train.batch_size=4", "train.epochs=3", "train.log_every=1", "logger=none",
         f"hydra.run.dir={run_dir}", *extra],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )



def _worker_pids(agent: int) -> dict[int, int]:
    """``{rank: pid}`` of the training processes torchrun's agent started."""
    pids = {}
    for child in Path(f"/proc/{agent}/task/{agent}/children").read_text().split():
        environ = dict(item.split("=", 1) for item in
                       Path(f"/proc/{child}/environ").read_bytes().decode().split("\0") if "=" in item)
        if "RANK" in environ:
            pids[int(environ["RANK"])] = int(child)
    return pids


WITH_WORKERS = ("hardware.num_workers=2",)


@pytest.fixture(scope="module")
def straight_torchrun(tmp_path_factory) -> Path:
    """The last checkpoint of the two-process run with loader workers below, never stopped."""
    run_dir = tmp_path_factory.mktemp("straight")
    agent = _torchrun_training(run_dir, *WITH_WORKERS)
    assert agent.wait(timeout=300) == 0, agent.communicate()[1][-3000:]
    return run_dir / "checkpoints" / "last.pt"



def _sigterm_the_group(agent: int) -> None:
    os.killpg(agent, signal.SIGTERM)  # the agent forwards it too: each rank gets it twice


def _sigterm_every_process(agent: int) -> None:
    """As SLURM stops a job step: SIGTERM to the agent, each rank and each loader worker, by pid."""
    processes = descendants(agent)
    assert len(processes) >= 6, "two ranks with two loader workers each"
    for pid in [*processes, agent]:
        os.kill(pid, signal.SIGTERM)


@pytest.mark.parametrize("send", [_sigterm_the_group, _sigterm_every_process], ids=["group", "every-process"])
def test_sigterm_to_a_torchrun_job_with_workers_writes_last_every_rank_exits_75_and_resume_is_exact(
        tmp_path, straight_torchrun, send):
    run_dir = tmp_path / "run"
    agent = _torchrun_training(run_dir, *WITH_WORKERS)
    wait_for_step(run_dir / "metrics.jsonl", 3, agent)
    send(agent.pid)
    _, stderr = agent.communicate(timeout=120)
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert 3 <= last["step"] < 45 and len(last["rng"]) == 2
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["train/preempted_at_step"] == last["step"]
    stopped = re.findall(r"preempted: interrupted by SIGTERM at step (\d+)", stderr)  # one line per rank
    assert stopped == [str(last["step"])] * 2 and stderr.count("(exit status 75)") == 2, stderr[-3000:]
    assert "killed by signal" not in stderr

    resumed = _torchrun_training(run_dir, *WITH_WORKERS, "resume=auto")
    assert resumed.wait(timeout=300) == 0, resumed.communicate()[1][-3000:]
    a = torch.load(straight_torchrun, weights_only=True)
    b = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 45
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name


def test_a_stopped_process_fails_the_run_after_dist_timeout_instead_of_blocking_it(tmp_path):
    run_dir = tmp_path / "run"
    agent = _torchrun_training(run_dir, "hardware.dist_timeout=10")
    wait_for_step(run_dir / "metrics.jsonl", 3, agent)
    workers = _worker_pids(agent.pid)
    os.kill(workers[1], signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:  # rank 0 ends while rank 1 is still stopped: it gave up on it rather than blocking
        while Path(f"/proc/{workers[0]}").exists() and "zombie" not in Path(f"/proc/{workers[0]}/status").read_text():
            assert time.monotonic() - stopped_at < 600, "rank 0 still waits for the stopped rank"  # a hang guard
            time.sleep(0.2)
        waited = time.monotonic() - stopped_at
    finally:
        os.kill(workers[1], signal.SIGCONT)
    _, stderr = agent.communicate(timeout=600)
    assert agent.returncode != 0
    assert waited >= 9, f"rank 0 ended {waited:.1f} s after rank 1 stopped: before its dist_timeout of 10 s"
    assert "error: process 0 of 2 waited longer than hardware.dist_timeout=10 s" in stderr, stderr[-3000:]
