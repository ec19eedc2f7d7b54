"""Resuming: from another run's folder (its best checkpoint comes along), and settings that the
checkpoint's state overrides are named in a warning."""

from __future__ import annotations

import json

import pytest

from hat.engine.checkpoint import load_checkpoint
from hat.engine.loop import train
from hat.engine.resume import settings_not_applied

pytestmark = pytest.mark.slow


def test_resume_from_another_folder_carries_its_best_checkpoint_and_ends_with_results(tmp_path, tiny_config):
    first = tmp_path / "first"
    train(tiny_config("train.epochs=2", "logger=none"), first)
    second = tmp_path / "second"
    outcome = train(tiny_config("train.epochs=3", "logger=none", f"resume={first / 'checkpoints' / 'last.pt'}"),
                    second)
    assert (second / "checkpoints" / "best.pt").is_file()
    results = json.loads((second / "results.json").read_text())
    assert results["metrics"] == pytest.approx(outcome.test)
    best = load_checkpoint(second / "checkpoints" / "best.pt")
    assert results["monitor"] == {"val/i2t_r1+val/t2i_r1": best["best_metric"]} and best["best_epoch"] <= 2


def test_resume_from_a_folder_without_best_chooses_the_best_afresh(tmp_path, tiny_config, caplog):
    first = tmp_path / "first"
    train(tiny_config("train.epochs=1", "logger=none"), first)
    (first / "checkpoints" / "best.pt").unlink()
    second = tmp_path / "second"
    with caplog.at_level("WARNING"):
        train(tiny_config("train.epochs=1", "logger=none", f"resume={first / 'checkpoints' / 'last.pt'}"), second)
    assert "no best.pt beside" in caplog.text
    assert (second / "checkpoints" / "best.pt").is_file() and (second / "results.json").is_file()


def test_resume_warns_about_each_setting_the_checkpoint_overrides(tmp_path, tiny_config, caplog):
    train(tiny_config("train.epochs=1", "logger=none"), tmp_path)
    with caplog.at_level("WARNING"):
        train(tiny_config("train.epochs=1", "logger=none", "resume=auto", "optim.lr=0.5", "optim.gamma=0.5"), tmp_path)
    assert "optim.lr=0.5 is not applied, the run continues with 0.001" in caplog.text
    assert "optim.gamma=0.5 is not applied, the run continues with 0.1" in caplog.text
    assert "optim.step_size" not in caplog.text


def test_settings_not_applied_compares_nested_keys():
    saved = {"optim": {"lr": 1e-4, "step_size": 10}, "seed": 0, "train": {"epochs": 5}}
    current = {"optim": {"lr": 1e-3, "step_size": 10}, "seed": 1, "train": {"epochs": 9}}
    lines = settings_not_applied(saved, current)
    assert [line.split(" ")[0] for line in lines] == ["optim.lr=0.001", "seed=1"]
