"""The fused Triton kernels agree with the PyTorch path (hat.alignment) on small shapes that
exercise every edge: partial region, caption, word and feature tiles, and padding that holds
garbage. Without a GPU they run through Triton's interpreter (conftest sets TRITON_INTERPRET)."""

from __future__ import annotations

import os

import pytest
import torch

triton = pytest.importorskip("triton")

from hat.alignment import scan_similarity  # noqa: E402
from hat.kernels.scan_triton import triton_scan_similarity  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and Triton's interpreter is off", allow_module_level=True)


def _features(images, captions, regions, width, dim, seed=0):
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(images, regions, dim, generator=generator)
    t = torch.randn(captions, width, dim, generator=generator)
    lengths = torch.randint(1, width + 1, (captions,), generator=generator)
    lengths[0] = width
    pad = torch.arange(width)[None, :] >= lengths[:, None]
    t[pad] = 1e4  # padding holds garbage: the kernels must not read it as words
    return v.to(DEVICE), t.to(DEVICE), lengths.to(DEVICE)


@pytest.mark.parametrize("direction", ["i2t", "t2i"])
@pytest.mark.parametrize(
    ("images", "captions", "regions", "width", "dim", "block_regions", "block_captions"),
    [
        (2, 5, 20, 7, 24, 16, 4),  # partial tiles everywhere
        (3, 4, 49, 12, 80, 32, 2),  # several region tiles and feature chunks
        (1, 1, 16, 16, 16, 16, 1),  # exact tiles, one pair
    ],
)
def test_float32_matches_the_pytorch_path(
    direction, images, captions, regions, width, dim, block_regions, block_captions
):
    v, t, lengths = _features(images, captions, regions, width, dim)
    expected = scan_similarity(v, t, lengths, direction, smooth=9.0)
    got = triton_scan_similarity(
        v, t, lengths, direction, 9.0, block_regions=block_regions, block_captions=block_captions
    )
    assert got.dtype == torch.float32 and got.shape == (images, captions)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


# Triton 3.8's interpreter multiplies bfloat16 tiles wrongly in tl.dot (float16 is right), so the
# CPU checks half precision with float16; a GPU checks bfloat16, the dtype evaluation uses.
HALF = torch.bfloat16 if DEVICE == "cuda" else torch.float16


@pytest.mark.parametrize("direction", ["i2t", "t2i"])
def test_half_inputs_match_within_half_precision(direction):
    v, t, lengths = _features(2, 6, 30, 9, 32, seed=1)
    v, t = v.to(HALF), t.to(HALF)
    expected = scan_similarity(v.double(), t.double(), lengths, direction, smooth=9.0).float()
    got = triton_scan_similarity(v, t, lengths, direction, 9.0)
    torch.testing.assert_close(got, expected, rtol=1e-2, atol=1e-2)


def test_recall_is_unchanged():
    from hat.metrics import retrieval_recall

    generator = torch.Generator().manual_seed(2)
    topics = torch.randn(6, 32, generator=generator)
    v = (topics[:, None, :] + 0.5 * torch.randn(6, 10, 32, generator=generator)).to(DEVICE)
    t = (topics.repeat_interleave(5, dim=0)[:, None, :] + 0.5 * torch.randn(30, 8, 32, generator=generator)).to(DEVICE)
    lengths = torch.randint(3, 9, (30,), generator=generator).to(DEVICE)
    for direction in ("i2t", "t2i"):
        assert retrieval_recall(triton_scan_similarity(v, t, lengths, direction)) == retrieval_recall(
            scan_similarity(v, t, lengths, direction)
        )


def test_inputs_must_share_a_dtype():
    v, t, lengths = _features(1, 2, 16, 4, 16)
    with pytest.raises(ValueError, match="share a dtype"):
        triton_scan_similarity(v, t.double(), lengths)


def test_scan_similarity_routes_to_the_kernel_on_request():
    v, t, lengths = _features(2, 3, 20, 6, 16)
    torch.testing.assert_close(
        scan_similarity(v, t, lengths, kernel="triton"), scan_similarity(v, t, lengths, kernel="torch"),
        rtol=1e-5, atol=1e-6,
    )
    with pytest.raises(ValueError, match="kernel must be one of"):
        scan_similarity(v, t, lengths, kernel="cuda")

