"""What the training log shows beside the loss every ``train.log_every`` steps: the total gradient
norm before clipping and the share of steps it clipped, each parameter group's rate, and what the
loss learns itself (InfoNCE's temperature)."""

from __future__ import annotations

import torch
from torch import nn


def total_norm(parameters: list[nn.Parameter]) -> torch.Tensor:
    """The 2-norm of all gradients of ``parameters`` together (those without one left out), as
    ``clip_grad_norm_`` measures it; a 0-dim tensor on their device (0 when none has a gradient)."""
    grads = [p.grad.detach() for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g, 2.0).float() for g in grads]), 2.0)


class GradientMonitor:
    """Unscales and clips each optimizer step's gradients, and keeps what the log reports of them.

    ``clip``: ``optim.grad_clip`` (None: no clipping). With a clip every step's total norm is
    measured (``clip_grad_norm_`` returns it) and compared with the clip on the device, without
    waiting for it; without one the norm is measured only on the steps that are logged. Norms are
    of the unscaled gradients (under fp16 autocast the scaler unscales them first)."""

    def __init__(self, parameters: list[nn.Parameter], clip: float | None) -> None:
        self.parameters, self.clip = parameters, clip
        self._reset()

    def _reset(self) -> None:
        self._norm: torch.Tensor | None = None  # the last measured step's norm
        self._clipped: torch.Tensor | None = None  # steps over the clip since the last read
        self._steps = 0

    def before_step(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, logged: bool) -> None:
        """Call after the backward pass and before ``scaler.step``; ``logged``: whether this step's
        numbers are read (:meth:`read_and_reset`) right after it."""
        self._steps += 1
        if self.clip is None and not logged:
            return
        scaler.unscale_(optimizer)  # scaler.step does not unscale again
        if self.clip is None:
            self._norm = total_norm(self.parameters)
            return
        self._norm = torch.nn.utils.clip_grad_norm_(self.parameters, self.clip)
        over = (self._norm > self.clip).float()
        self._clipped = over if self._clipped is None else self._clipped + over

    def read_and_reset(self) -> dict[str, float]:
        """``train/grad_norm`` (the last step's total norm before clipping) and
        ``train/clipped_share`` (the share of the steps since the last read whose norm exceeded the
        clip; 0 without one); starts a new window."""
        metrics = {}
        if self._norm is not None:
            metrics["train/grad_norm"] = float(self._norm)
        clipped = float(self._clipped) if self._clipped is not None else 0.0
        metrics["train/clipped_share"] = clipped / self._steps if self._steps else 0.0
        self._reset()
        return metrics


def rate_and_loss_metrics(optimizer: torch.optim.Optimizer, loss: nn.Module) -> dict[str, float]:
    """``train/lr`` (the highest group rate: the new layers'), ``train/lr/{group name}`` for every
    group (:mod:`hat.optim.param_groups` names them) and ``train/{name}`` of what the loss learns
    (``train/temperature`` for InfoNCE with a learnable temperature)."""
    groups = optimizer.param_groups
    metrics = {"train/lr": max(group["lr"] for group in groups)}
    for index, group in enumerate(groups):
        metrics[f"train/lr/{group.get('name', f'group{index}')}"] = group["lr"]
    for name, value in loss.logged_values().items():
        metrics[f"train/{name}"] = value
    return metrics


def training_metrics(
    loss: float, state, rates: dict[str, float], gradients: GradientMonitor, frozen: bool
) -> dict[str, float]:
    """Every ``train/*`` metric of a logged step: ``loss``, the rates and the loss's learnt values
    (:func:`rate_and_loss_metrics` of ``state``, a :class:`hat.engine.checkpoint.TrainingState`),
    the throughput ``rates`` (:class:`hat.engine.throughput.ThroughputMeter`), the gradients'
    numbers (``gradients``, read and reset), the epoch and whether the encoders are ``frozen``."""
    return {"train/loss": loss, **rate_and_loss_metrics(state.optimizer, state.loss), **rates,
            **gradients.read_and_reset(), "train/epoch": state.epoch, "train/encoders_frozen": float(frozen)}
