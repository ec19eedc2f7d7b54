"""The running top-k of search: the same results as sorting everything at once, in any block sizes."""

from __future__ import annotations

import pytest
import torch

from hat.search.ranking import TopK


@pytest.mark.parametrize("block", [1, 3, 7, 50])
def test_top_k_over_blocks_equals_one_sort(block):
    generator = torch.Generator().manual_seed(0)
    fused = torch.randn(4, 50, generator=generator)  # 4 queries, 50 candidates
    levels = torch.randn(4, 50, 3, generator=generator)
    names = [f"item{i}" for i in range(50)]
    best = TopK(queries=4, k=5)
    for start in range(0, 50, block):
        best.add(names[start : start + block], fused[:, start : start + block], levels[:, start : start + block])
    assert best.fused.shape == (4, 5) and best.levels.shape == (4, 5, 3)  # never more than k kept
    expected = fused.topk(5, dim=1)
    for query, hits in enumerate(best.hits()):
        assert [hit.item for hit in hits] == [names[i] for i in expected.indices[query].tolist()]
        assert [hit.score for hit in hits] == pytest.approx(expected.values[query].tolist())
        level_scores = torch.tensor([hit.level_scores for hit in hits])
        torch.testing.assert_close(level_scores, levels[query, expected.indices[query]])


def test_fewer_candidates_than_k_keeps_them_all_in_order():
    best = TopK(queries=1, k=10)
    best.add(["a", "b", "c"], torch.tensor([[0.1, 0.9, 0.5]]), torch.zeros(1, 3, 2))
    assert [hit.item for hit in best.hits()[0]] == ["b", "c", "a"]
