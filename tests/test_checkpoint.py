"""Checkpoints are written atomically and read back with weights_only; a bad file gets one line naming it and why."""

from __future__ import annotations

import re

import pytest
import torch

import hat.engine.checkpoint as checkpoint
from hat.config import ConfigError
from hat.engine.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint


def _state(value: float) -> dict:
    return {"format": CHECKPOINT_FORMAT, "model": {"w": torch.full((2,), value)}, "config": {"seed": 0}}


def test_round_trip_with_weights_only(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(_state(1.5), path)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.full((2,), 1.5))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_a_failed_write_keeps_the_previous_checkpoint_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(_state(1.0), path)

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise OSError("disk trouble")

    monkeypatch.setattr(checkpoint.torch, "save", broken_save)
    with pytest.raises(ConfigError, match=f"^cannot write checkpoint {re.escape(str(path))}: disk trouble; check "):
        save_checkpoint(_state(2.0), path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.full((2,), 1.0))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def _big_state(value: float) -> dict:
    return {**_state(value), "model": {"w": torch.full((1 << 18,), value)}}  # 1 MiB


def test_a_full_disk_keeps_last_and_best_and_is_one_line_naming_the_file_and_what_to_do(small_disk):
    disk = small_disk("512k")
    checkpoints = disk / "run" / "checkpoints"
    save_checkpoint(_state(1.0), checkpoints / "best.pt")
    save_checkpoint(_state(2.0), checkpoints / "last.pt")
    for name in ("best.pt", "last.pt"):
        with pytest.raises(ConfigError) as error:  # torch.save raises RuntimeError [enforce fail at ...]
            save_checkpoint(_big_state(3.0), checkpoints / name)
        message = str(error.value)
        assert "\n" not in message, message
        assert message.startswith(f"cannot write checkpoint {checkpoints / name}: the disk is full "
                                  f"(No space left on device); free space on {disk} ("), message
        assert message.endswith(f" free now), then resume with resume=auto hydra.run.dir={disk / 'run'}"), message
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.pt", "last.pt"]  # no temporary file left
    assert torch.equal(load_checkpoint(checkpoints / "best.pt")["model"]["w"], torch.full((2,), 1.0))
    assert torch.equal(load_checkpoint(checkpoints / "last.pt")["model"]["w"], torch.full((2,), 2.0))


def test_a_read_only_disk_is_one_line_naming_it(small_disk):
    disk = small_disk("512k")
    path = disk / "run" / "checkpoints" / "last.pt"
    save_checkpoint(_state(1.0), path)
    small_disk.remount(disk, "ro")
    with pytest.raises(ConfigError, match=re.escape(
            f"cannot write checkpoint {path}: {disk} is mounted read-only (Read-only file system); "
            f"remount {disk} read-write, then resume with resume=auto hydra.run.dir={disk / 'run'}")):
        save_checkpoint(_state(2.0), path)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.full((2,), 1.0))


def test_a_folder_without_write_permission_is_one_line_naming_it(tmp_path, monkeypatch):
    import errno
    import os

    import hat.atomic

    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)

    def refused(*args, **kwargs):  # what mkstemp raises in a folder the user cannot write (root always can)
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(folder / ".last.pt.x.tmp"))

    monkeypatch.setattr(hat.atomic.tempfile, "mkstemp", refused)
    with pytest.raises(ConfigError, match=re.escape(
            f"cannot write checkpoint {folder / 'last.pt'}: no permission to write there (Permission denied); "
            f"make {folder} writable for ")):
        save_checkpoint(_state(1.0), folder / "last.pt")


def test_errors_that_are_not_write_failures_keep_their_type(tmp_path, monkeypatch):
    def bug(obj, handle):
        raise RuntimeError("a bug in the caller")

    monkeypatch.setattr(checkpoint.torch, "save", bug)
    with pytest.raises(RuntimeError, match="a bug in the caller"):
        save_checkpoint(_state(1.0), tmp_path / "last.pt")
    assert list(tmp_path.iterdir()) == []


def test_a_missing_checkpoint_is_named_in_the_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_checkpoint(tmp_path / "nothing.pt")


class Stranger:
    """A class of the test, which a weights-only load refuses to rebuild."""


def _cut_in_half(path):
    save_checkpoint(_state(1.0), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


UNREADABLE = {
    "empty": (lambda path: path.write_bytes(b""), r"file is empty"),
    "truncated": (_cut_in_half, r"truncated or not a torch zip archive"),
    "text": (lambda path: path.write_text("not a checkpoint\n"), r"truncated or not a torch zip archive"),
    "python objects": (
        lambda path: torch.save({**_state(1.0), "extra": Stranger()}, path),
        r"holds Python objects other than tensors and plain containers \([\w.]*Stranger\); hat checkpoints",
    ),
    "not a dict": (lambda path: torch.save([torch.ones(2)], path), r"holds a list, not a hat checkpoint"),
    "missing keys": (
        lambda path: torch.save({"state_dict": {}}, path),
        r"not a hat checkpoint: it has no \['format', 'model', 'config'\] \(its keys: \['state_dict'\]\)",
    ),
    "wrong format": (
        lambda path: torch.save({**_state(1.0), "format": 7}, path), r"checkpoint format 7, this version reads format 1"
    ),
    "config not a dict": (
        lambda path: torch.save({**_state(1.0), "config": "seed: 0"}, path), r"'config' is a str, expected a dict"
    ),
    "model not tensors": (
        lambda path: torch.save({**_state(1.0), "model": {"w": [1.0]}}, path), r"'model' is not a state dict"
    ),
}


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_an_unreadable_checkpoint_is_one_line_naming_the_file_and_why(tmp_path, case):
    write, reason = UNREADABLE[case]
    path = tmp_path / "stranger.pt"
    write(path)
    with pytest.raises(ConfigError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert message.startswith(f"cannot read checkpoint {path}: "), message
    assert re.search(reason, message), message
    assert "\n" not in message and "weights_only" not in message
