"""Ranking losses (hat.losses) on hand-worked score matrices, and build_loss from a config's LossSpec.

``scores[i, j]`` scores image i against caption j; the diagonal holds the positives.
Covers: VSE++ hardest-negative and sum-over-negatives hinge values and gradients; the positive
never counting as its own negative; InfoNCE against a hand-written cross-entropy and its
(learnable or frozen) temperature; build_loss; and shape errors.
"""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from hat.losses import HingeHardestLoss, HingeSumLoss, InfoNCELoss, build_loss, loss_spec

# Margin 0.2 hinge costs of this matrix, [m + S_ij - S_ii]_+ per row (image i vs caption j != i)
# and [m + S_ij - S_jj]_+ per column (caption j vs image i != j):
#   row 0 (S00 = 0.8): j1: 0.2 + 0.5 - 0.8 < 0 -> 0;   j2: 0.2 + 0.1 - 0.8 < 0 -> 0
#   row 1 (S11 = 0.6): j0: 0.2 + 0.7 - 0.6 = 0.3;      j2: 0.2 + 0.3 - 0.6 < 0 -> 0
#   row 2 (S22 = 0.4): j0: 0.2 + 0.2 - 0.4 = 0.0;      j1: 0.2 + 0.9 - 0.4 = 0.7
#   col 0 (S00 = 0.8): i1: 0.2 + 0.7 - 0.8 = 0.1;      i2: 0.2 + 0.2 - 0.8 < 0 -> 0
#   col 1 (S11 = 0.6): i0: 0.2 + 0.5 - 0.6 = 0.1;      i2: 0.2 + 0.9 - 0.6 = 0.5
#   col 2 (S22 = 0.4): i0: 0.2 + 0.1 - 0.4 < 0 -> 0;   i1: 0.2 + 0.3 - 0.4 = 0.1
SCORES = [
    [0.8, 0.5, 0.1],
    [0.7, 0.6, 0.3],
    [0.2, 0.9, 0.4],
]


