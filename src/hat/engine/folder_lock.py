"""One live run per run folder, across hosts: a lock record with a heartbeat.

The holder of a run folder describes itself in ``<run dir>/.lock``, a small JSON record: host,
pid, a random token, start time, heartbeat time (wall clock) and, under SLURM, the job id and
restart count. The record is replaced whole (a temporary file in the same folder, then
``os.replace``), so a reader sees the old record or the new one, never half of one. While the
folder is held, a daemon thread rewrites the heartbeat every ``heartbeat_s`` seconds.

A run that finds a record decides whether its holder still lives:

- holder on this host: alive while its pid runs (a zombie, or a pid since reused by a process
  started later, counts as dead);
- holder on another host: alive while its heartbeat is younger than ``stale_after_s``;
- holder from an earlier incarnation of this SLURM job (same ``SLURM_JOB_ID``, lower
  ``SLURM_RESTART_COUNT``): dead whatever its pid or heartbeat says. SLURM requeued the job, so
  that process is a ghost on a node that stopped answering.

A live holder makes the run stop with :class:`RunFolderError`; a dead one is taken over with a
warning that names it. The read, decision and write happen under an ``flock`` on
``.lock.guard`` (held only for those few milliseconds), and the new holder reads the record back
to confirm its token, so two runs that start at the same instant on one host never both win.

A holder that was taken over learns it from the record: its heartbeat finds another token (and
then stops beating, never rewriting the record), and :meth:`FolderLock.check_held` raises
:class:`RunFolderTakenOver`. :meth:`FolderLock.release` removes the record only while it still
holds this process's token.

What the lock cannot promise:

- Heartbeats compare the wall clocks of different hosts: they must agree to well within
  ``stale_after_s`` (NTP does this).
- ``flock`` may not exclude across hosts (some network filesystems ignore it or fake it per
  host; where it is not supported at all the guard is skipped). Two runs on two hosts that take
  over a dead holder's record within the same instant both write; the record keeps the later one,
  and the other learns it at its next :meth:`~FolderLock.check_held`. Likewise a ghost whose
  beat reads its own record just before a takeover writes can put its record back once; the
  takeover then learns it lost. Either way one run keeps the folder and the other stops, after
  at most ``check_every_s`` (or at once with ``check_held(fresh=True)``).
- A network filesystem may show one host's write to another only after its attribute cache
  expires (seconds, up to a minute): ``stale_after_s`` (10 heartbeats, 300 s by default) stays
  far above that.
- "This host" means the same ``socket.gethostname()``: two containers sharing a hostname but not
  a pid namespace would misjudge each other's pids.
- A holder that hangs (not killed) keeps its heartbeat thread beating as long as the thread runs;
  only SLURM's restart count or the holder's own end frees the folder then.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import secrets
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from hat.checks import ConfigError

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
GUARD_NAME = ".lock.guard"
HEARTBEAT_S = 30.0
STALE_HEARTBEATS = 10  # stale_after_s defaults to this many heartbeats
CHECK_EVERY_S = 5.0
GUARD_WAIT_S = 10.0  # how long acquire waits for another process's read-decide-write


class RunFolderError(ConfigError):
    """The run folder cannot be used: not writable, in use by another run, or holding another run's checkpoints."""


class RunFolderTakenOver(RunFolderError):
    """Another run took the folder over from this one (this one counted as dead): stop without writing.

    ``holder``: the record that replaced this process's one (``None`` when the record was removed).
    """

    def __init__(self, message: str, holder: dict | None = None) -> None:
        super().__init__(message)
        self.holder = holder


