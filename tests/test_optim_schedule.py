"""The learning-rate schedules, checked at chosen steps against rates worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from hat.optim.schedule import ScheduleSpec, StepwiseSchedule, lr_factor

STEPS_PER_EPOCH = 10


def spec(kind: str, warmup: int = 0, total: int = 100, **overrides) -> ScheduleSpec:
    fields = dict(kind=kind, warmup_steps=warmup, step_size=2, gamma=0.1, min_lr_ratio=0.0,
                  steps_per_epoch=STEPS_PER_EPOCH, total_steps=total)
    return ScheduleSpec(**(fields | overrides))


@pytest.mark.parametrize(("step", "expected"), [
    (0, 1.0), (19, 1.0),      # epochs 0 and 1
    (20, 0.1), (39, 0.1),     # epochs 2 and 3: one decay
    (40, 0.01), (95, 0.0001),  # epochs 4 and 9
])
def test_step_decays_by_gamma_every_step_size_epochs(step, expected):
    assert lr_factor(step, spec("step")) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("step", "expected"), [
    (0, 1 / 5), (1, 2 / 5), (4, 1.0),  # warmup of 5 steps: (step + 1) / 5
    (5, 1.0),                          # cosine starts at the top
    (55, 0.5),                         # halfway through the 105 - 5 steps after warmup: cos(pi / 2)
    (105, 0.0), (130, 0.0),            # the end, and beyond it
    (29, 0.5 * (1 + math.cos(math.pi * 24 / 100))),
])
def test_cosine_after_linear_warmup(step, expected):
    assert lr_factor(step, spec("cosine", warmup=5, total=105)) == pytest.approx(expected, abs=1e-12)


def test_cosine_ends_at_its_floor():
    floor = spec("cosine", min_lr_ratio=0.1)
    assert lr_factor(50, floor) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(100, floor) == pytest.approx(0.1)


@pytest.mark.parametrize(("step", "expected"), [(0, 0.25), (3, 1.0), (4, 1.0), (10_000, 1.0)])
def test_constant_after_warmup(step, expected):
    assert lr_factor(step, spec("constant", warmup=4)) == expected


def test_step_epochs_count_from_the_start_warmup_included():
    warm = spec("step", warmup=15)
    assert lr_factor(14, warm) == 1.0 and lr_factor(19, warm) == 1.0 and lr_factor(20, warm) == pytest.approx(0.1)


def test_scheduler_sets_each_groups_rate_and_resumes_where_it_stopped():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.1}], lr=1.0)
    schedule = StepwiseSchedule(optimizer, spec("cosine", warmup=5, total=105))
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.2, 0.02])  # step 0 of the warmup
    for _ in range(55):
        optimizer.step()
        schedule.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.5, 0.05])
    saved_optimizer, saved_schedule = optimizer.state_dict(), schedule.state_dict()

    c, d = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    fresh = torch.optim.SGD([{"params": [c], "lr": 1.0}, {"params": [d], "lr": 0.1}], lr=1.0)
    resumed = StepwiseSchedule(fresh, spec("constant"))  # the checkpoint's schedule wins
    fresh.load_state_dict(saved_optimizer)
    resumed.load_state_dict(saved_schedule)
    fresh.step()
    resumed.step()
    factor = lr_factor(56, spec("cosine", warmup=5, total=105))
    assert [g["lr"] for g in fresh.param_groups] == pytest.approx([factor, factor * 0.1])


def test_an_older_per_epoch_steplr_state_is_refused_with_a_reason():
    parameter = torch.nn.Parameter(torch.zeros(1))
    old = torch.optim.lr_scheduler.StepLR(torch.optim.SGD([parameter], lr=1.0), step_size=10).state_dict()
    schedule = StepwiseSchedule(torch.optim.SGD([parameter], lr=1.0), spec("step"))
    with pytest.raises(ValueError, match="per-epoch StepLR of an earlier hat version"):
        schedule.load_state_dict(old)
