"""Retrieval metrics (hat.metrics) against docs/evaluation.md and torchmetrics, and metric names.

Covers: R@1/5/10 both ways agreeing with torchmetrics on random score matrices; a hand-worked
example with exact recalls and ranks; perfect and constant scores (ties count against the
query); rsum; shape errors; and the ``{split}[/{protocol}][/level{k}]/{metric}`` names.
"""

from __future__ import annotations

import re

import pytest
import torch
from torchmetrics.retrieval import RetrievalHitRate, RetrievalRecall

from hat.metrics import METRIC_KEYS, metric_name, prefixed, recall_curve, retrieval_ranks, retrieval_recall

KS = (1, 5, 10)


def caption_owner(num_images: int, captions_per_image: int) -> torch.Tensor:
    """The image each caption belongs to: caption c belongs to image c // captions_per_image."""
    return torch.arange(num_images * captions_per_image) // captions_per_image


def torchmetrics_recalls(sims: torch.Tensor, captions_per_image: int) -> dict[str, float]:
    """i2t hit rate (one query per image) and t2i recall (one query per caption), in percent."""
    num_images, num_captions = sims.shape
    owner = caption_owner(num_images, captions_per_image)
    relevant = owner[None, :] == torch.arange(num_images)[:, None]  # (N, 5N)
    expected = {}
    for k in KS:
        i2t = RetrievalHitRate(top_k=k)(
            sims.flatten(), relevant.flatten(), indexes=torch.arange(num_images).repeat_interleave(num_captions)
        )
        t2i = RetrievalRecall(top_k=k)(
            sims.t().flatten(), relevant.t().flatten(), indexes=torch.arange(num_captions).repeat_interleave(num_images)
        )
        expected[f"i2t_r{k}"] = 100.0 * i2t.item()
        expected[f"t2i_r{k}"] = 100.0 * t2i.item()
    return expected


@pytest.mark.parametrize("num_images, seed", [(30, 0), (30, 1), (57, 2)])
def test_recalls_agree_with_torchmetrics(num_images, seed):
    # Scores mildly favour the true pairs so that recalls land strictly between 0 and 100.
    generator = torch.Generator().manual_seed(seed)
    owner = caption_owner(num_images, 5)
    sims = torch.randn(num_images, 5 * num_images, generator=generator)
    sims[owner, torch.arange(5 * num_images)] += 1.5

    metrics = retrieval_recall(sims, captions_per_image=5)
    expected = torchmetrics_recalls(sims, captions_per_image=5)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-4), key
    assert 0 < metrics["t2i_r1"] < 100


def test_hand_worked_example():
    # 3 images, 2 captions each: captions 0, 1 -> image 0; 2, 3 -> image 1; 4, 5 -> image 2.
    sims = torch.tensor(
        [
            [0.9, 0.2, 0.8, 0.1, 0.3, 0.0],
            [0.5, 0.8, 0.4, 0.7, 0.2, 0.1],
            [0.1, 0.55, 0.6, 0.2, 0.5, 0.4],
        ]
    )
    # i2t rank = 1 + other images' captions scoring >= the image's best own caption:
    #   image 0: best own 0.9, none above -> 1
    #   image 1: best own 0.7 (caption 3), caption 1 has 0.8 -> 2
    #   image 2: best own 0.5 (caption 4), captions 1 (0.55) and 2 (0.6) -> 3
    # t2i rank = images scoring >= the caption's own image (its own included), per column:
    #   c0: 0.9 vs [0.5, 0.1] -> 1   c1: 0.2 vs [0.8, 0.55] -> 3   c2: 0.4 vs [0.8, 0.6] -> 3
    #   c3: 0.7 vs [0.1, 0.2] -> 1   c4: 0.5 vs [0.3, 0.2] -> 1    c5: 0.4 vs [0.0, 0.1] -> 1
    metrics = retrieval_recall(sims, captions_per_image=2)
    expected = {
        "i2t_r1": 100 / 3, "i2t_r5": 100.0, "i2t_r10": 100.0,  # ranks [1, 2, 3]
        "t2i_r1": 400 / 6, "t2i_r5": 100.0, "t2i_r10": 100.0,  # ranks [1, 3, 3, 1, 1, 1]
        "rsum": 100 / 3 + 400 / 6 + 400.0,
        "i2t_medr": 2.0, "i2t_meanr": 2.0,
        "t2i_medr": 1.0, "t2i_meanr": 10 / 6,
    }
    assert set(metrics) == set(METRIC_KEYS)
    assert metrics == pytest.approx(expected, abs=1e-4)


def test_recall_at_k_counts_ranks_up_to_k():
    # One caption per image; +1 strictly below the diagonal, 0 on it, -1 above. Image i's own
    # caption is beaten by the i captions j < i (rank i + 1), and caption j's own image by the
    # 11 - j images i > j (rank 12 - j): both ways the ranks are 1, 2, ..., 12.
    ones = torch.ones(12, 12)
    sims = torch.tril(ones, diagonal=-1) - torch.triu(ones, diagonal=1)
    metrics = retrieval_recall(sims, captions_per_image=1)
    for direction in ("i2t", "t2i"):
        assert metrics[f"{direction}_r1"] == pytest.approx(100 / 12)
        assert metrics[f"{direction}_r5"] == pytest.approx(500 / 12)
        assert metrics[f"{direction}_r10"] == pytest.approx(1000 / 12)
        assert metrics[f"{direction}_meanr"] == pytest.approx(6.5)


