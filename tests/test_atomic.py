"""Atomic writes replace the target whole or not at all, with ordinary permissions."""

from __future__ import annotations

import errno
import os

import pytest

from hat.atomic import atomic_write


def test_new_file_has_umask_permissions_and_no_temp_file_remains(tmp_path):
    target = tmp_path / "sub" / "results.json"
    atomic_write(target, lambda handle: handle.write(b"{}"))
    mask = os.umask(0)
    os.umask(mask)
    assert target.read_bytes() == b"{}"
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    assert os.listdir(target.parent) == ["results.json"]


def test_an_error_mid_write_keeps_the_old_content(tmp_path):
    target = tmp_path / "results.json"
    target.write_bytes(b"old")

    def fail(handle):
        handle.write(b"half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        atomic_write(target, fail)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["results.json"]


def test_a_full_disk_behind_torchs_runtime_error_is_named_with_the_mount_and_what_to_do(tmp_path):
    from hat.atomic import write_failure

    try:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None
    except RuntimeError as error:  # `from None` hides the context from tracebacks; it is still there
        failure = write_failure(error, tmp_path / "checkpoints" / "last.pt")
    assert failure.why == "the disk is full (No space left on device)"
    assert failure.remedy.startswith("free space on /") and failure.remedy.endswith(" free now)")


def test_other_errors_are_not_write_failures_and_torchs_own_is_quoted(tmp_path):
    from hat.atomic import write_failure

    assert write_failure(RuntimeError("shapes do not match"), tmp_path / "x") is None
    assert write_failure(ValueError("no"), tmp_path / "x") is None
    failure = write_failure(RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"),
                            tmp_path / "x")  # no OSError and plenty of space: torch's own words
    assert failure.why == "torch.save failed (PytorchStreamWriter failed writing file data/0: file write failed)"
