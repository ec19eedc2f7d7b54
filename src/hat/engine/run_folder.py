"""The run folder a training owns: writable, locked against a second run, never silently overwritten.

Process 0 takes the folder before any work (:meth:`RunFolder.acquire`): it checks that
``checkpoints/`` can be written, takes an exclusive lock on ``<run dir>/.lock`` (released by the
kernel when the process ends, however it ends, so a killed or requeued run never leaves a stale
lock), and removes the temporary files that a writer killed mid-write left behind
(``.last.pt.<random>.tmp``: as large as a checkpoint). A fresh run (``resume=null``) into a folder
that already holds checkpoints stops instead of overwriting them.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import tempfile
import time
from pathlib import Path

from hat.checks import ConfigError

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
CHECKPOINT_NAMES = ("last.pt", "best.pt")


class RunFolderError(ConfigError):
    """The run folder cannot be used: not writable, in use by another run, or holding another run's checkpoints."""


class RunFolder:
    """``run_dir`` and its ``checkpoints/`` folder, held by this process from :meth:`acquire` to :meth:`release`."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.checkpoints = run_dir / "checkpoints"
        self._lock: int | None = None

    def acquire(self, resume) -> None:
        """Check, lock and clean the folder for a run with this ``resume`` setting (see the module doc)."""
        self._check_writable()
        self._take_lock()
        self._remove_stale_temporaries()
        if resume is None:
            self._refuse_overwrite()

    def release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

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

    def _take_lock(self) -> None:
        path = self.run_dir / LOCK_NAME
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(handle)
            os.close(handle)
            raise RunFolderError(
                f"the run folder {self.run_dir} is in use by another run ({holder}); wait for it to end, "
                f"or give this run its own hydra.run.dir=PATH"
            ) from None
        os.ftruncate(handle, 0)
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        os.write(handle, f"pid {os.getpid()} on {socket.gethostname()} since {since}".encode())
        self._lock = handle

    def _remove_stale_temporaries(self) -> None:
        for folder in (self.run_dir, self.checkpoints):
            for stale in folder.glob(".*.tmp"):
                log.warning("removing %s, left by a run that was killed while writing it", stale)
                stale.unlink(missing_ok=True)

    def _refuse_overwrite(self) -> None:
        found = [name for name in CHECKPOINT_NAMES if (self.checkpoints / name).is_file()]
        if found:
            raise RunFolderError(
                f"the run folder {self.run_dir} already holds checkpoints ({', '.join(found)}) from an earlier "
                f"run; continue it with resume=auto, or start a new run in another folder (hydra.run.dir=PATH)"
            )


def _read_holder(handle: int) -> str:
    """What the lock holder wrote about itself, or a stand-in when it wrote nothing yet."""
    try:
        return os.pread(handle, 200, 0).decode(errors="replace").strip() or "process unknown"
    except OSError:
        return "process unknown"