def hand_scores(requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(SCORES, dtype=torch.float64, requires_grad=requires_grad)


def hand_infonce(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean of the row-wise and column-wise cross-entropies of ``scores / temperature``."""
    logits = scores / temperature
    image_to_caption = -torch.log_softmax(logits, dim=1).diagonal().mean()
    caption_to_image = -torch.log_softmax(logits, dim=0).diagonal().mean()
    return 0.5 * (image_to_caption + caption_to_image)


def test_hinge_hardest_hand_worked_value():
    # Rows' hardest: 0 + 0.3 + 0.7 = 1.0; columns' hardest: 0.1 + 0.5 + 0.1 = 0.7; total 1.7.
    assert HingeHardestLoss(margin=0.2)(hand_scores()).item() == pytest.approx(1.7)


def test_hinge_sum_hand_worked_value():
    # Rows: 0 + 0 + 0.3 + 0 + 0.0 + 0.7 = 1.0; columns: 0.1 + 0 + 0.1 + 0.5 + 0 + 0.1 = 0.8.
    assert HingeSumLoss(margin=0.2)(hand_scores()).item() == pytest.approx(1.8)


def test_margin_enters_the_hinge():
    # Margin 0: row costs 0.1 (row 1, j0) and 0.5 (row 2, j1); column costs 0 (col 0), 0.3 (col 1,
    # i2), 0 (col 2): hardest total 0.1 + 0.5 + 0.3 = 0.9.
    assert HingeHardestLoss(margin=0.0)(hand_scores()).item() == pytest.approx(0.9)


def test_hinge_hardest_gradient_reaches_only_the_hardest_negatives_and_positives():
    # Each active hardest term adds +1 to its negative and -1 to its positive:
    #   row 1 -> S10, S11; row 2 -> S21, S22; col 0 -> S10, S00; col 1 -> S21, S11; col 2 -> S12, S22.
    scores = hand_scores(requires_grad=True)
    HingeHardestLoss(margin=0.2)(scores).backward()
    expected = torch.tensor([[-1.0, 0.0, 0.0], [2.0, -2.0, 1.0], [0.0, 2.0, -2.0]], dtype=torch.float64)
    torch.testing.assert_close(scores.grad, expected)


@pytest.mark.parametrize(
    "loss", [HingeHardestLoss(0.2), HingeSumLoss(0.2), InfoNCELoss(0.07)], ids=lambda loss: type(loss).__name__
)
def test_gradients_flow_to_the_scores(loss):
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(5, 5, generator=generator).requires_grad_(True)
    loss(scores).backward()
    assert torch.isfinite(scores.grad).all()
    assert scores.grad.abs().sum() > 0


@pytest.mark.parametrize("loss", [HingeHardestLoss(0.2), HingeSumLoss(0.2)], ids=lambda loss: type(loss).__name__)
def test_positive_pair_is_never_its_own_negative(loss):
    # With the diagonal far above everything else no negative violates the margin; counting the
    # positive as a negative would add the margin for every row and column.
    generator = torch.Generator().manual_seed(1)
    scores = torch.randn(4, 4, generator=generator) + 100.0 * torch.eye(4)
    assert loss(scores).item() == 0.0
    assert loss(torch.tensor([[3.0]])).item() == 0.0


def test_infonce_hand_worked_value():
    # 2 x 2 identity scores at temperature 0.5: logits [[2, 0], [0, 2]], every row and column
    # gives -log(e^2 / (e^2 + e^0)) = log(1 + e^-2).
    loss = InfoNCELoss(temperature=0.5)(torch.eye(2))
    assert loss.item() == pytest.approx(math.log(1.0 + math.exp(-2.0)), rel=1e-6)


def test_infonce_matches_hand_written_cross_entropy_both_ways():
    # An asymmetric matrix, so averaging rows and columns differs from either alone.
    scores = hand_scores().float()
    loss = InfoNCELoss(temperature=0.1)(scores)
    torch.testing.assert_close(loss, hand_infonce(scores, 0.1))
    assert not torch.isclose(loss, -torch.log_softmax(scores / 0.1, dim=1).diagonal().mean())


def test_infonce_inverse_temperature_is_capped_at_100():
    scores = hand_scores().float()
    torch.testing.assert_close(InfoNCELoss(temperature=0.001)(scores), hand_infonce(scores, 0.01))


def test_infonce_temperature_learns_only_when_learnable():
    learnable = InfoNCELoss(temperature=0.07, learnable=True)
    learnable(hand_scores().float()).backward()
    trained = [p for p in learnable.parameters() if p.requires_grad]
    assert len(trained) == 1
    assert trained[0].grad is not None and trained[0].grad.abs().item() > 0

    frozen = InfoNCELoss(temperature=0.07, learnable=False)
    frozen(hand_scores(requires_grad=True).float()).backward()
    assert not any(p.requires_grad for p in frozen.parameters())
    assert all(p.grad is None for p in frozen.parameters())


@pytest.mark.parametrize(
    "cfg, cls, expected",
    [
        ({"name": "hinge_hardest", "margin": 0.2}, HingeHardestLoss, 1.7),
        ({"name": "hinge_hardest", "margin": 0.0}, HingeHardestLoss, 0.9),
        ({"name": "hinge_sum", "margin": 0.2}, HingeSumLoss, 1.8),
    ],
)
def test_build_loss_builds_hinge_losses_with_the_configured_margin(cfg, cls, expected):
    loss = build_loss(loss_spec(OmegaConf.create(cfg)))
    assert type(loss) is cls
    assert loss(hand_scores()).item() == pytest.approx(expected)


@pytest.mark.parametrize("learnable", [True, False])
def test_build_loss_builds_infonce_with_the_configured_temperature(learnable):
    cfg = OmegaConf.create({"name": "infonce", "temperature": 0.5, "learnable_temperature": learnable})
    loss = build_loss(loss_spec(cfg))
    assert type(loss) is InfoNCELoss
    scores = hand_scores().float()
    torch.testing.assert_close(loss(scores), hand_infonce(scores, 0.5))
    assert any(p.requires_grad for p in loss.parameters()) == learnable


def test_build_loss_rejects_unknown_name():
    with pytest.raises(ValueError, match="'triplet_soft'"):
        loss_spec(OmegaConf.create({"name": "triplet_soft", "margin": 0.2}))


@pytest.mark.parametrize(
    "loss", [HingeHardestLoss(0.2), HingeSumLoss(0.2), InfoNCELoss(0.07)], ids=lambda loss: type(loss).__name__
)
@pytest.mark.parametrize("shape", [(3, 4), (4, 3), (3,), (2, 2, 2)])
def test_non_square_scores_raise(loss, shape):
    with pytest.raises(ValueError, match="square"):
        loss(torch.zeros(shape))


def test_hardest_negative_warmup_sums_all_negatives_until_its_epoch():
    scores = torch.tensor([[0.9, 0.5, 0.1], [0.6, 0.8, 0.3], [0.2, 0.7, 0.4]])
    warm = HingeHardestLoss(margin=0.2, warmup_epochs=2)
    warm.set_epoch(1)
    torch.testing.assert_close(warm(scores), HingeSumLoss(margin=0.2)(scores))
    warm.set_epoch(2)
    torch.testing.assert_close(warm(scores), HingeHardestLoss(margin=0.2)(scores))
