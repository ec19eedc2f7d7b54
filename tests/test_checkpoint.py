"""Checkpoints are written atomically and read back with weights_only; bad files get clear errors."""

from __future__ import annotations

import pytest
import torch

import hat.engine.checkpoint as checkpoint
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
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(_state(2.0), path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.full((2,), 1.0))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_missing_unreadable_and_foreign_files_are_named_in_the_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_checkpoint(tmp_path / "nothing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pt"):
        load_checkpoint(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ValueError, match=r"foreign\.pt is not a hat checkpoint"):
        load_checkpoint(foreign)
