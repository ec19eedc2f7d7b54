"""Example queries for the validation tables: which items come first, and the rank of the right one."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from hat.data.records import CaptionedImages, ImageRecord
from hat.metrics import retrieval_recall
from hat.retrieval_examples import retrieval_examples, sample_indices


def _split(num_images: int, per_image: int = 2) -> CaptionedImages:
    records = [
        ImageRecord(key=str(i), captions=tuple(f"image {i} caption {k}" for k in range(per_image)))
        for i in range(num_images)
    ]
    return CaptionedImages(
        "val", records, per_image, lambda record: Image.new("RGB", (64, 32), (int(record.key), 0, 0))
    )


def test_sample_is_spread_and_stable():
    assert sample_indices(4, 10) == [0, 3, 6, 9]
    assert sample_indices(8, 3) == [0, 1, 2]
    assert sample_indices(0, 10) == []


def test_top_results_and_first_correct_ranks():
    split = _split(4)
    sims = torch.zeros(4, 8)
    sims[0] = torch.tensor([0.1, 0.2, 0.9, 0.8, 0.0, 0.0, 0.0, 0.0])  # image 0: captions of image 1 first
    sims[1, 2] = 1.0  # image 1 ranks its own caption 2 first
    sims[2, 4] = sims[3, 6] = 1.0
    examples = retrieval_examples(sims, split, queries=2, top_k=3, curve_max_k=8)

    first = examples.image_queries[0]
    assert first.image == 0
    assert first.top_captions == ["image 1 caption 0", "image 1 caption 1", "image 0 caption 1"]
    assert first.top_correct == [False, False, True]
    assert first.first_correct_rank == 3

    assert [q.image for q in examples.image_queries] == [0, 3]
    assert examples.image_queries[1].first_correct_rank == 1
    caption_query = examples.caption_queries[0]  # caption 0 of image 0, scored 0.1 by image 0
    assert caption_query.caption == "image 0 caption 0" and caption_query.image == 0
    assert caption_query.top_images[0] == 0 and caption_query.top_correct[0]
    assert examples.caption_queries[1].caption == "image 3 caption 1"  # the next caption slot

    metrics = retrieval_recall(sims, 2)
    assert examples.i2t_curve[0] == pytest.approx(metrics["i2t_r1"])
    assert examples.t2i_curve[4] == pytest.approx(metrics["t2i_r5"])
    assert len(examples.i2t_curve) == 8


def test_thumbnails_fit_the_size():
    examples = retrieval_examples(torch.eye(3).repeat_interleave(2, dim=1), _split(3), 3, 2, 4)
    thumb = examples.thumbnail(2, 16)
    assert thumb.size == (16, 8) and thumb.getpixel((0, 0)) == (2, 0, 0)
