"""The lock record of a run folder: what it holds, how it is read and written, and whether its holder lives.

The holder of a run folder describes itself in ``<run dir>/.lock``, a small JSON record: host,
pid, a random token, start time, heartbeat time (wall clock) and, under SLURM, the job id and
restart count. The record is replaced whole (a temporary file in the same folder, then
``os.replace``), so a reader sees the old record or the new one, never half of one.

A run that finds a record decides whether its holder still lives:

- holder on this host: alive while its pid runs (a zombie, or a pid since reused by a process
  started later, counts as dead);
- holder on another host: alive while its heartbeat is younger than ``stale_after_s``;
- holder from an earlier incarnation of this SLURM job (same ``SLURM_JOB_ID``, lower
  ``SLURM_RESTART_COUNT``): dead whatever its pid or heartbeat says. SLURM requeued the job, so
  that process is a ghost on a node that stopped answering.

What the judgement cannot promise:

- Heartbeats compare the wall clocks of different hosts: they must agree to well within
  ``stale_after_s`` (NTP does this).
- A network filesystem may show one host's write to another only after its attribute cache
  expires (seconds, up to a minute): ``stale_after_s`` (10 heartbeats, 300 s by default) stays
  far above that.
- "This host" means the same ``socket.gethostname()``: two containers sharing a hostname but not
  a pid namespace would misjudge each other's pids.

This module holds the pure parts (the record, its reading and writing, the decision); the class
that takes, beats, checks and releases the record is :class:`hat.engine.folder_lock.FolderLock`.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import tempfile
import time
from pathlib import Path


def read_record(path: Path) -> dict | None:
    """The lock record at ``path``; ``None`` when there is none, or only an unreadable one (such as the
    plain-text lock file of older versions). Other I/O errors are raised."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("token"), str) else None


def write_record(path: Path, record: dict) -> None:
    """Replace ``path`` with ``record`` whole: a temporary file beside it, then ``os.replace``."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(record, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def own_record() -> dict:
    """A new record naming this process as the holder, with a fresh token."""
    now = time.time()
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_start": _process_start(os.getpid()),
        "token": secrets.token_hex(16),
        "started": now,
        "heartbeat": now,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID") or None,
        "slurm_restart_count": _int_or_none(os.environ.get("SLURM_RESTART_COUNT")),
    }


def dead_because(record: dict, me: dict, stale_after_s: float) -> str | None:
    """Why ``record``'s holder counts as dead, worded to follow "taking over ... from <holder>"; ``None``
    while it lives. ``me``: this process's own record."""
    if _superseded(record, me):
        return (f": SLURM restarted job {me['slurm_job_id']} (this is restart {me['slurm_restart_count'] or 0}), "
                f"so that process belongs to an earlier incarnation of the job")
    if record.get("host") == me["host"]:
        return None if _pid_alive(record.get("pid"), record.get("pid_start")) else ", which is no longer running"
    age = heartbeat_age(record)
    if age is not None and age < stale_after_s:
        return None
    seen = "it never wrote a heartbeat" if age is None else f"its last heartbeat was {age:.0f} s ago"
    return f": {seen} (a holder on another host counts as ended after {stale_after_s:.0f} s without one)"


def _superseded(record: dict, me: dict) -> bool:
    """Whether ``record`` comes from an earlier incarnation of this process's SLURM job."""
    job = me["slurm_job_id"]
    if job is None or str(record.get("slurm_job_id")) != job:
        return False
    theirs = _int_or_none(record.get("slurm_restart_count")) or 0  # SLURM sets the count from the first requeue on
    return theirs < (me["slurm_restart_count"] or 0)


def _pid_alive(pid, started) -> bool:
    """Whether process ``pid`` of this host runs: it exists, is no zombie, and (where both are known)
    started when the holder did, so that a pid reused by a later process does not count."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True  # no /proc (or it just ended): the signal said it exists
    if any(line.split()[1:2] == ["Z"] for line in status.splitlines() if line.startswith("State:")):
        return False
    now_started = _process_start(pid)
    return started is None or now_started is None or now_started == started


def heartbeat_age(record: dict) -> float | None:
    """Seconds since ``record``'s heartbeat, by this host's clock; ``None`` when it has none."""
    beat = record.get("heartbeat")
    if not isinstance(beat, (int, float)):
        return None
    return max(0.0, time.time() - beat)  # a clock ahead of ours reads as a fresh beat


def describe(record: dict) -> str:
    """The holder of ``record`` in words: pid, host, start time and SLURM job."""
    text = f"pid {record.get('pid')} on {record.get('host')} since {when(record.get('started'))}"
    if record.get("slurm_job_id"):
        text += f", SLURM job {record['slurm_job_id']} restart {record.get('slurm_restart_count') or 0}"
    return text


def when(timestamp) -> str:
    """``timestamp`` (seconds since the epoch) as local time, or "an unknown time"."""
    if not isinstance(timestamp, (int, float)):
        return "an unknown time"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _process_start(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (``/proc/PID/stat`` field 22), or ``None``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
