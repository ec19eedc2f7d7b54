"""What a validation retrieved for a fixed sample of queries, and the recall@K curve: the material
of the example tables a tracker shows next to the numbers."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from hat.data.records import CaptionedImages
from hat.metrics import recall_curve, retrieval_ranks


@dataclass(frozen=True)
class ImageQuery:
    """An image query: the image's index in the split, the captions ranked first, which of them
    belong to the image, and the 1-based rank of the first one that does."""

    image: int
    top_captions: list[str]
    top_correct: list[bool]
    first_correct_rank: int


@dataclass(frozen=True)
class CaptionQuery:
    """A caption query: its text and image, the image indices ranked first, which of them is the
    caption's image, and the 1-based rank of that image."""

    caption: str
    image: int
    top_images: list[int]
    top_correct: list[bool]
    first_correct_rank: int


@dataclass(frozen=True)
class RetrievalExamples:
    """Example queries of one evaluation and recall@K for K = 1 .. len(curve) both ways (percent)."""

    split: CaptionedImages
    image_queries: list[ImageQuery]
    caption_queries: list[CaptionQuery]
    i2t_curve: list[float]
    t2i_curve: list[float]

    def thumbnail(self, image: int, size: int) -> Image.Image:
        """Image ``image`` of the split, shrunk to fit ``size`` x ``size`` pixels."""
        picture = self.split.load_image(self.split.records[image]).copy()
        picture.thumbnail((size, size))
        return picture


def sample_indices(count: int, total: int) -> list[int]:
    """``count`` indices spread evenly over ``range(total)``; the same for every call, so a table
    follows the same queries from one validation to the next."""
    count = min(count, total)
    if count <= 0:
        return []
    return torch.linspace(0, total - 1, count).round().long().tolist()


def retrieval_examples(
    sims: torch.Tensor, split: CaptionedImages, queries: int, top_k: int, curve_max_k: int
) -> RetrievalExamples:
    """Examples from the ``(N, K * N)`` fused scores of ``split``: ``queries`` image queries (evenly
    spaced images) and as many caption queries (one caption of each of those images, cycling through
    the caption slots), each with its ``top_k`` results; the curve covers K = 1 .. ``curve_max_k``."""
    per_image = split.captions_per_image
    sims = sims.float().cpu()
    i2t_rank, t2i_rank = retrieval_ranks(sims, per_image)
    captions = split.captions()
    images = sample_indices(queries, sims.shape[0])
    image_queries = []
    for image in images:
        top = sims[image].topk(min(top_k, sims.shape[1])).indices.tolist()
        image_queries.append(
            ImageQuery(
                image=image,
                top_captions=[captions[c] for c in top],
                top_correct=[c // per_image == image for c in top],
                first_correct_rank=int(i2t_rank[image]),
            )
        )
    caption_queries = []
    for slot, image in enumerate(images):
        caption = image * per_image + slot % per_image
        top = sims[:, caption].topk(min(top_k, sims.shape[0])).indices.tolist()
        caption_queries.append(
            CaptionQuery(
                caption=captions[caption],
                image=image,
                top_images=top,
                top_correct=[i == image for i in top],
                first_correct_rank=int(t2i_rank[caption]),
            )
        )
    return RetrievalExamples(
        split=split,
        image_queries=image_queries,
        caption_queries=caption_queries,
        i2t_curve=recall_curve(i2t_rank, curve_max_k),
        t2i_curve=recall_curve(t2i_rank, curve_max_k),
    )