class FolderLock:
    """The lock record ``<run_dir>/.lock``, held by this process from :meth:`acquire` to :meth:`release`.

    ``heartbeat_s``: seconds between heartbeats; ``stale_after_s``: how old another host's heartbeat
    may be before its holder counts as dead (default ``10 * heartbeat_s``); ``check_every_s``: how
    often :meth:`check_held` reads the record itself (between reads it only looks at what the
    heartbeat thread found).
    """

    def __init__(self, run_dir: Path, *, heartbeat_s: float = HEARTBEAT_S, stale_after_s: float | None = None,
                 check_every_s: float = CHECK_EVERY_S) -> None:
        if heartbeat_s <= 0:
            raise ValueError(f"heartbeat_s must be positive, got {heartbeat_s}")
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.heartbeat_s = float(heartbeat_s)
        self.stale_after_s = float(stale_after_s if stale_after_s is not None else STALE_HEARTBEATS * heartbeat_s)
        self.check_every_s = float(check_every_s)
        self._token: str | None = None
        self._pid = os.getpid()  # the holder's: a forked child (a loader worker) neither checks nor releases
        self._taken_over: tuple[str, dict | None] | None = None  # (message, new record) once taken over
        self._state = threading.Lock()  # guards _taken_over between the heartbeat thread and the caller
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_check = 0.0
        self._beat_failing = False  # whether the last heartbeat could not be written (the thread's own)

    @property
    def held(self) -> bool:
        """Whether this object acquired the folder and has not released it (even if since taken over)."""
        return self._token is not None

    def acquire(self) -> None:
        """Take the folder, or raise :class:`RunFolderError` naming the live run that holds it."""
        me = _own_record()
        try:
            with _guarded(self.run_dir / GUARD_NAME, GUARD_WAIT_S):
                record = read_record(self.path)
                if record is not None:
                    self._judge(record, me)
                write_record(self.path, me)
                confirmed = read_record(self.path)
        except TimeoutError:  # an OSError too, so this clause comes first
            raise RunFolderError(
                f"the run folder {self.run_dir} is being taken by another run starting now (it held "
                f"{GUARD_NAME} for more than {GUARD_WAIT_S:.0f} s); wait for it to end, or give this run its own "
                f"hydra.run.dir=PATH"
            ) from None
        except OSError as error:
            raise RunFolderError(
                f"the run folder {self.run_dir} cannot be locked ({error.strerror or error}): "
                f"give a writable hydra.run.dir=PATH"
            ) from None
        if confirmed is None:
            raise RunFolderError(f"the run folder {self.run_dir} is in use by another run (its lock record vanished "
                                 f"as this run wrote it); wait for it to end, or give this run its own "
                                 f"hydra.run.dir=PATH")
        if confirmed.get("token") != me["token"]:
            raise RunFolderError(self._in_use(confirmed))
        self._token = me["token"]
        self._pid = os.getpid()
        self._taken_over = None
        self._stop.clear()
        self._last_check = time.monotonic()
        self._thread = threading.Thread(target=self._beat_until_stopped, name=f"heartbeat {self.path}", daemon=True)
        self._thread.start()

    def check_held(self, *, fresh: bool = False) -> None:
        """Raise :class:`RunFolderTakenOver` if another run took the folder over; else return.

        Cheap enough for every optimizer step: it reads the flag the heartbeat thread sets, and
        reads the record itself (about 10 us on a local disk, one round trip on a network
        filesystem) at most every ``check_every_s`` seconds, or now with ``fresh=True`` (before
        writing a checkpoint). Does nothing on an object that does not hold the folder (ranks
        other than 0 never acquire it).
        """
        if self._token is None or os.getpid() != self._pid:
            return
        if self._taken_over is None:
            now = time.monotonic()
            if fresh or now - self._last_check >= self.check_every_s:
                self._last_check = now
                try:
                    record = read_record(self.path)
                except OSError:
                    return  # unreadable for now (a network filesystem's hiccup): the next check reads again
                if record is None or record.get("token") != self._token:
                    self._lost(record)
        if self._taken_over is not None:
            message, holder = self._taken_over
            raise RunFolderTakenOver(message, holder)

    def release(self) -> None:
        """Stop the heartbeat and remove the record, unless it is no longer this process's."""
        if self._token is None or os.getpid() != self._pid:
            return
        token, self._token = self._token, None
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 2 * self.heartbeat_s))
            self._thread = None
        try:
            with _guarded(self.run_dir / GUARD_NAME, GUARD_WAIT_S):
                record = read_record(self.path)
                if record is not None and record.get("token") == token:
                    self.path.unlink(missing_ok=True)
        except OSError as error:  # TimeoutError too
            log.warning("could not remove the lock record %s (%s); the next run will judge it by its holder",
                        self.path, error)

    def _judge(self, record: dict, me: dict) -> None:
        """Return if ``record``'s holder is dead (with a warning naming it), else raise :class:`RunFolderError`."""
        holder = _describe(record)
        if _superseded(record, me):
            log.warning("taking over the run folder %s from %s: SLURM restarted job %s (this is restart %s), so that "
                        "process belongs to an earlier incarnation of the job", self.run_dir, holder,
                        me["slurm_job_id"], me["slurm_restart_count"] or 0)
            return
        if record.get("host") == me["host"]:
            if not _pid_alive(record.get("pid"), record.get("pid_start")):
                log.warning("taking over the run folder %s from %s, which is no longer running", self.run_dir, holder)
                return
        else:
            age = _heartbeat_age(record)
            if age is None or age >= self.stale_after_s:
                seen = "it never wrote a heartbeat" if age is None else f"its last heartbeat was {age:.0f} s ago"
                log.warning("taking over the run folder %s from %s: %s (a holder on another host counts as ended "
                            "after %.0f s without one)", self.run_dir, holder, seen, self.stale_after_s)
                return
        raise RunFolderError(self._in_use(record))

    def _in_use(self, record: dict) -> str:
        holder = _describe(record)
        if record.get("host") not in (None, socket.gethostname()):
            age = _heartbeat_age(record)
            if age is not None:
                holder += (f"; its last heartbeat was {age:.0f} s ago, it counts as ended after "
                           f"{self.stale_after_s:.0f} s without one")
        return (f"the run folder {self.run_dir} is in use by another run ({holder}); wait for it to end, "
                f"or give this run its own hydra.run.dir=PATH")

    def _lost(self, record: dict | None) -> None:
        """Note (once) that ``record`` replaced this process's one: from now on :meth:`check_held` raises."""
        with self._state:
            if self._taken_over is not None:
                return
            if record is None:
                message = (f"the run folder {self.run_dir} lost its lock record ({self.path} was removed or "
                           f"made unreadable by another process) at or before {_when(time.time())}; this process "
                           f"stops without writing")
            else:
                job = record.get("slurm_job_id")
                slurm = f" (SLURM job {job}, restart {record.get('slurm_restart_count') or 0})" if job else ""
                message = (f"the run folder {self.run_dir} was taken over by pid {record.get('pid')} on "
                           f"{record.get('host')}{slurm} at {_when(record.get('started'))}; this process stops "
                           f"without writing")
            self._taken_over = (message, record)
        log.warning("%s", message)

    def _beat_until_stopped(self) -> None:
        self._beat_failing = False
        while not self._stop.wait(self.heartbeat_s):
            if not self._beat():
                return

    def _beat(self) -> bool:
        """Rewrite the heartbeat if the record is still ours; ``False`` once it is not (the thread then stops)."""
        token = self._token
        try:
            with _guarded(self.run_dir / GUARD_NAME, self.heartbeat_s):
                record = read_record(self.path)
                if token is None or self._stop.is_set():
                    return False
                if record is None or record.get("token") != token:
                    self._lost(record)
                    return False
                record["heartbeat"] = time.time()
                write_record(self.path, record)
        except OSError as error:  # TimeoutError too; the next beat tries again
            if not self._beat_failing:  # warn once a spell: runs on other hosts take over after stale_after_s
                log.warning("could not write the heartbeat to %s (%s); trying again every %.0f s",
                            self.path, error, self.heartbeat_s)
            self._beat_failing = True
            return True
        if self._beat_failing:
            log.warning("the heartbeat of %s is written again", self.path)
        self._beat_failing = False
        return True


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


