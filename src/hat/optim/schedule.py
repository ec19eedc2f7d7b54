"""The learning-rate schedule: an optional linear warmup, then step decay, cosine decay or a constant rate.

The rate of every parameter group is its base rate (``optim.lr`` times the group's scale, see
:mod:`hat.optim.param_groups`) times :func:`lr_factor` of the optimizer steps taken, so the
schedule is a pure function of the step: a resumed run continues it exactly. HAT's recipe is
``schedule=step`` without warmup: x ``gamma`` every ``step_size`` epochs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SCHEDULES = ("step", "cosine", "constant")


@dataclass(frozen=True)
class ScheduleSpec:
    """``kind`` (one of :data:`SCHEDULES`); ``warmup_steps`` of linear warmup; the step decay's
    ``step_size`` (epochs) and ``gamma``; the cosine's final rate ``min_lr_ratio`` (a fraction of the
    base rate); ``steps_per_epoch`` and ``total_steps`` (the run's length, where cosine ends)."""

    kind: str
    warmup_steps: int
    step_size: int
    gamma: float
    min_lr_ratio: float
    steps_per_epoch: int
    total_steps: int


def lr_factor(step: int, spec: ScheduleSpec) -> float:
    """The fraction of the base rate used by the optimizer step that follows ``step`` steps taken.

    Warmup: ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps (never 0). After it,
    ``step``: ``gamma ** (epoch // step_size)`` with ``epoch = step // steps_per_epoch`` (epochs
    count from the start of training, warmup included, as with PyTorch's StepLR per epoch);
    ``cosine``: from 1 at the end of warmup down to ``min_lr_ratio`` at ``total_steps``, then flat;
    ``constant``: 1.
    """
    if step < spec.warmup_steps:
        return (step + 1) / spec.warmup_steps
    if spec.kind == "step":
        return spec.gamma ** (step // spec.steps_per_epoch // spec.step_size)
    if spec.kind == "cosine":
        span = max(1, spec.total_steps - spec.warmup_steps)
        progress = min(1.0, (step - spec.warmup_steps) / span)
        return spec.min_lr_ratio + (1 - spec.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if spec.kind == "constant":
        return 1.0
    raise ValueError(f"optim.schedule={spec.kind!r} is not one of {SCHEDULES}")


class StepwiseSchedule(torch.optim.lr_scheduler.LRScheduler):
    """A PyTorch scheduler stepped after every optimizer step, setting each group's rate to its
    base rate times :func:`lr_factor`. Its state (saved in checkpoints) holds the spec's fields, so
    a resumed run keeps the schedule it started with."""

    def __init__(self, optimizer: torch.optim.Optimizer, spec: ScheduleSpec) -> None:
        self.spec_fields = dict(spec.__dict__)
        super().__init__(optimizer)

    @property
    def spec(self) -> ScheduleSpec:
        return ScheduleSpec(**self.spec_fields)

    def get_lr(self) -> list[float]:
        factor = lr_factor(self.last_epoch, self.spec)  # last_epoch counts steps here
        return [base * factor for base in self.base_lrs]

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state saved by this class; an older checkpoint's per-epoch StepLR state is refused
        with a message (its step counter counts epochs, this schedule's counts steps)."""
        if "spec_fields" not in state_dict:
            raise ValueError(
                "the checkpoint's scheduler state is a per-epoch StepLR of an earlier hat version, which this "
                "version's per-step schedule cannot continue"
            )
        super().load_state_dict(state_dict)
