"""Several models on one split (``python evaluate.py checkpoints=[A,B]``): the members' fused scores averaged.

Member ``m``'s fused scores are the sum of its levels (all of them, or the ``eval.levels``
positions), as :func:`hat.alignment.fuse_levels` gives them; the ensemble scores each pair by
the mean of the members' fused scores. It is ranked by their sum, which orders every pair as
the mean does and is not rounded by a division, so an ensemble of a model with itself ranks
exactly as the model. Metrics: ``{split}[/{protocol}]/model{m}/{metric}`` for member ``m``
alone, and the ensemble under the plain names (``test/rsum``), which ``hat.report`` reads. The
members must score the same images and captions (:func:`check_same_split`); each may have its
own levels (an i2t model with a t2i one, say).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hat.alignment import fuse_levels
from hat.checks import ConfigError
from hat.data.records import CaptionedImages


def check_fused_levels(levels, trained_levels: Sequence[int], owner: str) -> list[int] | None:
    """``eval.levels`` as a sorted list of distinct 1-based positions among ``trained_levels``
    (None: all of them); ``owner`` says whose levels they are in the error (``the trained levels
    of checkpoints[1]=PATH``)."""
    if levels is None:
        return None
    levels = list(levels)
    count = len(trained_levels)
    if not levels or len(set(levels)) != len(levels) or any(not 1 <= k <= count for k in levels):
        raise ConfigError(
            f"eval.levels={levels} must list distinct positions 1..{count} of {owner} "
            f"(alignment.levels={list(trained_levels)}), e.g. eval.levels=[{count}]"
        )
    return sorted(levels)


def check_same_split(first: CaptionedImages, other: CaptionedImages, first_name: str, other_name: str) -> None:
    """Raise a :class:`ConfigError` naming ``other_name`` unless ``other`` holds the images (by
    key) and captions of ``first``, in the same order."""
    def described(split: CaptionedImages) -> str:
        return f"{len(split)} images x {split.captions_per_image} captions"

    if len(first) != len(other) or first.captions_per_image != other.captions_per_image:
        difference = f"{described(other)} against {described(first)}"
    else:
        index = next((i for i, (a, b) in enumerate(zip(first.records, other.records))
                      if (a.key, a.captions) != (b.key, b.captions)), None)
        if index is None:
            return
        difference = f"image {index} is {other.records[index].key!r} against {first.records[index].key!r}"
        if other.records[index].key == first.records[index].key:
            difference = f"the captions of image {index} ({first.records[index].key!r}) differ"
    raise ConfigError(
        f"{other_name} is evaluated on another {first.name} split than {first_name} ({difference}): the "
        f"members of an ensemble must score the same images and captions. Their datasets come from "
        f"their stored configs (a generated one also from their seed); give one to all with dataset=NAME "
        f"dataset.root=PATH"
    )


def report_rows(
    members: Sequence[Sequence[torch.Tensor]], fused_levels: Sequence[int] | None
) -> tuple[list[torch.Tensor], list[int] | None, str]:
    """What a table reports of ``members`` (per model, its ``(N, K * N)`` level scores), as the
    arguments ``sims, fused_levels, row`` of :func:`hat.engine.test_report.report_scores`: one
    model's levels, ``fused_levels`` of them fused; or each member's fused scores (``row="model"``),
    all of them fused into the ensemble's."""
    if len(members) == 1:
        return list(members[0]), fused_levels, "level"
    return [fuse_levels(levels, fused_levels) for levels in members], None, "model"
