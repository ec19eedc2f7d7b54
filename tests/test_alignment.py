"""SCAN stacked cross attention (hat.alignment) against a per-pair reference from docs/model.md.

Covers: agreement with a plain float64 per-pair implementation for both directions, ragged
caption lengths and several block sizes; padding that holds anything (large values, NaN);
float64 gradcheck; bf16 autocast; the per-level helper; argument errors; and two semantic
checks (the directions differ, matched image/caption pairs win retrieval).
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from hat.alignment import GPU_BLOCK_ELEMENTS, multi_level_similarity, pair_attention, scan_similarity

DIRECTIONS = ("i2t", "t2i")
SMOOTH = 9.0


def reference_pair(region_feats: torch.Tensor, word_feats: torch.Tensor, direction: str, smooth: float) -> torch.Tensor:
    """The equations of docs/model.md for one image ``(R, d)`` and one caption's valid words ``(L, d)``, in float64."""
    v, t = region_feats.double(), word_feats.double()
    if direction == "i2t":
        attn = F.leaky_relu(t @ v.T, 0.1)  # (L, R): word w against region r
        attn = attn / (attn.norm(dim=1, keepdim=True) + 1e-8)  # unit norm over regions, per word
        weights = torch.softmax(smooth * attn.T, dim=1)  # (R, L): softmax over words, per region
        queries, context = v, weights @ t  # context c_r = sum_w P[r, w] T_w
    else:
        attn = F.leaky_relu(v @ t.T, 0.1)  # (R, L): region r against word w
        attn = attn / (attn.norm(dim=1, keepdim=True) + 1e-8)  # unit norm over words, per region
        weights = torch.softmax(smooth * attn.T, dim=1)  # (L, R): softmax over regions, per word
        queries, context = t, weights @ v  # context c_w = sum_r P[w, r] V_r
    dots = (queries * context).sum(dim=1)
    cosine = dots / (queries.norm(dim=1) * context.norm(dim=1)).clamp_min(1e-8)
    return cosine.mean()  # over regions (i2t) or valid words (t2i)


def reference_similarity(images, captions, lengths, direction, smooth=SMOOTH) -> torch.Tensor:
    """``(I, C)`` float64 scores by explicit loops over images and captions."""
    scores = torch.empty(images.shape[0], captions.shape[0], dtype=torch.float64)
    for i in range(images.shape[0]):
        for c in range(captions.shape[0]):
            scores[i, c] = reference_pair(images[i], captions[c, : int(lengths[c])], direction, smooth)
    return scores


def random_features(num_images=3, num_captions=4, regions=5, width=6, dim=8, dtype=torch.float32, seed=0):
    """Random images ``(I, R, d)`` and zero-padded captions ``(C, W, d)`` with ragged lengths."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(num_images, regions, dim, generator=generator, dtype=dtype)
    captions = torch.randn(num_captions, width, dim, generator=generator, dtype=dtype)
    lengths = torch.tensor([1, width, 3, 4, 2, 5][:num_captions])
    return images, pad_with(captions, lengths, 0.0), lengths


def pad_with(captions: torch.Tensor, lengths: torch.Tensor, fill) -> torch.Tensor:
    """``captions`` with every position at or past its caption's length replaced by ``fill``."""
    padding = torch.arange(captions.shape[1])[None, :] >= lengths[:, None]
    fill = torch.as_tensor(fill, dtype=captions.dtype).expand_as(captions)
    return torch.where(padding[:, :, None], fill, captions)


