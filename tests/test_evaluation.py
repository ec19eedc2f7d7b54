"""Recall tables per level and fused, and the fold protocols of COCO (1K folds and 5K)."""

from __future__ import annotations

import pytest
import torch

from hat.engine.evaluation import fold_mean_table, protocol_tables, recall_table
from hat.metrics import retrieval_recall


def _level_sims(num_images: int, levels: int = 2, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(num_images, 5 * num_images, generator=generator) for _ in range(levels)]


def test_table_has_each_level_alone_and_their_sum_as_fused():
    sims = _level_sims(12)
    table = recall_table(sims, "test", 5)
    assert table["test/level1/rsum"] == pytest.approx(retrieval_recall(sims[0])["rsum"])
    assert table["test/level2/t2i_r5"] == pytest.approx(retrieval_recall(sims[1])["t2i_r5"])
    assert table["test/rsum"] == pytest.approx(retrieval_recall(sims[0] + sims[1])["rsum"])


def test_coco1k_is_the_mean_of_five_folds_evaluated_separately():
    sims = _level_sims(25)
    fused = sims[0] + sims[1]
    per_fold = [retrieval_recall(fused[f * 5 : (f + 1) * 5, f * 25 : (f + 1) * 25]) for f in range(5)]
    table = fold_mean_table(sims, "test", 5, "coco1k", folds=5)
    for key in ("i2t_r1", "t2i_r10", "rsum", "i2t_medr", "t2i_meanr"):
        assert table[f"test/coco1k/{key}"] == pytest.approx(sum(m[key] for m in per_fold) / 5)
    level2 = [retrieval_recall(sims[1][f * 5 : (f + 1) * 5, f * 25 : (f + 1) * 25])["i2t_r5"] for f in range(5)]
    assert table["test/coco1k/level2/i2t_r5"] == pytest.approx(sum(level2) / 5)


def test_coco_protocols_report_1k_folds_and_5k_side_by_side():
    sims = _level_sims(10)
    table = protocol_tables(sims, "test", 5, {"coco1k": 5, "coco5k": 1})
    whole = recall_table(sims, "test", 5)
    assert table["test/coco5k/rsum"] == pytest.approx(whole["test/rsum"])
    assert "test/coco1k/level1/rsum" in table and "test/rsum" not in table


def test_folds_must_divide_the_images():
    with pytest.raises(ValueError, match=r"'coco1k' needs 5 equal folds, but the split has 12 images"):
        fold_mean_table(_level_sims(12), "test", 5, "coco1k", folds=5)


class _Scorer:
    """What level_similarities needs of a HATModel: its scoring of encoded features."""

    def level_similarities(self, images, captions, lengths, kernel="auto"):
        from hat.alignment import multi_level_similarity

        return multi_level_similarity(images, captions, lengths, kernel=kernel)


def test_streaming_images_in_blocks_gives_the_same_scores():
    from omegaconf import OmegaConf

    from hat.engine.evaluation import EncodedSplit, level_similarities
    from hat.runtime import resolve_runtime

    torch.manual_seed(0)
    encoded = EncodedSplit(
        images=[torch.randn(7, r, 16).half() for r in (9, 4)],
        captions=[torch.randn(35, 6, 16).half() for _ in range(2)],
        lengths=torch.randint(1, 7, (35,)),
    )
    runtime = resolve_runtime(OmegaConf.create(
        {"device": "cpu", "precision": "fp32", "num_workers": 0, "pin_memory": False, "compile": False}
    ))
    whole = level_similarities(_Scorer(), encoded, runtime)
    streamed = level_similarities(_Scorer(), encoded, runtime, stream_images=3)
    for a, b in zip(whole, streamed):
        assert a.shape == (7, 35)
        torch.testing.assert_close(a, b)


def test_features_go_to_host_memory_when_they_do_not_fit_the_device_budget(caplog):
    from hat.engine.distributed import Distributed
    from hat.engine.evaluation import _feature_storage

    gpu = torch.device("cuda")  # only named: a budget is given, so nothing asks the GPU
    first_batch = [torch.zeros(4, 784, 768), torch.zeros(4, 196, 768), torch.zeros(4, 49, 768)]
    words = 5 * 32
    needed = 5000 * (784 + 196 + 49 + 3 * words) * 768 * 2  # COCO 5K: 11.6 GB in float16
    assert _feature_storage(first_batch, 5000, words, gpu, needed, Distributed()) == gpu
    assert _feature_storage(first_batch, 5000, words, gpu, needed - 1, Distributed()) == torch.device("cpu")
    two_processes = Distributed(rank=0, world_size=2, local_rank=0)
    assert _feature_storage(first_batch, 5000, words, gpu, needed - 1, two_processes) == gpu
    assert "stay on cuda" in caplog.text
