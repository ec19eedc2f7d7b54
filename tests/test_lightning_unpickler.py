"""The restricted unpickler reads a Lightning checkpoint's state_dict and executes nothing in the file."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from conftest import save_lightning_checkpoint
from hat.models.lightning_unpickler import read_lightning_state_dict


class RunsCode:
    """An object whose unpickling runs a shell command that creates ``marker``."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_tensors_come_back_equal_in_value_dtype_and_shape(tmp_path):
    base = torch.randn(4, 6)
    tagged = torch.arange(3)
    tagged.persistent = False  # a tensor with Python attributes pickles through _rebuild_from_type_v2
    state = {
        "float": torch.randn(2, 3),
        "transposed": base.t(),
        "view_of_same_storage": base[1:3, 2:],
        "parameter": torch.nn.Parameter(torch.randn(5)),
        "long": torch.arange(7),
        "tagged": tagged,
        "half": torch.randn(3, dtype=torch.float16),
        "bfloat16": torch.randn(3, dtype=torch.bfloat16),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
    }
    path = tmp_path / "model.ckpt"
    save_lightning_checkpoint(path, state)

    loaded = read_lightning_state_dict(path)

    assert list(loaded) == list(state)
    for key, tensor in state.items():
        assert loaded[key].dtype == tensor.dtype, key
        assert torch.equal(loaded[key], tensor.detach()), key


def test_lightning_checkpoints_need_it_weights_only_load_refuses_them(tmp_path):
    path = tmp_path / "model.ckpt"
    save_lightning_checkpoint(path, {"w": torch.ones(2)})

    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    assert torch.equal(read_lightning_state_dict(path)["w"], torch.ones(2))


def test_code_in_the_pickle_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.ckpt"
    save_lightning_checkpoint(path, {"w": torch.ones(2)}, hyper_parameters={"payload": RunsCode(marker)})

    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    loaded = read_lightning_state_dict(path)

    assert torch.equal(loaded["w"], torch.ones(2))
    assert not marker.exists()


def test_code_inside_the_state_dict_is_an_error_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.ckpt"
    save_lightning_checkpoint(path, {"w": torch.ones(2), "payload": RunsCode(marker)})

    with pytest.raises(ValueError, match=r"model\.ckpt.*not tensors.*payload"):
        read_lightning_state_dict(path)
    assert not marker.exists()


def test_a_file_without_state_dict_is_an_error_naming_it(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"model": {"w": torch.ones(2)}}, path)

    with pytest.raises(ValueError, match=r"weights\.pt.*'state_dict'.*\['model'\]"):
        read_lightning_state_dict(path)


def test_a_legacy_format_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, path, _use_new_zipfile_serialization=False)

    with pytest.raises(ValueError, match=r"old\.ckpt is not a zip-format torch checkpoint"):
        read_lightning_state_dict(path)
