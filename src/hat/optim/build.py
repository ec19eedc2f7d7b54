"""The optimizer and its schedule, built from a resolved :class:`hat.run_spec.OptimSpec`."""

from __future__ import annotations

import torch
from torch import nn

from hat.models.hat import HATModel
from hat.optim.param_groups import parameter_groups
from hat.optim.schedule import ScheduleSpec, StepwiseSchedule
from hat.run_spec import OptimSpec

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def schedule_spec(spec: OptimSpec, steps_per_epoch: int, total_steps: int) -> ScheduleSpec:
    """The schedule of ``spec`` for a run of ``total_steps`` optimizer steps, ``steps_per_epoch`` an
    epoch; a warmup in epochs becomes the nearest whole number of steps (at least one when non-zero)."""
    warmup = spec.warmup_steps or (max(1, round(spec.warmup_epochs * steps_per_epoch)) if spec.warmup_epochs else 0)
    return ScheduleSpec(spec.schedule, warmup, spec.step_size, spec.gamma, spec.min_lr_ratio, steps_per_epoch,
                        total_steps)


def build_optimizer(
    spec: OptimSpec, model: HATModel, loss: nn.Module, steps_per_epoch: int, total_steps: int
) -> tuple[torch.optim.Optimizer, StepwiseSchedule]:
    """The optimizer over every parameter of ``model`` and ``loss`` in the groups of
    :func:`hat.optim.param_groups.parameter_groups` (weight decay on the weights it names, none on
    norms, biases and the temperature), and its per-step schedule."""
    groups = parameter_groups(model, loss, spec.lr, spec.backbone_lr_scale, spec.layer_decay, spec.weight_decay)
    optimizer = OPTIMIZERS[spec.name](groups, lr=spec.lr, weight_decay=spec.weight_decay)
    return optimizer, StepwiseSchedule(optimizer, schedule_spec(spec, steps_per_epoch, total_steps))