@pytest.mark.parametrize("block_elements", [1, 90, 270, None, GPU_BLOCK_ELEMENTS])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_matches_per_pair_reference_for_ragged_lengths_and_any_block_size(direction, block_elements):
    # R * W = 30 entries per pair: 90 gives 1 x 3 blocks (ragged over 4 captions), 270 gives
    # 2 x 4 blocks (ragged over 3 images), 1 gives one pair per block.
    images, captions, lengths = random_features()
    scores = scan_similarity(images, captions, lengths, direction, SMOOTH, block_elements)
    assert scores.dtype == torch.float32
    assert scores.shape == (3, 4)
    expected = reference_similarity(images, captions, lengths, direction)
    torch.testing.assert_close(scores.double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_smooth_is_the_softmax_inverse_temperature(direction):
    images, captions, lengths = random_features(seed=1)
    scores = scan_similarity(images, captions, lengths, direction, smooth=2.5)
    expected = reference_similarity(images, captions, lengths, direction, smooth=2.5)
    torch.testing.assert_close(scores.double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_near_zero_features_clamp_the_product_of_norms(direction):
    # A region and a word of norm ~1e-9: |query| * |context| falls below 1e-8, and the cosine
    # divides by 1e-8 (the product clamped), not by max(|query|, 1e-8) * |context|.
    images, captions, lengths = random_features(seed=8)
    images[:, 0] *= 1e-9
    captions[:, 0] *= 1e-9
    scores = scan_similarity(images, captions, lengths, direction)
    expected = reference_similarity(images, captions, lengths, direction)
    torch.testing.assert_close(scores.double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fill", ["large", "nan"])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_padding_is_ignored_whatever_it_holds(direction, fill):
    images, captions, lengths = random_features(seed=2)
    generator = torch.Generator().manual_seed(20)
    junk = 1e4 * torch.randn(captions.shape, generator=generator) if fill == "large" else float("nan")
    padded = pad_with(captions, lengths, junk).requires_grad_(True)
    images = images.requires_grad_(True)

    scores = scan_similarity(images, padded, lengths, direction)
    torch.testing.assert_close(scores, scan_similarity(images, captions, lengths, direction))

    scores.sum().backward()
    assert torch.isfinite(images.grad).all()
    padding = torch.arange(captions.shape[1])[None, :] >= lengths[:, None]
    assert torch.isfinite(padded.grad).all()
    assert (padded.grad[padding] == 0).all()


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_gradcheck_in_float64(direction):
    images, captions, lengths = random_features(2, 3, regions=3, width=4, dim=5, dtype=torch.float64, seed=3)
    images.requires_grad_(True)
    captions.requires_grad_(True)
    assert lengths.tolist() == [1, 4, 3]
    assert torch.autograd.gradcheck(
        lambda v, t: scan_similarity(v, t, lengths, direction), (images, captions)
    )


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_compiles_to_one_graph_that_batches_of_other_lengths_reuse(direction):
    """hardware.compile: similarity and loss trace whole (fullgraph: any graph break is an error),
    once for every batch of one width whatever its caption lengths, with eager's values and gradients.
    Gradients are compared through a fixed linear read-out of the scores: the hardest negative's
    choice flips between near-equal scores at float32 rounding, a real difference of neither path."""
    from torch._dynamo.utils import counters

    from hat.losses import HingeHardestLoss

    loss_fn = HingeHardestLoss(margin=0.2)
    readout = torch.randn(4, 4, generator=torch.Generator().manual_seed(7))

    def step(images, captions, lengths):
        scores = scan_similarity(images, captions, lengths, direction, SMOOTH, block_elements=90)
        return loss_fn(scores), (scores * readout).sum()

    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    for seed, lengths in enumerate(([1, 6, 3, 4], [6, 6, 2, 5], [2, 1, 1, 3])):
        generator = torch.Generator().manual_seed(seed)
        images, captions = torch.randn(4, 5, 8, generator=generator), torch.randn(4, 6, 8, generator=generator)
        lengths = torch.tensor(lengths)
        inputs = [images.requires_grad_(), pad_with(captions, lengths, float("nan")).requires_grad_()]
        loss, read = compiled(*inputs, lengths)
        expected_loss, expected_read = step(*inputs, lengths)
        torch.testing.assert_close(loss, expected_loss)
        for grad, want in zip(torch.autograd.grad(read, inputs), torch.autograd.grad(expected_read, inputs)):
            torch.testing.assert_close(grad, want)
    assert counters["stats"]["unique_graphs"] == 1


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_bf16_autocast_is_float32_finite_and_close_to_fp32(direction):
    images, captions, lengths = random_features(dim=16, seed=4)
    junk = 50.0 * torch.randn(captions.shape, generator=torch.Generator().manual_seed(40))
    captions = pad_with(captions, lengths, junk)
    images.requires_grad_(True)
    captions.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = scan_similarity(images, captions, lengths, direction)
    assert scores.dtype == torch.float32
    assert torch.isfinite(scores).all()

    scores.sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    assert torch.isfinite(captions.grad).all() and captions.grad.abs().sum() > 0

    full_precision = scan_similarity(images.detach(), captions.detach(), lengths, direction)
    torch.testing.assert_close(scores.detach(), full_precision, rtol=0.0, atol=0.05)


def test_multi_level_similarity_gives_one_matrix_per_level():
    generator = torch.Generator().manual_seed(5)
    lengths = torch.tensor([2, 6, 4])
    level_images = [torch.randn(2, regions, 8, generator=generator) for regions in (9, 4, 1)]
    level_captions = [pad_with(torch.randn(3, 6, 8, generator=generator), lengths, 0.0) for _ in range(3)]

    levels = multi_level_similarity(level_images, level_captions, lengths, "i2t")
    assert len(levels) == 3
    for scores, v, t in zip(levels, level_images, level_captions):
        torch.testing.assert_close(scores, scan_similarity(v, t, lengths, "i2t"))
    fused = torch.stack(levels).sum(dim=0)
    assert fused.shape == (2, 3)

    with pytest.raises(ValueError, match="3 image levels but 2 caption levels"):
        multi_level_similarity(level_images, level_captions[:2], lengths)


def test_unknown_direction_raises():
    images, captions, lengths = random_features()
    with pytest.raises(ValueError, match="'sideways'"):
        scan_similarity(images, captions, lengths, direction="sideways")


@pytest.mark.parametrize("smooth", [0.0, -1.0])
def test_non_positive_smooth_raises(smooth):
    images, captions, lengths = random_features()
    with pytest.raises(ValueError, match=re.escape(str(smooth))):
        scan_similarity(images, captions, lengths, smooth=smooth)


def test_mismatched_feature_dims_raise():
    images, captions, lengths = random_features()
    with pytest.raises(ValueError, match=re.escape("(3, 5, 7)")):
        scan_similarity(images[..., :7], captions, lengths)


@pytest.mark.parametrize("bad_lengths", [[0, 6, 3, 4], [1, 7, 3, 4]])
def test_caption_lengths_out_of_range_raise(bad_lengths):
    images, captions, _ = random_features()
    with pytest.raises(ValueError, match=re.escape(str(bad_lengths))):
        scan_similarity(images, captions, torch.tensor(bad_lengths))


def test_directions_give_different_scores():
    images, captions, lengths = random_features(seed=6)
    i2t = scan_similarity(images, captions, lengths, "i2t")
    t2i = scan_similarity(images, captions, lengths, "t2i")
    assert not torch.allclose(i2t, t2i, atol=1e-3)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_caption_made_of_the_image_regions_wins_retrieval(direction):
    # Caption c's valid words are image c's regions (shuffled), so pair (c, c) should beat every
    # other pair in its row and in its column.
    generator = torch.Generator().manual_seed(7)
    num_pairs, regions, width, dim = 5, 4, 6, 32
    images = torch.randn(num_pairs, regions, dim, generator=generator)
    captions = torch.randn(num_pairs, width, dim, generator=generator)
    for c in range(num_pairs):
        captions[c, :regions] = images[c, torch.randperm(regions, generator=generator)]
    lengths = torch.full((num_pairs,), regions)

    scores = scan_similarity(images, captions, lengths, direction)
    assert scores.argmax(dim=1).tolist() == list(range(num_pairs))
    assert scores.argmax(dim=0).tolist() == list(range(num_pairs))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("direction", ["i2t", "t2i"])
def test_cuda_bf16_autocast_matches_cpu_float32(direction):
    torch.manual_seed(0)
    images, captions = torch.randn(6, 49, 64), torch.randn(10, 12, 64)
    lengths = torch.randint(1, 13, (10,))
    expected = scan_similarity(images, captions, lengths, direction)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got = scan_similarity(images.cuda(), captions.cuda(), lengths.cuda(), direction)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.cpu(), expected, rtol=0.0, atol=0.05)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_pair_attention_rows_sum_to_one_and_rebuild_the_score(direction):
    images, captions, lengths = random_features(num_images=1, num_captions=3, regions=9, width=6, dim=8)
    scores = scan_similarity(images, captions, lengths, direction, SMOOTH, kernel="torch")
    for c in range(3):
        length = int(lengths[c])
        attention = pair_attention(images[0], captions[c], length, direction, SMOOTH)
        assert attention.t2i.shape == (length, 9) and attention.i2t.shape == (9, length)
        torch.testing.assert_close(attention.t2i.sum(dim=1), torch.ones(length))  # each word over the regions
        torch.testing.assert_close(attention.i2t.sum(dim=1), torch.ones(9))  # each region over the words
        assert attention.score == pytest.approx(float(scores[0, c]), abs=1e-6)
        # The score of the model's direction, rebuilt from these weights alone: the same math.
        v, t = images[0].double(), captions[c, :length].double()
        queries, context = (v, attention.i2t.double() @ t) if direction == "i2t" else (t, attention.t2i.double() @ v)
        rebuilt = F.cosine_similarity(queries, context, dim=1).mean()
        assert float(rebuilt) == pytest.approx(attention.score, abs=1e-5)
