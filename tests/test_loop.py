"""End-to-end training on tiny encoders and generated data: outputs, checkpoints, resume."""

from __future__ import annotations

import json

import pytest
import torch

from hat.engine.checkpoint import load_checkpoint
from hat.engine.loop import train
from hat.metrics import METRIC_KEYS
from hat.models.spec import model_spec

pytestmark = pytest.mark.slow


def test_train_writes_checkpoints_metrics_and_results(tmp_path, tiny_config):
    metrics = train(tiny_config(), tmp_path).test

    for key in METRIC_KEYS:
        assert f"test/{key}" in metrics and f"test/level3/{key}" in metrics
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["metrics"] == pytest.approx(metrics)
    assert results["provenance"]["config"]["encoder"]["name"] == "tiny"
    assert torch.__version__.startswith(results["provenance"]["versions"]["torch"])
    assert "git_commit" in results["provenance"]

    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("train/loss" in line for line in lines)
    assert [line["train/epoch"] for line in lines if "val/rsum" in line] == [0, 1]

    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert last["epoch"] == 2 and last["step"] == 2 * (24 * 5 // 8)
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "config", "best_metric"} <= set(last)
    assert (tmp_path / "checkpoints" / "best.pt").is_file()
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


def test_encoders_are_frozen_for_freeze_epochs_then_train(tmp_path, tiny_config):
    train(tiny_config("train.epochs=1", "train.freeze_epochs=1"), tmp_path / "frozen")
    train(tiny_config("train.epochs=1", "train.freeze_epochs=0"), tmp_path / "open")
    initial = _initial_state(tiny_config())
    frozen = load_checkpoint(tmp_path / "frozen" / "checkpoints" / "last.pt")["model"]
    opened = load_checkpoint(tmp_path / "open" / "checkpoints" / "last.pt")["model"]
    # the tapped stages' norms freeze with the backbones (train.freeze_stage_norms, as HAT's code)
    for backbone in ("text_encoder.model.encoder.layer.0.attention.self.query.weight",
                     "image_encoder.stage_norms.2.weight"):
        assert torch.equal(frozen[backbone], initial[backbone]), backbone
        assert not torch.equal(opened[backbone], initial[backbone]), backbone
    for trained in ("image_proj.0.weight", "text_proj.0.weight"):
        assert not torch.equal(frozen[trained], initial[trained]), trained


def _initial_state(cfg) -> dict:
    from hat.models.hat import build_model

    torch.manual_seed(cfg.seed)
    return build_model(model_spec(cfg)).state_dict()


def test_resume_auto_continues_to_identical_weights(tmp_path, tiny_config):
    straight = tmp_path / "straight"
    train(tiny_config("train.epochs=2"), straight)

    resumed = tmp_path / "resumed"
    train(tiny_config("train.epochs=1"), resumed)
    assert load_checkpoint(resumed / "checkpoints" / "last.pt")["epoch"] == 1
    train(tiny_config("train.epochs=2", "resume=auto"), resumed)

    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] and a["epoch"] == b["epoch"] == 2
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert a["best_metric"] == b["best_metric"]


def test_resume_auto_without_a_checkpoint_starts_fresh(tmp_path, tiny_config, caplog):
    with caplog.at_level("INFO"):
        train(tiny_config("train.epochs=1", "resume=auto"), tmp_path)
    assert "no checkpoint" in caplog.text and "starting fresh" in caplog.text
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["epoch"] == 1


def test_max_steps_stops_training_mid_epoch(tmp_path, tiny_config):
    train(tiny_config("train.max_steps=4", "train.epochs=5"), tmp_path)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 4


@pytest.mark.parametrize("name", ["f30k", "coco"])
def test_tiny_encoders_train_on_karpathy_datasets_on_disk(tmp_path, tiny_training_config, name):
    from conftest import make_karpathy_dataset

    root = make_karpathy_dataset(tmp_path / "data", name, {"train": 8, "val": 4, "test": 5})
    config = tiny_training_config(f"dataset={name}", f"dataset.root={root}", "train.epochs=1")
    metrics = train(config, tmp_path / "run").test
    names = ["test/rsum"] if name == "f30k" else ["test/coco1k/rsum", "test/coco5k/rsum", "test/coco1k/level3/rsum"]
    for metric in names:
        assert 0.0 <= metrics[metric] <= 600.0
    provenance = json.loads((tmp_path / "run" / "results.json").read_text())["provenance"]
    assert provenance["config"]["dataset"]["name"] == name


def test_bf16_autocast_training_steps_stay_finite(tmp_path, tiny_config):
    train(tiny_config("hardware.precision=bf16", "train.max_steps=3", "train.freeze_epochs=0"), tmp_path)
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert last["step"] == 3
    assert all(torch.isfinite(tensor).all() for tensor in last["model"].values() if tensor.is_floating_point())