def test_perfect_scores_give_full_recall_and_rank_one():
    owner = caption_owner(7, 5)
    sims = (owner[None, :] == torch.arange(7)[:, None]).float()
    metrics = retrieval_recall(sims)
    for direction in ("i2t", "t2i"):
        for k in KS:
            assert metrics[f"{direction}_r{k}"] == 100.0
        assert metrics[f"{direction}_medr"] == 1.0
        assert metrics[f"{direction}_meanr"] == 1.0
    assert metrics["rsum"] == 600.0


def test_constant_scores_are_not_full_recall_because_ties_count_against_the_query():
    # 4 images x 20 captions, all equal: every image ties with the 15 other images' captions
    # (rank 16), and every caption ties with all 4 images (rank 4).
    metrics = retrieval_recall(torch.zeros(4, 20))
    assert metrics["i2t_r1"] == metrics["i2t_r5"] == metrics["i2t_r10"] == 0.0
    assert metrics["t2i_r1"] == 0.0
    assert metrics["t2i_r5"] == metrics["t2i_r10"] == 100.0
    assert metrics["rsum"] == 200.0
    assert metrics["i2t_medr"] == metrics["i2t_meanr"] == 16.0
    assert metrics["t2i_medr"] == metrics["t2i_meanr"] == 4.0


def test_a_single_tie_with_the_positive_costs_a_rank():
    sims = torch.eye(3)
    sims[0, 1] = 1.0  # image 0 scores caption 1 as high as its own caption 0
    metrics = retrieval_recall(sims, captions_per_image=1)
    assert metrics["i2t_r1"] == pytest.approx(200 / 3)  # image 0 ranks its caption 2nd
    assert metrics["t2i_r1"] == pytest.approx(200 / 3)  # caption 1 ranks its image 2nd


def test_rsum_is_the_sum_of_the_six_recalls():
    generator = torch.Generator().manual_seed(3)
    metrics = retrieval_recall(torch.randn(20, 100, generator=generator))
    recalls = [metrics[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in KS]
    assert metrics["rsum"] == pytest.approx(sum(recalls))


@pytest.mark.parametrize("shape, captions_per_image", [((4, 19), 5), ((4, 20), 4), ((4, 4), 5)])
def test_wrong_shape_raises(shape, captions_per_image):
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        retrieval_recall(torch.zeros(shape), captions_per_image=captions_per_image)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(split="test", metric="rsum"), "test/rsum"),
        (dict(split="val", metric="i2t_r1"), "val/i2t_r1"),
        (dict(split="test", metric="rsum", protocol="coco1k"), "test/coco1k/rsum"),
        (dict(split="test", metric="t2i_r5", level=2), "test/level2/t2i_r5"),
        (dict(split="test", metric="rsum", protocol="coco5k", level=0), "test/coco5k/level0/rsum"),
        (dict(split="test", metric="rsum", level=2, row="model"), "test/model2/rsum"),  # an ensemble's member
    ],
)
def test_metric_names(kwargs, name):
    assert metric_name(**kwargs) == name


def test_prefixed_renames_every_key_and_keeps_values():
    metrics = {"rsum": 512.5, "i2t_r1": 80.0}
    assert prefixed(metrics, "test", protocol="coco1k", level=2) == {
        "test/coco1k/level2/rsum": 512.5,
        "test/coco1k/level2/i2t_r1": 80.0,
    }
    assert prefixed(metrics, "val") == {"val/rsum": 512.5, "val/i2t_r1": 80.0}


def test_recall_curve_matches_recall_at_k():
    torch.manual_seed(0)
    sims = torch.randn(20, 100)
    i2t_rank, t2i_rank = retrieval_ranks(sims, 5)
    metrics = retrieval_recall(sims, 5)
    for name, ranks in (("i2t", i2t_rank), ("t2i", t2i_rank)):
        curve = recall_curve(ranks, 30)
        assert len(curve) == 30
        assert [curve[k - 1] for k in (1, 5, 10)] == pytest.approx([metrics[f"{name}_r{k}"] for k in (1, 5, 10)])
        assert all(a <= b for a, b in zip(curve, curve[1:]))
    assert recall_curve(torch.tensor([1, 3, 200]), 3) == pytest.approx([100 / 3, 100 / 3, 200 / 3])


def test_nan_scores_of_a_diverged_model_never_count_as_hits():
    assert retrieval_recall(torch.full((20, 100), float("nan")))["rsum"] == 0.0
    perfect = torch.eye(20).repeat_interleave(5, dim=1)
    perfect[3] = float("nan")  # one image's scores
    perfect[:, 50] = float("nan")  # one caption's scores
    i2t, t2i = retrieval_ranks(perfect)
    assert i2t[3] > 10 and t2i[50] > 10
    assert (i2t[torch.arange(20) != 3] == 1).all()
    assert retrieval_recall(perfect)["i2t_r10"] == pytest.approx(95.0)
