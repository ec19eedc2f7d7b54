"""hat.models.weight_sources: which epoch a training checkpoint's weights are from."""

from __future__ import annotations

import pytest

from hat.models.weight_sources import weights_epoch


@pytest.mark.parametrize(
    ("counters", "epoch"),
    [
        ({"epoch": 3, "batch": 0}, 2),  # best.pt after the validation of epoch 2: 3 epochs finished
        ({"epoch": 3, "batch": 17}, 3),  # last.pt written 17 batches into epoch 3 (a stop signal)
        ({"epoch": 1, "batch": 0}, 0),
        ({"epoch": 0, "batch": 0}, None),  # written before the first step: no epoch trained
        ({}, None),
    ],
)
def test_the_epoch_of_a_checkpoints_weights_is_the_one_training_logged(counters, epoch):
    assert weights_epoch(counters) == epoch
