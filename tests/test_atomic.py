"""Atomic writes replace the target whole or not at all, with ordinary permissions."""

from __future__ import annotations

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
