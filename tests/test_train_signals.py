"""The training log's gradient norm, clipped share, per-group rates and learnt temperature: measured
right in a step, and present with sane values in a tiny training's metrics.jsonl."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from hat.engine.checkpoint import load_checkpoint
from hat.engine.loop import train
from hat.engine.train_signals import GradientMonitor, rate_and_loss_metrics
from hat.losses import HingeHardestLoss, InfoNCELoss


def backward(model: nn.Module, scaler: torch.amp.GradScaler) -> float:
    """A backward pass through ``scaler``; returns the total gradient norm it should give, unscaled."""
    model.zero_grad()
    scaler.scale(model(torch.ones(4, 3)).pow(2).sum()).backward()
    grads = [p.grad / scaler.get_scale() for p in model.parameters()]
    return float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])))


@pytest.mark.parametrize("scale", [1.0, 1024.0], ids=["plain", "fp16-scaler"])
def test_the_norm_is_the_unscaled_one_before_clipping_and_every_step_over_the_clip_counts(scale):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=scale, enabled=scale != 1.0)
    monitor = GradientMonitor(list(model.parameters()), clip=1e-3)
    for _ in range(3):
        expected = backward(model, scaler)
        monitor.before_step(optimizer, scaler, logged=False)
        scaler.step(optimizer)
        scaler.update()
    assert expected > 1e-3
    read = monitor.read_and_reset()
    assert read["train/grad_norm"] == pytest.approx(expected, rel=1e-5)  # before the clip brought it to 1e-3
    assert read["train/clipped_share"] == 1.0
    assert float(torch.linalg.vector_norm(model.weight.grad)) <= 1e-3 * 1.001  # clipped
    monitor.clip = expected * 10  # a step under the clip counts as not clipped
    backward(model, scaler)
    monitor.before_step(optimizer, scaler, logged=True)
    assert monitor.read_and_reset()["train/clipped_share"] == 0.0


def test_without_a_clip_the_norm_is_measured_on_logged_steps_only():
    model = nn.Linear(3, 2)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    monitor = GradientMonitor(list(model.parameters()), clip=None)
    backward(model, scaler)
    monitor.before_step(None, scaler, logged=False)
    assert "train/grad_norm" not in monitor.read_and_reset()
    expected = backward(model, scaler)
    monitor.before_step(None, scaler, logged=True)
    assert monitor.read_and_reset() == {"train/grad_norm": pytest.approx(expected, rel=1e-6),
                                        "train/clipped_share": 0.0}


def test_rates_of_every_group_and_the_learnt_temperature_only():
    weights, biases = nn.Parameter(torch.ones(2, 2)), nn.Parameter(torch.ones(2))
    optimizer = torch.optim.AdamW([{"params": [weights], "lr": 0.1, "name": "lr_x0.1_decay"},
                                   {"params": [biases], "lr": 1.0, "name": "no_decay"}])
    learnt = rate_and_loss_metrics(optimizer, InfoNCELoss(temperature=0.05))
    assert learnt == {"train/lr": 1.0, "train/lr/lr_x0.1_decay": 0.1, "train/lr/no_decay": 1.0,
                      "train/temperature": pytest.approx(0.05)}
    assert "train/temperature" not in rate_and_loss_metrics(optimizer, InfoNCELoss(learnable=False))
    assert "train/temperature" not in rate_and_loss_metrics(optimizer, HingeHardestLoss())


def logged_lines(run_dir) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if "train/loss" in line]


@pytest.mark.slow
def test_a_training_logs_the_gradient_norm_clipping_rates_and_temperature(tmp_path, tiny_config):
    short = ("train.epochs=1", "train.max_steps=10", "train.log_every=5", "logger=none")
    train(tiny_config(*short, "optim.grad_clip=1e-6"), tmp_path / "clipped")
    for line in logged_lines(tmp_path / "clipped"):
        assert line["train/grad_norm"] > 0 and math.isfinite(line["train/grad_norm"])
        assert line["train/clipped_share"] == 1.0  # every step's norm is over a clip of 1e-6
        assert line["train/lr/all"] == line["train/lr"]  # HAT's preset: one group
        assert "train/temperature" not in line  # the hinge learns none

    run = tmp_path / "infonce"
    train(tiny_config(*short, "optim=finetune", "optim.grad_clip=null", "loss=infonce"), run)
    groups = [group["name"] for group in load_checkpoint(run / "checkpoints" / "last.pt")["optimizer"]["param_groups"]]
    assert {"lr_x1_decay", "lr_x1_no_decay"} <= set(groups)
    lines = logged_lines(run)
    assert [line["step"] for line in lines] == [5, 10]
    for line in lines:
        assert line["train/grad_norm"] > 0 and line["train/clipped_share"] == 0.0  # no clip configured
        assert {f"train/lr/{name}" for name in groups} <= set(line)
        assert line["train/lr"] == max(line[f"train/lr/{name}"] for name in groups)
        assert 0.01 <= line["train/temperature"] <= 1.0
    assert lines[0]["train/temperature"] != lines[1]["train/temperature"]  # it learns
