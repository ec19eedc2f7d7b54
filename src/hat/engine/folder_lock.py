"""One live run per run folder, across hosts: a lock record with a heartbeat.

The record and the rules that say whether its holder still lives are in
:mod:`hat.engine.lock_record`. While the folder is held, a daemon thread rewrites the record's
heartbeat every ``heartbeat_s`` seconds.

A live holder makes the run stop with :class:`RunFolderError`; a dead one is taken over with a
warning that names it. The read, decision and write happen under an ``flock`` on
``.lock.guard`` (held only for those few milliseconds), and the new holder reads the record back
to confirm its token, so two runs that start at the same instant on one host never both win.

A holder that was taken over learns it from the record: its heartbeat finds another token (and
then stops beating, never rewriting the record), and :meth:`FolderLock.check_held` raises
:class:`RunFolderTakenOver`. :meth:`FolderLock.release` removes the record only while it still
holds this process's token.

What the lock cannot promise (for what the judgement of a holder cannot, see
:mod:`hat.engine.lock_record`):

- ``flock`` may not exclude across hosts (some network filesystems ignore it or fake it per
  host; where it is not supported at all the guard is skipped). Two runs on two hosts that take
  over a dead holder's record within the same instant both write; the record keeps the later one,
  and the other learns it at its next :meth:`~FolderLock.check_held`. Likewise a ghost whose
  beat reads its own record just before a takeover writes can put its record back once; the
  takeover then learns it lost. Either way one run keeps the folder and the other stops, after
  at most ``check_every_s`` (or at once with ``check_held(fresh=True)``).
- A holder that hangs (not killed) keeps its heartbeat thread beating as long as the thread runs;
  only SLURM's restart count or the holder's own end frees the folder then.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from hat.checks import ConfigError
from hat.engine.lock_record import dead_because, describe, heartbeat_age, own_record, read_record, when, write_record

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
        me = own_record()
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
        reason = dead_because(record, me, self.stale_after_s)
        if reason is None:
            raise RunFolderError(self._in_use(record))
        log.warning("taking over the run folder %s from %s%s", self.run_dir, describe(record), reason)

    def _in_use(self, record: dict) -> str:
        holder = describe(record)
        if record.get("host") not in (None, socket.gethostname()):
            age = heartbeat_age(record)
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
                           f"made unreadable by another process) at or before {when(time.time())}; this process "
                           f"stops without writing")
            else:
                job = record.get("slurm_job_id")
                slurm = f" (SLURM job {job}, restart {record.get('slurm_restart_count') or 0})" if job else ""
                message = (f"the run folder {self.run_dir} was taken over by pid {record.get('pid')} on "
                           f"{record.get('host')}{slurm} at {when(record.get('started'))}; this process stops "
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
