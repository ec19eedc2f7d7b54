"""Rank a folder's images for text queries, or the lines of a text file for one image, in blocks.

Only one block is in memory at a time (a cache shard of images, or ``batch_size`` lines), plus
the best ``top_k`` so far of each query.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from hat.retriever import ImageFeatures, Retriever, TextFeatures


@dataclass(frozen=True)
class Hit:
    """A result: what was found (an image's relative path or a line of text), its fused score and
    its score at each level."""

    item: str
    score: float
    level_scores: list[float]


class TopK:
    """The ``k`` best of a stream of scored candidates, for each of ``queries`` queries."""

    def __init__(self, queries: int, k: int) -> None:
        self.k = k
        self.items: list[list[str]] = [[] for _ in range(queries)]
        self.fused = torch.empty((queries, 0))
        self.levels = torch.empty((queries, 0, 0))

    def add(self, items: list[str], fused: torch.Tensor, levels: torch.Tensor) -> None:
        """Candidates ``items`` with ``(Q, n)`` fused scores and ``(Q, n, L)`` level scores."""
        fused = torch.cat([self.fused, fused.float().cpu()], dim=1)
        levels = torch.cat([self.levels.reshape(len(self.items), -1, levels.shape[2]), levels.float().cpu()], dim=1)
        best = fused.topk(min(self.k, fused.shape[1]), dim=1).indices  # (Q, k), best first
        pool = [known + items for known in self.items]
        self.items = [[pool[q][i] for i in best[q].tolist()] for q in range(len(pool))]
        self.fused = fused.gather(1, best)
        self.levels = levels.gather(1, best[:, :, None].expand(-1, -1, levels.shape[2]))

    def hits(self) -> list[list[Hit]]:
        """Each query's results, best first."""
        return [
            [Hit(item, float(self.fused[q, i]), self.levels[q, i].tolist()) for i, item in enumerate(items)]
            for q, items in enumerate(self.items)
        ]


def rank_images(
    retriever: Retriever, blocks: Iterable[tuple[list[str], ImageFeatures]], queries: TextFeatures, top_k: int
) -> list[list[Hit]]:
    """The ``top_k`` images of each query, from ``blocks`` of (image names, features)."""
    best = TopK(len(queries), top_k)
    for names, features in blocks:
        scores = retriever.score(features, queries)
        best.add(names, scores.fused.T, torch.stack(scores.levels, dim=2).transpose(0, 1))
    return best.hits()


def rank_texts(
    retriever: Retriever, image: ImageFeatures, lines: list[str], top_k: int, batch_size: int = 256
) -> list[Hit]:
    """The ``top_k`` of ``lines`` for one encoded image, encoding ``batch_size`` lines at a time."""
    best = TopK(1, top_k)
    for start in range(0, len(lines), batch_size):
        chunk = lines[start : start + batch_size]
        scores = retriever.score(image, retriever.encode_texts(chunk))
        best.add(chunk, scores.fused, torch.stack(scores.levels, dim=2))
    return best.hits()[0]