def test_a_run_stopped_mid_epoch_resumes_to_identical_weights(tmp_path, tiny_config):
    straight = tmp_path / "straight"
    train(tiny_config("train.epochs=2"), straight)

    stopped = tmp_path / "stopped"
    train(tiny_config("train.epochs=2", "train.max_steps=5"), stopped)
    mid = load_checkpoint(stopped / "checkpoints" / "last.pt")
    assert (mid["epoch"], mid["batch"], mid["step"]) == (0, 5, 5)
    train(tiny_config("train.epochs=2", "resume=auto"), stopped)

    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(stopped / "checkpoints" / "last.pt")
    assert (b["epoch"], b["batch"], b["step"]) == (a["epoch"], a["batch"], a["step"]) == (2, 0, 30)
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name


def test_throughput_metrics_are_logged(tmp_path, tiny_config):
    train(tiny_config("train.epochs=1", "train.log_every=5"), tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = [line for line in lines if "train/loss" in line]
    assert [line["step"] for line in logged] == [5, 10, 15]
    for line in logged:
        assert line["train/samples_per_s"] > 0 and 0 <= line["train/data_wait_share"] <= 1
        assert line["train/step_time_s"] > 0 and line["train/lr"] == pytest.approx(1e-3)


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_training_on_a_gpu_matches_eager_training(tmp_path, tiny_config):
    """hardware.compile=true: inductor's kernels, forward and backward, give eager's losses
    (dropout off: compiled code draws its random numbers differently)."""
    losses = {}
    for compiled in (False, True):
        run = tmp_path / f"compile-{compiled}"
        cfg = tiny_config("hardware=gpu", "hardware.precision=fp32", "hardware.num_workers=0",
                          f"hardware.compile={str(compiled).lower()}", "train.max_steps=6", "train.log_every=1",
                          "train.freeze_epochs=0", "+encoder.text.config.hidden_dropout_prob=0.0",
                          "+encoder.text.config.attention_probs_dropout_prob=0.0")
        train(cfg, run)
        losses[compiled] = [json.loads(line)["train/loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
                            if "train/loss" in line]
    assert len(losses[True]) == 6
    torch.testing.assert_close(torch.tensor(losses[True]), torch.tensor(losses[False]), rtol=1e-3, atol=1e-4)


def test_a_non_finite_loss_stops_training_naming_the_step_and_keeps_last(tmp_path, tiny_config, monkeypatch):
    import hat.engine.loop as loop
    import hat.engine.training_run as training_run

    small = ("dataset.num_train=8", "logger=none")  # 5 steps an epoch
    train(tiny_config("train.epochs=1", *small), tmp_path)
    real, calls = training_run.training_step, []

    def step(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) == 2 else loss

    monkeypatch.setattr(training_run, "training_step", step)
    expected = r"loss is nan at step 7 \(epoch 1, batch 2\).*last.pt \(step 5\) is kept"
    with pytest.raises(loop.TrainingDiverged, match=expected):
        train(tiny_config("train.epochs=2", "resume=auto", *small), tmp_path)
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert last["step"] == 5
    assert all(torch.isfinite(t).all() for t in last["model"].values() if t.is_floating_point())


def test_a_learning_rate_that_diverges_stops_the_run_with_a_clear_error(tmp_path, tiny_config):
    import hat.engine.loop as loop

    with pytest.raises(loop.TrainingDiverged, match=r"the training loss is nan at step \d+ .*no checkpoint"):
        train(tiny_config("optim.lr=1e6", "train.freeze_epochs=0", "logger=none"), tmp_path)
    assert not (tmp_path / "results.json").exists()


def test_a_train_image_that_breaks_mid_run_is_named_and_last_is_written_at_the_step_reached(
    tmp_path, tiny_training_config
):
    from conftest import make_karpathy_dataset
    from hat.data.problems import DatasetError

    root = make_karpathy_dataset(tmp_path / "data", "f30k", {"train": 12, "val": 4, "test": 4})
    broken = root / "images" / "00011.jpg"  # a train image: only stat'ed at start-up, read when its batch comes
    broken.write_bytes(broken.read_bytes()[:100])
    cfg = tiny_training_config("dataset=f30k", f"dataset.root={root}", "train.epochs=1", "hardware.num_workers=1",
                               "logger=none")
    with pytest.raises(DatasetError, match=rf"a training image cannot be used: {broken}: .*last.pt holds step \d+.*"
                                           r"dataset.skip_bad_images=true.*resume=auto"):
        train(cfg, tmp_path / "run")
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert 0 <= last["step"] < 60 and last["epoch"] == 0


def test_resuming_from_a_weights_only_checkpoint_says_to_use_init_weights(tmp_path, tiny_config):
    from hat.config import ConfigError
    from hat.engine.checkpoint import save_checkpoint

    train(tiny_config("train.max_steps=1", "logger=none"), tmp_path / "a")
    state = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    weights = tmp_path / "weights.pt"
    save_checkpoint({key: state[key] for key in ("format", "model", "config")}, weights)
    with pytest.raises(ConfigError, match=rf"resume={weights}: the checkpoint holds no training state .*init_weights="):
        train(tiny_config("logger=none", f"resume={weights}"), tmp_path / "b")
