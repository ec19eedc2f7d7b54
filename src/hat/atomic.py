"""Atomic file writes: a temporary file in the target folder, then a rename over the target; and
what a failed write means for the user (a full disk, no permission, a read-only file system), as
one line that names the file and what to do (:func:`write_failed`)."""

from __future__ import annotations

import errno
import os
import pwd
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from hat.checks import ConfigError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(handle)`` on a temporary file next to ``path``, then rename it to ``path``.

    A crash or an exception mid-write leaves any previous ``path`` untouched and no temporary
    file behind. The new file gets the usual permissions (0666 less the umask).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class WriteFailed(ConfigError):
    """A file could not be written (a full disk, no permission, a read-only file system): one line
    that names the file, why, and what to do. A :class:`ConfigError`, so the entry points print it
    as ``error: LINE`` and exit with status 2, as for any input the user has to fix."""


@dataclass(frozen=True)
class WriteFailure:
    """Why a write failed, in words (``the disk is full (No space left on device)``), and what to
    do about it (``free space on /scratch (0 B free)``)."""

    why: str
    remedy: str


# What torch.save's zip writer says when a write under it failed; the OSError, if any, is its context.
_TORCH_WRITER_FAILED = ("inline_container.cc", "PytorchStreamWriter")
_NEARLY_FULL = 1 << 20  # bytes: a torch writer error with less than this free is taken for a full disk


def write_failure(error: BaseException, path: Path) -> WriteFailure | None:
    """What ``error``, raised while writing ``path``, means for the user, or None when it is not the
    failure of a write (a bug, which should keep its traceback).

    The OSError is looked for in the error and the errors it was raised from or during (torch.save
    turns a full disk into ``RuntimeError: [enforce fail at inline_container.cc...]`` raised while
    handling the OSError); a torch writer error without one is taken for a full disk when less than
    1 MiB is free.
    """
    os_error = _os_error_in(error)
    if os_error is not None:
        return _describe(os_error.errno, os_error.strerror or str(os_error), path)
    if isinstance(error, RuntimeError) and any(mark in str(error) for mark in _TORCH_WRITER_FAILED):
        free = _free_bytes(path)
        if free is not None and free < _NEARLY_FULL:
            return _describe(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return WriteFailure(f"torch.save failed ({first_line})", f"check the disk that holds {_existing(path.parent)}")
    return None


def write_failed(error: BaseException, path: Path, what: str, then: str = "") -> WriteFailed | None:
    """The one-line :class:`WriteFailed` ``cannot write WHAT: WHY; REMEDY[, THEN]`` for ``error``
    (raised while writing ``path``), or None when ``error`` is not a write failure (see
    :func:`write_failure`). ``then`` is what the caller's user does once the disk is fixed."""
    failure = write_failure(error, path)
    if failure is None:
        return None
    return WriteFailed(f"cannot write {what}: {failure.why}; {failure.remedy}" + (f", {then}" if then else ""))


def _os_error_in(error: BaseException) -> OSError | None:
    """``error`` or the first error in its chain (``raise ... from``, or raised while handling) that is an OSError."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _describe(code: int | None, text: str, path: Path) -> WriteFailure:
    folder = _existing(path.parent)
    mount = _mount_point(folder)
    if code == errno.ENOSPC:
        free = _free_bytes(folder)
        return WriteFailure(f"the disk is full ({text})",
                            f"free space on {mount}" + (f" ({_size(free)} free now)" if free is not None else ""))
    if code == errno.EDQUOT:
        return WriteFailure(f"the disk quota is used up ({text})", f"free space within your quota on {mount}")
    if code in (errno.EACCES, errno.EPERM):
        return WriteFailure(f"no permission to write there ({text})", f"make {folder} writable for {_user()}")
    if code == errno.EROFS:
        return WriteFailure(f"{mount} is mounted read-only ({text})", f"remount {mount} read-write")
    if code == errno.EFBIG:
        return WriteFailure(f"the file is larger than {mount} allows ({text})", "use a file system without that limit")
    return WriteFailure(text, f"check the disk and the folder {folder}")


def _existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (as an absolute path)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _mount_point(path: Path) -> Path:
    while not os.path.ismount(path) and path.parent != path:
        path = path.parent
    return path


def _free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(_existing(path)).free
    except OSError:
        return None


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def _user() -> str:
    try:
        return f"user {pwd.getpwuid(os.geteuid()).pw_name}"
    except (KeyError, OSError):
        return f"uid {os.geteuid()}"
