"""hat.engine.ensemble: members' fused scores averaged, their levels and splits checked."""

from __future__ import annotations

import pytest
import torch

from hat.alignment import fuse_levels
from hat.checks import ConfigError
from hat.data.records import CaptionedImages, ImageRecord
from hat.engine.ensemble import check_fused_levels, check_same_split, report_rows
from hat.engine.evaluation import protocol_tables
from hat.metrics import retrieval_recall


def _levels(count: int, seed: int, images: int = 10) -> list[torch.Tensor]:
    """``count`` random (N, 5 N) level scores, rounded so that ties occur (they count against the query)."""
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(images, 5 * images, generator=generator) * 4).round() for _ in range(count)]


def _table(members, fused_levels=None, protocols=None):
    sims, fused, row = report_rows(members, fused_levels)
    return protocol_tables(sims, "test", 5, protocols, fused, row)


@pytest.mark.parametrize("fused_levels, protocols", [(None, None), ([2, 3], {"coco1k": 2, "coco5k": 1})])
def test_an_ensemble_of_a_model_with_itself_ranks_as_the_model(fused_levels, protocols):
    model = _levels(3, seed=0)
    alone = _table([model], fused_levels, protocols)
    ensemble = _table([model, model], fused_levels, protocols)
    fused_names = [name for name in alone if "/level" not in name]
    assert {name: ensemble[name] for name in fused_names} == {name: alone[name] for name in fused_names}
    for member in ("model1", "model2"):
        for name in fused_names:
            prefix, metric = name.rsplit("/", 1)
            assert ensemble[f"{prefix}/{member}/{metric}"] == alone[name]
    assert not any("/level" in name for name in ensemble)


def test_the_ensemble_ranks_by_the_mean_of_the_members_fused_scores():
    """Members with different numbers of levels (an i2t model with three, a t2i model with one)."""
    i2t, t2i = _levels(3, seed=1), _levels(1, seed=2)
    table = _table([i2t, t2i])
    mean = (fuse_levels(i2t) + fuse_levels(t2i)) / 2
    assert {k: table[f"test/{k}"] for k in retrieval_recall(mean)} == retrieval_recall(mean)
    assert table["test/model1/rsum"] == retrieval_recall(fuse_levels(i2t))["rsum"]
    assert table["test/model2/rsum"] == retrieval_recall(t2i[0])["rsum"]


def test_one_model_reports_its_levels():
    model = _levels(3, seed=3)
    assert report_rows([model], [1, 3]) == (model, [1, 3], "level")


@pytest.mark.parametrize("levels", [[4], [0], [2, 2], []])
def test_fused_levels_are_positions_of_the_owners_levels(levels):
    owner = r"the trained levels of checkpoints\[1\]=b\.pt \(alignment\.levels=\[4, 10, 12\]\)"
    with pytest.raises(ConfigError, match=r"eval\.levels=.* positions 1\.\.3 of " + owner):
        check_fused_levels(levels, [4, 10, 12], "the trained levels of checkpoints[1]=b.pt")


def test_fused_levels_are_sorted_and_none_means_all():
    assert check_fused_levels([3, 1], [4, 10, 12], "x") == [1, 3]
    assert check_fused_levels(None, [4, 10, 12], "x") is None


def _split(captions: list[list[str]], keys=None) -> CaptionedImages:
    keys = keys or [f"image{i}" for i in range(len(captions))]
    records = [ImageRecord(key, tuple(texts)) for key, texts in zip(keys, captions)]
    return CaptionedImages("test", records, len(captions[0]), load_image=lambda record: None)


def test_members_must_score_the_same_images_and_captions():
    first = _split([["a red circle", "a circle"], ["a blue square", "a square"]])
    check_same_split(first, _split([["a red circle", "a circle"], ["a blue square", "a square"]]), "A", "B")
    cases = {
        r"2 images x 1 captions against 2 images x 2 captions": _split([["a red circle"], ["a blue square"]]),
        r"the captions of image 1 \('image1'\) differ": _split([["a red circle", "a circle"], ["a square", "blue"]]),
        r"image 0 is 'other' against 'image0'": _split([["a red circle", "a circle"], ["a blue square", "a square"]],
                                                       keys=["other", "image1"]),
    }
    for difference, other in cases.items():
        with pytest.raises(ConfigError, match=r"checkpoints\[1\]=b\.pt is evaluated on another test split than "
                                              r"checkpoints\[0\]=a\.pt \(" + difference + r"\).*dataset=NAME"):
            check_same_split(first, other, "checkpoints[0]=a.pt", "checkpoints[1]=b.pt")
