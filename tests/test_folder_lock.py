"""The lock record of a run folder: who holds it, when a holder counts as dead, and what a holder
that was taken over learns."""

from __future__ import annotations

import logging
import os
import pickle
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hat.checks import ConfigError
from hat.engine.folder_lock import (
    GUARD_NAME,
    LOCK_NAME,
    FolderLock,
    RunFolderError,
    RunFolderTakenOver,
    _guarded,
)
from hat.engine.lock_record import read_record, write_record
from hat.engine.run_folder import RunFolder

WAIT_S = 30  # the bound on every poll below; none of them asserts how long it took


def _record(**fields) -> dict:
    now = time.time()
    record = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": None, "token": "theirs",
              "started": now - 60, "heartbeat": now, "slurm_job_id": None, "slurm_restart_count": None}
    return record | fields


def _ended_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _poll(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {WAIT_S} s"
        time.sleep(0.01)


@pytest.fixture
def no_slurm(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)


@pytest.fixture
def held(tmp_path, no_slurm):
    """A lock taken in ``tmp_path``, released after the test."""
    locks = []

    def take(**timing) -> FolderLock:
        lock = FolderLock(tmp_path, **timing)
        lock.acquire()
        locks.append(lock)
        return lock

    yield take
    for lock in locks:
        lock.release()


def test_the_record_names_its_holder_and_release_removes_it(tmp_path, held, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4711")
    lock = held()
    record = read_record(tmp_path / LOCK_NAME)
    assert {key: record[key] for key in ("host", "pid", "slurm_job_id", "slurm_restart_count")} == {
        "host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": "4711", "slurm_restart_count": None}
    assert record["started"] <= record["heartbeat"]
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()
    lock.release()  # a second release does nothing


def test_a_dead_holder_on_this_host_is_taken_over_with_a_warning(tmp_path, held, caplog):
    pid = _ended_pid()
    write_record(tmp_path / LOCK_NAME, _record(pid=pid, heartbeat=time.time()))
    with caplog.at_level(logging.WARNING, logger="hat.engine.folder_lock"):
        held()
    assert f"taking over the run folder {tmp_path} from pid {pid} on {socket.gethostname()}" in caplog.text
    assert "no longer running" in caplog.text
    assert read_record(tmp_path / LOCK_NAME)["pid"] == os.getpid()


def test_a_zombie_holder_counts_as_dead(tmp_path, held, caplog):
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # ends, and stays a zombie until waited for
    try:
        status = Path(f"/proc/{zombie.pid}/status")
        if not status.exists():
            pytest.skip("no /proc to tell a zombie")
        _poll(lambda: "\tZ" in status.read_text(), "zombie")
        write_record(tmp_path / LOCK_NAME, _record(pid=zombie.pid))
        with caplog.at_level(logging.WARNING, logger="hat.engine.folder_lock"):
            held()
        assert "no longer running" in caplog.text
    finally:
        zombie.wait()


def test_a_pid_reused_by_a_later_process_does_not_keep_the_folder(tmp_path, held):
    write_record(tmp_path / LOCK_NAME, _record(pid=os.getpid(), pid_start=1))  # this pid, but not this process
    if not Path(f"/proc/{os.getpid()}/stat").exists():
        pytest.skip("no /proc to tell when a process started")
    held()


def test_a_live_holder_on_this_host_is_refused_by_name(tmp_path, held):
    held()
    with pytest.raises(RunFolderError, match=rf"{tmp_path} is in use by another run \(pid {os.getpid()} on "):
        FolderLock(tmp_path).acquire()


def test_another_hosts_holder_is_refused_while_its_heartbeat_is_fresh(tmp_path, held, caplog):
    write_record(tmp_path / LOCK_NAME, _record(host="elsewhere-node", pid=1, heartbeat=time.time() - 5))
    with pytest.raises(RunFolderError, match=r"is in use by another run \(pid 1 on elsewhere-node since .*"
                                             r"its last heartbeat was \d+ s ago, it counts as ended after 300 s"):
        FolderLock(tmp_path).acquire()
    write_record(tmp_path / LOCK_NAME, _record(host="elsewhere-node", pid=1, heartbeat=time.time() - 400))
    with caplog.at_level(logging.WARNING, logger="hat.engine.folder_lock"):
        held()
    assert f"taking over the run folder {tmp_path} from pid 1 on elsewhere-node" in caplog.text
    assert "its last heartbeat was 400 s ago" in caplog.text


def test_a_clock_ahead_of_ours_reads_as_a_fresh_heartbeat(tmp_path, no_slurm):
    write_record(tmp_path / LOCK_NAME, _record(host="elsewhere-node", heartbeat=time.time() + 1000))
    with pytest.raises(RunFolderError, match="is in use by another run"):
        FolderLock(tmp_path).acquire()


def test_an_earlier_incarnation_of_this_slurm_job_is_taken_over_though_it_runs(tmp_path, held, monkeypatch, caplog):
    monkeypatch.setenv("SLURM_JOB_ID", "4711")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    write_record(tmp_path / LOCK_NAME, _record(slurm_job_id="4711", slurm_restart_count=1))  # this live pid
    with caplog.at_level(logging.WARNING, logger="hat.engine.folder_lock"):
        held()
    assert "SLURM restarted job 4711 (this is restart 2)" in caplog.text


def test_a_first_incarnation_without_restart_count_is_superseded_by_the_first_requeue(tmp_path, held, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4711")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    write_record(tmp_path / LOCK_NAME, _record(slurm_job_id="4711", slurm_restart_count=None))
    held()


@pytest.mark.parametrize(("job", "restart"), [("4711", 2), ("4711", 3), ("999", 0)])
def test_the_same_or_a_later_incarnation_or_another_job_is_not_superseded(tmp_path, monkeypatch, job, restart):
    monkeypatch.setenv("SLURM_JOB_ID", "4711")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    write_record(tmp_path / LOCK_NAME, _record(slurm_job_id=job, slurm_restart_count=restart))
    with pytest.raises(RunFolderError, match=r"is in use by another run"):
        FolderLock(tmp_path).acquire()


def test_a_holder_taken_over_stops_and_leaves_the_new_record_alone(tmp_path, held, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4711")
    ghost = held(check_every_s=3600)  # only fresh=True reads the record here
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    requeued = held()
    ghost.check_held()  # not read yet, and the heartbeat (30 s) has not looked
    with pytest.raises(RunFolderTakenOver) as taken:
        ghost.check_held(fresh=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(read_record(tmp_path / LOCK_NAME)["started"]))
    assert str(taken.value) == (
        f"the run folder {tmp_path} was taken over by pid {os.getpid()} on {socket.gethostname()} "
        f"(SLURM job 4711, restart 1) at {started}; this process stops without writing")
    assert isinstance(taken.value, ConfigError)
    with pytest.raises(RunFolderTakenOver):
        ghost.check_held()  # from now on without reading
    record = read_record(tmp_path / LOCK_NAME)
    ghost.release()
    assert read_record(tmp_path / LOCK_NAME) == record
    requeued.check_held(fresh=True)
    requeued.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_the_heartbeat_notices_a_takeover_and_stops_beating(tmp_path, held, caplog):
    ghost = held(heartbeat_s=0.02, check_every_s=3600)
    record = _record(host="elsewhere-node", token="new")
    write_record(tmp_path / LOCK_NAME, record)  # as a takeover from another host writes it

    def stopped() -> bool:
        try:
            ghost.check_held()  # the flag only: check_every_s keeps it from reading
        except RunFolderTakenOver:
            return True
        return False

    with caplog.at_level(logging.WARNING, logger="hat.engine.folder_lock"):
        _poll(stopped, "takeover noticed")
    assert "was taken over by pid" in caplog.text
    assert ghost._thread is not None
    ghost._thread.join(WAIT_S)
    assert not ghost._thread.is_alive()
    assert read_record(tmp_path / LOCK_NAME) == record


def test_a_removed_record_stops_its_holder(tmp_path, held):
    lock = held()
    (tmp_path / LOCK_NAME).unlink()
    with pytest.raises(RunFolderTakenOver, match="lost its lock record"):
        lock.check_held(fresh=True)


def test_the_heartbeat_advances_while_held(tmp_path, held):
    held(heartbeat_s=0.02)
    first = read_record(tmp_path / LOCK_NAME)
    _poll(lambda: (read_record(tmp_path / LOCK_NAME) or first)["heartbeat"] > first["heartbeat"], "new heartbeat")
    now = read_record(tmp_path / LOCK_NAME)
    assert {k: v for k, v in now.items() if k != "heartbeat"} == {k: v for k, v in first.items() if k != "heartbeat"}


def test_check_held_does_nothing_where_the_folder_is_not_held(tmp_path, no_slurm):
    FolderLock(tmp_path).check_held(fresh=True)  # as on ranks other than 0
    write_record(tmp_path / LOCK_NAME, _record(host="elsewhere-node"))
    FolderLock(tmp_path).check_held(fresh=True)


def test_an_old_plain_text_lock_file_is_no_holder(tmp_path, held):
    (tmp_path / LOCK_NAME).write_text("pid 12 on somewhere since 2024-01-01 00:00:00")
    held()


def test_a_refused_fresh_run_leaves_no_record_behind(tmp_path, no_slurm):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"an earlier run's weights")
    folder = RunFolder(tmp_path)
    with pytest.raises(RunFolderError, match="already holds checkpoints"):
        folder.acquire(resume=None)
    assert not folder.held and not (tmp_path / LOCK_NAME).exists()


@pytest.mark.parametrize("error", [
    RunFolderError("the run folder /x is in use by another run (pid 1 on h since t); wait"),
    RunFolderTakenOver("the run folder /x was taken over by pid 2 on h at t; this process stops without writing",
                       {"pid": 2, "host": "h", "token": "t"}),
])
def test_the_errors_survive_pickling_between_processes(error):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error)
    assert getattr(copy, "holder", None) == getattr(error, "holder", None)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_process_forked_while_the_guard_is_held_does_not_keep_it(tmp_path):
    """A data loader worker forked during a heartbeat must not hold the guard for its whole life."""
    read, write = os.pipe()
    with _guarded(tmp_path / GUARD_NAME, WAIT_S):
        child = os.fork()
        if child == 0:  # pragma: no cover (the child)
            os.close(write)
            os.read(read, 1)  # lives until the parent has taken the guard again
            os._exit(0)
    os.close(read)
    try:
        with _guarded(tmp_path / GUARD_NAME, 5):  # a TimeoutError if the child still shared the flock
            pass
    finally:
        os.write(write, b"x")
        os.close(write)
        os.waitpid(child, 0)


CONTENDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from hat.engine.folder_lock import FolderLock, RunFolderError
    folder, go, done = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    lock = FolderLock(folder)
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.001)
    try:
        lock.acquire()
        print("won", flush=True)
    except RunFolderError:
        print("refused", flush=True)
    while not done.exists():  # a winner holds on until every contender has tried
        time.sleep(0.01)
    lock.release()
""")


def test_contenders_starting_at_the_same_instant_on_one_host_leave_one_winner(tmp_path, no_slurm):
    go, done = tmp_path / "go", tmp_path / "done"
    folder = tmp_path / "run"
    folder.mkdir()
    contenders = [subprocess.Popen([sys.executable, "-c", CONTENDER, str(folder), str(go), str(done)],
                                   stdout=subprocess.PIPE, text=True) for _ in range(4)]
    try:
        for contender in contenders:
            assert contender.stdout.readline().strip() == "ready"
        go.touch()
        outcomes = [contender.stdout.readline().strip() for contender in contenders]
    finally:
        done.touch()
        for contender in contenders:
            contender.wait(WAIT_S)
    assert sorted(outcomes) == ["refused", "refused", "refused", "won"]
    assert not (folder / LOCK_NAME).exists(), "the winner removed its record on release"
