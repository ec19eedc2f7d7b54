"""The run folder: writable, locked against a second run, never silently overwritten, cleaned of
the temporary files of killed writers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, TINY_RUN, wait_for_step
from hat.engine.loop import train
from hat.engine.preemption import EXIT_PREEMPTED
from hat.engine.run_folder import RunFolder, RunFolderError


def test_a_second_holder_of_the_folder_is_refused_with_the_first_one_named(tmp_path):
    first = RunFolder(tmp_path)
    first.acquire(resume=None)
    with pytest.raises(RunFolderError, match=rf"{tmp_path} is in use by another run \(pid {os.getpid()} on "):
        RunFolder(tmp_path).acquire(resume="auto")
    first.release()
    RunFolder(tmp_path).acquire(resume="auto")  # free again once released


def test_a_folder_that_cannot_be_written_is_refused_before_any_work(tmp_path):
    (tmp_path / "checkpoints").write_text("a file where the checkpoints folder should be")
    with pytest.raises(RunFolderError, match=rf"the run folder {tmp_path} cannot be written .*hydra.run.dir"):
        RunFolder(tmp_path).acquire(resume=None)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_checkpoints_folder_is_refused_before_any_work(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints").chmod(0o555)
    with pytest.raises(RunFolderError, match="cannot be written"):
        RunFolder(tmp_path).acquire(resume=None)


def test_a_fresh_run_into_a_folder_with_checkpoints_stops_and_says_how_to_continue(tmp_path, tiny_config):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"an earlier run's weights")
    with pytest.raises(RunFolderError, match=r"already holds checkpoints \(last.pt\).*resume=auto.*hydra.run.dir"):
        train(tiny_config("logger=none"), tmp_path)
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == b"an earlier run's weights"


def test_temporary_files_of_killed_writers_are_removed_and_finished_files_kept(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    stale = [checkpoints / ".last.pt.k2j4.tmp", tmp_path / ".results.json.9x1.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    for name in ("last.pt", "best.pt"):
        (checkpoints / name).write_bytes(b"kept")
    RunFolder(tmp_path).acquire(resume="auto")
    assert not any(path.exists() for path in stale)
    assert all((checkpoints / name).read_bytes() == b"kept" for name in ("last.pt", "best.pt"))


@pytest.mark.slow
def test_two_runs_in_one_folder_the_second_refuses_before_building_anything(tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, "train.py", *TINY_RUN, "train.epochs=50", "train.log_every=1", "logger=none",
               f"hydra.run.dir={run_dir}", "resume=auto"]
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600  # a hang guard only
        while not (run_dir / "metrics.jsonl").is_file():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-3000:]
            time.sleep(0.1)
        second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)  # a hang guard
        assert second.returncode == 2, second.stderr[-3000:]
        assert f"error: the run folder {run_dir} is in use by another run (pid {first.pid} on " in second.stderr
        # Refused at the folder's lock, without waiting for it: no device, dataset or model of its own.
        assert "] - device " not in second.stdout and "] - dataset " not in second.stdout, second.stdout[-3000:]
        assert "] - model: " not in second.stdout, second.stdout[-3000:]
        assert first.poll() is None, "the first run goes on"
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=120)
    assert first.returncode == EXIT_PREEMPTED, first.stderr.read()[-3000:]
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if "train/loss" in line]
    assert steps == list(range(1, steps[-1] + 1)), "only the first run wrote metrics, each step once"


@pytest.mark.slow
def test_a_ghost_whose_folder_was_taken_over_stops_without_writing(tmp_path, monkeypatch):
    """SLURM requeued a job whose node stopped answering, and the old processes still train: the
    requeued job (restart 1 of the same SLURM job) takes the folder over, and the ghost (restart 0)
    stops at its next check with the new holder named, writing no checkpoint from then on."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SLURM_JOB_ID": "4242", "SLURM_RESTART_COUNT": "0"}
    ghost = subprocess.Popen(
        [sys.executable, "train.py", *TINY_RUN, "train.epochs=40", "train.log_every=1", "logger=none",
         f"hydra.run.dir={tmp_path}"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    wait_for_step(tmp_path / "metrics.jsonl", 16, ghost)  # past the first epoch: `last` and `best` exist
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    requeued = RunFolder(tmp_path)
    requeued.acquire(resume="auto")
    try:
        written = {name: (tmp_path / "checkpoints" / name).read_bytes() for name in ("last.pt", "best.pt")}
        _, stderr = ghost.communicate(timeout=120)
        assert ghost.returncode == 2, stderr[-3000:]
        assert f"error: the run folder {tmp_path} was taken over by pid {os.getpid()}" in stderr, stderr[-3000:]
        for name, content in written.items():
            assert (tmp_path / "checkpoints" / name).read_bytes() == content, f"the ghost wrote {name}"
        requeued.check_held(fresh=True)  # the ghost left the new holder's record alone
    finally:
        requeued.release()
        if ghost.poll() is None:
            ghost.kill()


def _checkpoints(folder, *names):
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / "checkpoints" / name).write_bytes(b"a checkpoint")


def test_resume_from_another_folder_into_one_with_checkpoints_is_refused_with_the_two_ways_out(tmp_path):
    _checkpoints(tmp_path / "source", "last.pt", "best.pt")
    _checkpoints(tmp_path / "run", "last.pt", "best.pt")
    source = tmp_path / "source" / "checkpoints" / "last.pt"
    refusal = r"already holds checkpoints \(last.pt, best.pt\) of another run"
    with pytest.raises(RunFolderError, match=refusal) as refused:
        RunFolder(tmp_path / "run").acquire(resume=str(source))
    assert "hydra.run.dir=PATH" in str(refused.value) and "resume=auto" in str(refused.value)
    assert (tmp_path / "run" / "checkpoints" / "best.pt").read_bytes() == b"a checkpoint"
    for folder, resume in ((tmp_path / "run", tmp_path / "run" / "checkpoints" / "last.pt"),  # its own: fine
                           (tmp_path / "empty", source)):  # into a folder of its own: fine
        taken = RunFolder(folder)
        taken.acquire(resume=str(resume))
        taken.release()


def test_resume_auto_with_checkpoints_but_no_last_is_refused_naming_them(tmp_path):
    _checkpoints(tmp_path, "best.pt")
    with pytest.raises(RunFolderError, match=r"resume=auto: the run folder .* holds best.pt but no last.pt") as refused:
        RunFolder(tmp_path).acquire(resume="auto")
    assert f"init_weights={tmp_path / 'checkpoints' / 'best.pt'}" in str(refused.value)


@pytest.mark.slow
def test_a_refused_run_leaves_the_folder_s_hydra_record_and_results_untouched(tmp_path):
    """A second `train.py` into a finished run's folder is refused before it writes anything, Hydra's
    `.hydra/` included, so the folder still tells the first run's overrides."""
    command = [sys.executable, "train.py", *TINY_RUN, "train.epochs=1", "logger=none", f"hydra.run.dir={tmp_path}"]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=300)
    before = {path: path.read_bytes() for path in [*(tmp_path / ".hydra").iterdir(), tmp_path / "results.json"]}
    assert "seed=5" not in (tmp_path / ".hydra" / "overrides.yaml").read_text()
    refused = subprocess.run([*command, "seed=5"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "already holds checkpoints" in refused.stderr, refused.stderr[-2000:]
    assert {path: path.read_bytes() for path in before} == before
    assert json.loads((tmp_path / "results.json").read_text())["overrides"] == [*TINY_RUN, "train.epochs=1",
                                                                                "logger=none"]
