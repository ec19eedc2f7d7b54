"""Ranking losses over a ``(B, B)`` score matrix whose diagonal holds the matching pairs.

Rows are images, columns are captions: ``scores[i, j]`` scores image ``i`` against caption ``j``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

LOSSES = ("hinge_hardest", "hinge_sum", "infonce")


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

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        if scores.dim() != 2 or scores.shape[0] != scores.shape[1]:
            raise ValueError(f"expected a square (B, B) score matrix, got {tuple(scores.shape)}")
        logits = scores.float() * self.logit_scale.clamp(max=math.log(100.0)).exp()
        targets = torch.arange(scores.shape[0], device=scores.device)
        return 0.5 * (
            nn.functional.cross_entropy(logits, targets) + nn.functional.cross_entropy(logits.t(), targets)
        )


def build_loss(cfg) -> RankingLoss:
    """The loss named by ``cfg.name`` (one of :data:`LOSSES`) with its settings from ``cfg``."""
    if cfg.name == "hinge_hardest":
        return HingeHardestLoss(margin=cfg.margin, warmup_epochs=cfg.get("warmup_epochs", 0))
    if cfg.name == "hinge_sum":
        return HingeSumLoss(margin=cfg.margin)
    if cfg.name == "infonce":
        return InfoNCELoss(temperature=cfg.temperature, learnable=cfg.learnable_temperature)
    raise ValueError(f"loss.name must be one of {LOSSES}, got {cfg.name!r}")