def _own_record() -> dict:
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


def _process_start(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (``/proc/PID/stat`` field 22), or ``None``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _heartbeat_age(record: dict) -> float | None:
    beat = record.get("heartbeat")
    if not isinstance(beat, (int, float)):
        return None
    return max(0.0, time.time() - beat)  # a clock ahead of ours reads as a fresh beat


def _describe(record: dict) -> str:
    text = f"pid {record.get('pid')} on {record.get('host')} since {_when(record.get('started'))}"
    if record.get("slurm_job_id"):
        text += f", SLURM job {record['slurm_job_id']} restart {record.get('slurm_restart_count') or 0}"
    return text


def _when(timestamp) -> str:
    if not isinstance(timestamp, (int, float)):
        return "an unknown time"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@contextmanager
def _guarded(path: Path, wait_s: float):
    """Hold an exclusive ``flock`` on ``path`` for the block, waiting up to ``wait_s`` (then ``TimeoutError``).

    A filesystem without ``flock`` runs the block unguarded: the token read back after writing
    still settles who holds the folder.
    """
    with _guards_lock:
        handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        _open_guards.add(handle)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    log.debug("no flock on %s (%s): going on without the guard", path, error)
                    break
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{path} stayed locked for {wait_s:.0f} s") from None
                time.sleep(0.02)
        yield
    finally:
        with _guards_lock:
            _open_guards.discard(handle)
            os.close(handle)


# A process forked while the heartbeat holds the guard (a data loader worker) would share the
# flock, keeping the guard taken for as long as it lives: the child closes its copies at once.
_open_guards: set[int] = set()
_guards_lock = threading.Lock()


def _close_guards_in_child() -> None:
    for handle in _open_guards:
        try:
            os.close(handle)
        except OSError:
            pass
    _open_guards.clear()
    _guards_lock.release()


os.register_at_fork(before=_guards_lock.acquire, after_in_parent=_guards_lock.release,
                    after_in_child=_close_guards_in_child)
