"""Recall@K and rank statistics for image-text retrieval (docs/evaluation.md), and metric names."""

from __future__ import annotations

import math

import torch

RECALL_KS = (1, 5, 10)
RECALL_KEYS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")  # higher is better
RANK_KEYS = ("i2t_medr", "i2t_meanr", "t2i_medr", "t2i_meanr")  # lower is better
METRIC_KEYS = RECALL_KEYS + RANK_KEYS


def retrieval_recall(sims: torch.Tensor, captions_per_image: int = 5) -> dict[str, float]:
    """Recall@1/5/10 both ways, their sum, and median/mean ranks.

    Args:
        sims: ``(N, K * N)`` scores of every image against every caption, where caption ``c``
            belongs to image ``c // captions_per_image``.
        captions_per_image: ``K``.

    Returns:
        A flat dict of floats with the keys of :data:`METRIC_KEYS`. Recalls are percentages.
        i2t: an image is a hit at K when any of its captions ranks in its top K (a hit rate).
        t2i: a caption is a hit at K when its image ranks in its top K. Ranks are 1-based; the median
        follows SCAN/VSE++ (``floor(median of 0-based ranks) + 1``);
        ties count against the query (an item scoring equal to the positive ranks above it), so
        a model that scores everything alike gets chance-level or worse recall, never 100%.
        A NaN score (a diverged model) counts as the lowest possible score, so it never earns a hit.
    """
    i2t_rank, t2i_rank = retrieval_ranks(sims, captions_per_image)
    metrics = {}
    for name, ranks in (("i2t", i2t_rank), ("t2i", t2i_rank)):
        for k in RECALL_KS:
            metrics[f"{name}_r{k}"] = 100.0 * (ranks <= k).double().mean().item()
    metrics["rsum"] = sum(metrics[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in RECALL_KS)
    for name, ranks in (("i2t", i2t_rank), ("t2i", t2i_rank)):
        # SCAN/VSE++ convention: floor of the median 0-based rank (averaging the middle two), + 1.
        metrics[f"{name}_medr"] = math.floor(torch.quantile((ranks - 1).double(), 0.5).item()) + 1.0
        metrics[f"{name}_meanr"] = ranks.double().mean().item()
    return metrics


def retrieval_ranks(sims: torch.Tensor, captions_per_image: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """1-based ranks of the first correct item: ``(N,)`` for image queries, ``(K * N,)`` for caption
    queries, with the conventions of :func:`retrieval_recall` (ties count against the query)."""
    num_images, num_captions = sims.shape
    if num_captions != num_images * captions_per_image:
        raise ValueError(
            f"sims must be (N, {captions_per_image} * N) with caption c belonging to image "
            f"c // {captions_per_image}; got {tuple(sims.shape)}"
        )
    sims = sims.float().nan_to_num(nan=-torch.inf)  # NaN compares false: it would rank above everything
    owner = torch.arange(num_captions, device=sims.device) // captions_per_image

    # i2t: the rank of the best-ranked of each image's own captions among the other captions.
    captions = torch.arange(num_captions, device=sims.device)
    is_own = owner[None, :] == torch.arange(num_images, device=sims.device)[:, None]  # (N, K * N)
    best_own = sims.masked_fill(~is_own, -torch.inf).max(dim=1).values
    i2t_rank = ((sims >= best_own[:, None]) & ~is_own).sum(dim=1) + 1

    # t2i: the rank of each caption's image among the other images.
    positive = sims[owner, captions]  # (K * N,)
    t2i_rank = (sims >= positive[None, :]).sum(dim=0)  # counts the caption's own image once
    return i2t_rank, t2i_rank


def recall_curve(ranks: torch.Tensor, max_k: int) -> list[float]:
    """Recall@K in percent for K = 1 .. ``max_k`` from the 1-based ``ranks`` of some queries."""
    counts = torch.bincount(ranks.clamp(max=max_k + 1).long() - 1, minlength=max_k + 1)[:max_k]
    return (100.0 * counts.cumsum(0).double() / ranks.numel()).tolist()


def metric_name(
    split: str, metric: str, protocol: str | None = None, level: int | None = None, row: str = "level"
) -> str:
    """``{split}[/{protocol}][/{row}{k}]/{metric}``, e.g. ``test/coco1k/level2/rsum``; ``row="model"``
    names the members of an ensemble (``test/model1/rsum``: member 1's fused scores)."""
    parts = [split]
    if protocol:
        parts.append(protocol)
    if level is not None:
        parts.append(f"{row}{level}")
    parts.append(metric)
    return "/".join(parts)


def prefixed(
    metrics: dict[str, float], split: str, protocol: str | None = None, level: int | None = None, row: str = "level"
) -> dict[str, float]:
    """``metrics`` with every key turned into its full name by :func:`metric_name`."""
    return {metric_name(split, key, protocol, level, row): value for key, value in metrics.items()}
