"""Resuming: from another run's folder (its best checkpoint comes along), and settings that the
checkpoint's state overrides are named in a warning."""

from __future__ import annotations

import json

import pytest
import torch

from hat.checks import ConfigError
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


def test_a_run_stopped_between_writing_last_and_best_resumes_to_the_best_it_recorded(tmp_path, tiny_config, caplog):
    """At a validation that improves, ``last`` is written first, then ``best``; a SIGKILL between
    the two leaves ``best.pt`` of an earlier epoch (here: another run's) beside a ``last`` whose
    counters name this epoch. resume=auto neither refuses nor tests the stale best: the resumed run
    validates first, chooses the best afresh and ends with the results of the unbroken run."""
    run, other = tmp_path / "run", tmp_path / "other"
    unbroken = train(tiny_config("train.epochs=1", "logger=none"), run)
    train(tiny_config("train.epochs=1", "logger=none", "seed=1"), other)
    (other / "checkpoints" / "best.pt").replace(run / "checkpoints" / "best.pt")
    (run / "results.json").unlink()
    with caplog.at_level("WARNING"):
        resumed = train(tiny_config("train.epochs=1", "logger=none", "resume=auto"), run)
    assert "is the best of epoch 0 (monitor" in caplog.text and "the next validation chooses the best" in caplog.text
    assert resumed.test == pytest.approx(unbroken.test)
    assert (resumed.best_monitor, resumed.best_epoch) == (unbroken.best_monitor, 0)
    best, last = (load_checkpoint(run / "checkpoints" / name) for name in ("best.pt", "last.pt"))
    assert all(torch.equal(best["model"][key], value) for key, value in last["model"].items())


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


def test_resume_auto_after_the_data_changed_stops_naming_the_change(tmp_path, tiny_config):
    """The training split's images and captions differ (more generated images): one line, nothing written."""
    train(tiny_config("train.epochs=1", "logger=none"), tmp_path)
    last = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(ConfigError, match=r"trained on other data \(the train split's images or captions changed\)"
                                          r".*resume_changes=allow"):
        train(tiny_config("train.epochs=2", "logger=none", "resume=auto", "dataset.num_train=32"), tmp_path)
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == last


def test_resume_changes_allow_goes_on_and_chooses_the_best_afresh(tmp_path, tiny_config, caplog):
    train(tiny_config("train.epochs=1", "logger=none"), tmp_path)
    with caplog.at_level("WARNING"):
        outcome = train(tiny_config("train.epochs=2", "logger=none", "resume=auto", "dataset.num_train=32",
                                    "resume_changes=allow"), tmp_path)
    assert "resume_changes=allow: the train split's images or captions changed" in caplog.text
    validated = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
                 if "val/monitor" in line]
    assert validated == [15, 15, 35], "the resumed run validates again before it trains on the new data"
    assert outcome.best_epoch >= 0 and load_checkpoint(tmp_path / "checkpoints" / "last.pt")["data"]["splits"]


def test_resume_with_another_model_shape_stops_naming_the_settings(tmp_path, tiny_config):
    train(tiny_config("train.epochs=1", "logger=none"), tmp_path)
    with pytest.raises(ConfigError, match=r"the checkpoint's model does not fit this config \(.*tensors.*\); it was "
                                          r"trained with encoder=tiny, alignment.levels=\[4, 10, 12\], this run asks "
                                          r"for encoder=tiny, alignment.levels=\[4, 12\]"):
        train(tiny_config("train.epochs=2", "logger=none", "resume=auto", "alignment.levels=[4,12]"), tmp_path)
