"""Two processes under torchrun (gloo on the CPU) equal one process with the global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, TINY_RUN
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
        assert error <= 1e-5 * grad.abs().max().item() + 1e-6, (name, error)
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
