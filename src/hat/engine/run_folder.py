"""The run folder a training owns: writable, held by one live run, never silently overwritten.

Process 0 takes the folder before any work (:meth:`RunFolder.acquire`): it checks that
``checkpoints/`` can be written, takes the lock record ``<run dir>/.lock`` (:mod:`hat.engine.folder_lock`:
one live run per folder across hosts, judged by pid on this host, by heartbeat from another, and by
SLURM's restart count for a requeued job, so a killed, crashed or ghost holder is taken over with a
warning instead of blocking the folder), and removes the temporary files that a writer killed
mid-write left behind (``.last.pt.<random>.tmp``: as large as a checkpoint). Checkpoints the run
does not continue are never written over: a fresh run (``resume=null``) into a folder with
checkpoints, ``resume=auto`` into one with checkpoints but no ``last.pt``, and ``resume=PATH`` from
another folder into one with checkpoints of its own all stop here, before anything is written.

While it trains, the holder asks :meth:`RunFolder.check_held` whether the folder is still its own:
a run taken over (it counted as dead, e.g. a node that stopped answering while SLURM requeued the
job) gets :class:`RunFolderTakenOver` and stops without writing.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from hat.engine.folder_lock import CHECK_EVERY_S, HEARTBEAT_S, LOCK_NAME, FolderLock, RunFolderError, RunFolderTakenOver

log = logging.getLogger(__name__)

__all__ = ["LOCK_NAME", "RunFolder", "RunFolderError", "RunFolderTakenOver"]

CHECKPOINT_NAMES = ("last.pt", "best.pt")


class RunFolder:
    """``run_dir`` and its ``checkpoints/`` folder, held by this process from :meth:`acquire` to :meth:`release`.

    ``heartbeat_s``, ``stale_after_s``, ``check_every_s``: the lock's timing (:class:`FolderLock`).
    """

    def __init__(self, run_dir: Path, *, heartbeat_s: float = HEARTBEAT_S, stale_after_s: float | None = None,
                 check_every_s: float = CHECK_EVERY_S) -> None:
        self.run_dir = Path(run_dir)
        self.checkpoints = self.run_dir / "checkpoints"
        self._lock = FolderLock(self.run_dir, heartbeat_s=heartbeat_s, stale_after_s=stale_after_s,
                                check_every_s=check_every_s)

    @property
    def held(self) -> bool:
        """Whether this object acquired the folder and has not released it yet."""
        return self._lock.held

    def acquire(self, resume) -> None:
        """Check, lock and clean the folder for a run with this ``resume`` setting (see the module doc).

        Raises :class:`RunFolderError`; the folder is not held then.
        """
        self._check_writable()
        self._lock.acquire()
        try:
            self._remove_stale_temporaries()
            self._refuse_another_run(resume)
        except BaseException:
            self._lock.release()
            raise

    def check_held(self, *, fresh: bool = False) -> None:
        """Raise :class:`RunFolderTakenOver` if another run took the folder over (see
        :meth:`FolderLock.check_held`: cheap enough for every step; ``fresh=True`` before writing a
        checkpoint). Does nothing where the folder is not held (ranks other than 0)."""
        self._lock.check_held(fresh=fresh)

    def taken_over(self, *, fresh: bool = False) -> RunFolderTakenOver | None:
        """:meth:`check_held`'s error returned instead of raised (None: still this run's, or not held here)."""
        try:
            self.check_held(fresh=fresh)
        except RunFolderTakenOver as error:
            return error
        return None

    def taken_over_elsewhere(self) -> RunFolderTakenOver:
        """What a process that does not hold the folder (a rank other than 0) raises when the holder
        found it taken over."""
        return RunFolderTakenOver(f"the run folder {self.run_dir} was taken over by another run (process 0 found "
                                  f"it); this process stops without writing")

    def release(self) -> None:
        """Give the folder up (removing the lock record only while it is still this run's); safe to repeat."""
        self._lock.release()

    def _check_writable(self) -> None:
        try:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.checkpoints):
                pass
        except OSError as error:
            raise RunFolderError(
                f"the run folder {self.run_dir} cannot be written ({error.strerror or error}): "
                f"give a writable hydra.run.dir=PATH"
            ) from None

    def _remove_stale_temporaries(self) -> None:
        for folder in (self.run_dir, self.checkpoints):
            for stale in folder.glob(".*.tmp"):
                log.warning("removing %s, left by a run that was killed while writing it", stale)
                stale.unlink(missing_ok=True)

    def _refuse_another_run(self, resume) -> None:
        """Refuse to write over checkpoints this run does not continue: a fresh run (``resume=null``)
        into a folder with checkpoints, ``resume=auto`` where there is no ``last.pt`` to continue from,
        and ``resume=PATH`` (another folder's checkpoint) into a folder with checkpoints of its own."""
        found = [name for name in CHECKPOINT_NAMES if (self.checkpoints / name).is_file()]
        if not found:
            return
        listed = ", ".join(found)
        if resume is None:
            raise RunFolderError(
                f"the run folder {self.run_dir} already holds checkpoints ({listed}) from an earlier "
                f"run; continue it with resume=auto, or start a new run in another folder (hydra.run.dir=PATH)"
            )
        if resume == "auto":
            if "last.pt" not in found:
                raise RunFolderError(
                    f"resume=auto: the run folder {self.run_dir} holds {listed} but no last.pt to continue from, "
                    f"and starting afresh would overwrite it; start a new run from its weights in another folder "
                    f"(init_weights={self.checkpoints / found[0]} hydra.run.dir=PATH), or move {listed} away")
            return
        if Path(str(resume)).expanduser().resolve().parent != self.checkpoints.resolve():
            raise RunFolderError(
                f"resume={resume}: the run folder {self.run_dir} already holds checkpoints ({listed}) of another "
                f"run, which resuming here would overwrite; resume into a folder of its own (hydra.run.dir=PATH), "
                f"or continue the folder's own run with resume=auto")
