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
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(_state(2.0), path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.full((2,), 1.0))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


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
