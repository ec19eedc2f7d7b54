"""The training run's schedule in use, early stopping, and what resuming does with optim settings."""

from __future__ import annotations

import json
import math
import re

import pytest

from hat.checks import ConfigError
from hat.engine.checkpoint import load_checkpoint
from hat.engine.loop import train

pytestmark = pytest.mark.slow

STEPS_PER_EPOCH = 24 * 5 // 8  # TINY_RUN: 24 images x 5 captions, batches of 8


def test_early_stop_ends_the_run_after_patience_validations_without_improvement(tmp_path, tiny_config):
    # A rate too small to change any weight: the monitor never improves on epoch 0's.
    outcome = train(tiny_config("train.epochs=6", "train.early_stop=2", "optim.lr=1e-12"), tmp_path)

    validated = [json.loads(line)["train/epoch"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
                 if "val/monitor" in line]
    assert validated == [0, 1, 2]  # epoch 0 is the best, then two validations without a better one
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert last["epoch"] == 3 and last["step"] == 3 * STEPS_PER_EPOCH
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert best["epoch"] == 1 and best["best_epoch"] == 0
    assert outcome.best_epoch == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["best_epoch"] == 0 and results["checkpoint"].endswith("best.pt")


def test_without_early_stop_a_flat_monitor_runs_every_epoch(tmp_path, tiny_config):
    train(tiny_config("train.epochs=3", "optim.lr=1e-12"), tmp_path)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["epoch"] == 3


def test_a_run_follows_its_warmup_and_cosine_schedule_in_every_group(tmp_path, tiny_config):
    train(tiny_config("train.epochs=1", "train.freeze_epochs=0", "train.max_steps=10", "train.log_every=5",
                      "optim.schedule=cosine", "optim.warmup_steps=4", "optim.min_lr_ratio=0.2",
                      "optim.backbone_lr_scale=0.5"), tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = {line["step"]: line["train/lr"] for line in lines if "train/lr" in line}
    # after 5 steps: warmup over (4 steps), 1 of the 6 cosine steps done
    assert logged[5] == pytest.approx(1e-3 * (0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi / 6))), rel=1e-9)
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert last["scheduler"]["spec_fields"]["total_steps"] == 10  # train.max_steps ends the cosine
    rates = sorted(group["lr"] for group in last["optimizer"]["param_groups"])
    assert rates == pytest.approx([1e-3 * 0.5 * 0.2, 1e-3 * 0.2], rel=1e-9)  # the floor, in both groups


def test_resuming_with_other_parameter_groups_names_the_settings(tmp_path, tiny_config):
    train(tiny_config("train.epochs=1"), tmp_path)
    with pytest.raises(ConfigError, match=r"resume=.*last\.pt: .*parameter group.*resume with the optim settings"):
        train(tiny_config("train.epochs=2", "resume=auto", "optim.backbone_lr_scale=0.1"), tmp_path)


def test_limit_batches_ends_every_epoch_early_and_the_schedule_counts_those_epochs(tmp_path, tiny_config):
    train(tiny_config("train.epochs=2", "train.limit_batches=3", "optim.step_size=1", "optim.gamma=0.5"), tmp_path)
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert last["epoch"] == 2 and last["step"] == 6
    assert last["scheduler"]["spec_fields"]["steps_per_epoch"] == 3
    assert last["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3 * 0.5**2)  # two epochs of 3 steps


def test_overfit_batches_trains_on_the_same_first_pairs_every_epoch(tmp_path, tiny_config):
    from hat.config import validate_train_config
    from hat.engine.distributed import Distributed
    from hat.engine.preemption import PreemptionSignals
    from hat.engine.run_folder import RunFolder
    from hat.engine.training_run import TrainingRun
    from hat.runtime import resolve_runtime

    cfg = tiny_config("train.overfit_batches=2")
    with PreemptionSignals() as signals:
        run = TrainingRun(cfg, validate_train_config(cfg), RunFolder(tmp_path), Distributed(),
                          resolve_runtime(cfg.hardware), signals).setup()
    sampler = run.parts.sampler
    assert sampler.batches_per_epoch == 2
    for epoch in range(3):
        sampler.set_epoch(epoch)
        assert sorted(sampler) == list(range(16))  # 2 batches of 8: the first 16 pairs, reshuffled


def test_profile_steps_write_a_trace_of_the_training_steps(tmp_path, tiny_config):
    train(tiny_config("train.epochs=1", "train.limit_batches=4", "train.profile_steps=2"), tmp_path)
    traces = list((tmp_path / "profile").glob("*.pt.trace.json"))
    assert len(traces) == 1
    events = json.loads(traces[0].read_text())["traceEvents"]
    assert any(event.get("name") == "ProfilerStep#2" for event in events)  # the steps after skip + warmup


def test_without_a_terminal_the_log_gets_a_progress_line_every_log_every_steps(tmp_path, tiny_config, caplog):
    """Under SLURM, nohup or a log file tqdm draws nothing: the log says how the training goes instead."""
    caplog.set_level("INFO", logger="hat.engine.training_run")
    train(tiny_config("train.epochs=1", "train.log_every=5", "logger=none"), tmp_path)  # pytest's output is no tty
    lines = [record.getMessage() for record in caplog.records if " s/step, " in record.getMessage()]
    assert [line.split(":")[0] for line in lines] == [f"epoch 0 step {s}/{STEPS_PER_EPOCH}" for s in (5, 10, 15)]
    pattern = (r"epoch 0 step 5/15: loss \d+\.\d{4}, \d+\.\d samples/s, data wait \d+%, \d+\.\d{3} s/step, "
               r"\d+:\d\d:\d\d left")
    assert re.fullmatch(pattern, lines[0]), lines[0]
    assert lines[-1].endswith("0:00:00 left")
