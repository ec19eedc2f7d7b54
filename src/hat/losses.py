"""Ranking losses over a ``(B, B)`` score matrix whose diagonal holds the matching pairs.

Rows are images, columns are captions: ``scores[i, j]`` scores image ``i`` against caption ``j``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from hat.checks import ConfigError, require_int, require_number

LOSSES = ("hinge_hardest", "hinge_sum", "infonce")


@dataclass(frozen=True)
class LossSpec:
    """``loss``: its ``name`` (one of :data:`LOSSES`); the hinges' ``margin``; the epochs the hardest-
    negative hinge sums over all negatives first (``warmup_epochs``); InfoNCE's initial ``temperature``
    and whether it is learnt (``learnable_temperature``). Settings another loss has no use for keep
    their defaults."""

    name: str
    margin: float = 0.2
    warmup_epochs: int = 0
    temperature: float = 0.07
    learnable_temperature: bool = True


def loss_spec(cfg) -> LossSpec:
    """The checked :class:`LossSpec` of a ``loss`` config (conf/loss/*.yaml); a bad value is a
    :class:`~hat.checks.ConfigError` naming its field."""
    if cfg.name not in LOSSES:
        raise ConfigError(f"loss.name={cfg.name!r} is not one of {LOSSES}")
    if cfg.name.startswith("hinge"):
        margin = require_number("loss.margin", cfg.margin, 0, why="HAT uses 0.2")
        warmup = require_int("loss.warmup_epochs", cfg.get("warmup_epochs", 0), 0,
                             why="epochs summing all negatives first")
        return LossSpec(cfg.name, margin=margin, warmup_epochs=warmup)
    temperature = require_number("loss.temperature", cfg.temperature, 0, exclusive=True)
    if not isinstance(cfg.learnable_temperature, bool):
        raise ConfigError(f"loss.learnable_temperature={cfg.learnable_temperature!r} must be true or false")
    return LossSpec(cfg.name, temperature=temperature, learnable_temperature=cfg.learnable_temperature)


def _hinge_costs(scores: torch.Tensor, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Hinge costs of every negative, both ways, with the positives zeroed.

    Returns ``(caption_cost, image_cost)``, each ``(B, B)``: ``caption_cost[i, j] =
    [margin + S[i, j] - S[i, i]]_+`` (image i against negative caption j) and ``image_cost[i, j] =
    [margin + S[i, j] - S[j, j]]_+`` (caption j against negative image i).
    """
    if scores.dim() != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"expected a square (B, B) score matrix, got {tuple(scores.shape)}")
    positives = scores.diagonal()
    eye = torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
    caption_cost = (margin + scores - positives[:, None]).clamp_min(0.0).masked_fill(eye, 0.0)
    image_cost = (margin + scores - positives[None, :]).clamp_min(0.0).masked_fill(eye, 0.0)
    return caption_cost, image_cost


class RankingLoss(nn.Module):
    """A loss over a ``(B, B)`` score matrix; the training loop reports each epoch through :meth:`set_epoch`."""

    def set_epoch(self, epoch: int) -> None:
        """Losses with an epoch schedule override this; the others ignore it."""

    def logged_values(self) -> dict[str, float]:
        """What the loss learns besides the model, by name, for the training log (InfoNCE's
        learnable ``temperature``); none for the others. Reading it synchronises with the device."""
        return {}


class HingeHardestLoss(RankingLoss):
    """VSE++: hinge triplet loss with the hardest negative in the batch, summed both ways.

    ``sum_i max_{j != i} [m + S_ij - S_ii]_+ + sum_j max_{i != j} [m + S_ij - S_jj]_+``.

    With ``warmup_epochs > 0`` the first epochs sum over all negatives instead (as VSE-infinity
    does): hardest negatives alone rarely get encoders trained from scratch off the ground.
    The training loop reports the epoch through :meth:`set_epoch`.
    """

    def __init__(self, margin: float = 0.2, warmup_epochs: int = 0) -> None:
        super().__init__()
        self.margin = margin
        self.warmup_epochs = warmup_epochs
        self.hardest = warmup_epochs == 0

    def set_epoch(self, epoch: int) -> None:
        self.hardest = epoch >= self.warmup_epochs

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        caption_cost, image_cost = _hinge_costs(scores, self.margin)
        if not self.hardest:
            return caption_cost.sum() + image_cost.sum()
        return caption_cost.max(dim=1).values.sum() + image_cost.max(dim=0).values.sum()


class HingeSumLoss(RankingLoss):
    """Hinge triplet loss summed over every negative in the batch, both ways (VSE0)."""

    def __init__(self, margin: float = 0.2) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        caption_cost, image_cost = _hinge_costs(scores, self.margin)
        return caption_cost.sum() + image_cost.sum()


class InfoNCELoss(RankingLoss):
    """Symmetric cross-entropy over ``scores / temperature`` with a learnable temperature.

    The mean of the image-to-caption and caption-to-image cross-entropies (CLIP). The
    temperature is stored as ``log(1 / temperature)`` and clamped so that ``1 / t <= 100``.
    """

    def __init__(self, temperature: float = 0.07, learnable: bool = True) -> None:
        super().__init__()
        init = torch.tensor(math.log(1.0 / temperature))
        self.logit_scale = nn.Parameter(init, requires_grad=learnable)

    def logged_values(self) -> dict[str, float]:
        """``{"temperature": t}``, the temperature in use (after the clamp), when it is learnt."""
        if not self.logit_scale.requires_grad:
            return {}
        return {"temperature": float(1.0 / self.logit_scale.detach().clamp(max=math.log(100.0)).exp())}

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        if scores.dim() != 2 or scores.shape[0] != scores.shape[1]:
            raise ValueError(f"expected a square (B, B) score matrix, got {tuple(scores.shape)}")
        logits = scores.float() * self.logit_scale.clamp(max=math.log(100.0)).exp()
        targets = torch.arange(scores.shape[0], device=scores.device)
        return 0.5 * (
            nn.functional.cross_entropy(logits, targets) + nn.functional.cross_entropy(logits.t(), targets)
        )


def build_loss(spec: LossSpec) -> RankingLoss:
    """The loss a :class:`LossSpec` names, with its settings."""
    if spec.name == "hinge_hardest":
        return HingeHardestLoss(margin=spec.margin, warmup_epochs=spec.warmup_epochs)
    if spec.name == "hinge_sum":
        return HingeSumLoss(margin=spec.margin)
    if spec.name == "infonce":
        return InfoNCELoss(temperature=spec.temperature, learnable=spec.learnable_temperature)
    raise ValueError(f"loss.name must be one of {LOSSES}, got {spec.name!r}")
