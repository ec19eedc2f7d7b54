"""SCAN-style stacked cross attention between image regions and caption words (DESIGN.md §2).

The similarity of one image and one caption at one level:

- ``i2t`` (regions attend to words): ``S = T V^T`` (W x R); ``A = LeakyReLU(S, 0.1)``; ``A`` is
  L2-normalised over the regions axis for each word; ``P = softmax_words(smooth * A)`` for each
  region; the context of region r is ``c_r = sum_w P[r, w] T_w``; the score is the mean over
  regions of ``cos(V_r, c_r)``.
- ``t2i`` (words attend to regions): the mirror image, averaged over the caption's valid words.

All image-caption pairs are scored at once, in blocks of images x captions whose score tensor
``(Ib, Cb, R, W)`` holds at most ``block_elements`` entries. For ``i2t`` the per-region context
``(Ib, Cb, R, d)`` is never built: the cosine's numerator is ``sum_w P[r, w] S[r, w]`` and the
context's squared norm is the quadratic form ``P[r] G P[r]^T`` with the caption's Gram matrix
``G = T T^T`` (W x W).

On CUDA, scores that need no gradient (evaluation) go through the fused Triton kernels of
:mod:`hat.kernels.scan_triton` (``kernel="auto"``); this PyTorch path is their fallback, the
reference they are tested against, and the path that trains.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

DIRECTIONS = ("i2t", "t2i")
LEAKY_SLOPE = 0.1
NORM_EPS = 1e-8
DEFAULT_BLOCK_ELEMENTS = 1 << 24
KERNELS = ("auto", "torch", "triton")

log = logging.getLogger(__name__)


def scan_similarity(
    images: torch.Tensor,
    captions: torch.Tensor,
    caption_lengths: torch.Tensor,
    direction: str = "i2t",
    smooth: float = 9.0,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
    kernel: str = "auto",
) -> torch.Tensor:
    """Score every image against every caption at one level.

    Args:
        images: ``(I, R, d)`` region features.
        captions: ``(C, W, d)`` word features, padded to ``W``; positions at or past a caption's
            length are ignored whatever they hold.
        caption_lengths: ``(C,)`` integer lengths, each in ``[1, W]``.
        direction: ``"i2t"`` (regions attend to words) or ``"t2i"`` (words attend to regions).
        smooth: the inverse softmax temperature lambda (> 0).
        block_elements: upper bound on the entries of one ``(Ib, Cb, R, W)`` score block; bounds
            the working memory independently of ``I`` and ``C``.
        kernel: ``"auto"``: the fused Triton kernel for CUDA inputs that need no gradient (when
            Triton is installed), else this PyTorch path; ``"torch"``: always this path;
            ``"triton"``: always the kernel (no autograd).

    Returns:
        ``(I, C)`` float32 scores (float64 for float64 inputs). Differentiable with respect to ``images`` and ``captions``.
        Under autocast the products run in the autocast dtype; normalisation, softmax and
        cosine run in float32 with padding masked first.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if smooth <= 0:
        raise ValueError(f"smooth must be > 0, got {smooth}")
    if images.dim() != 3 or captions.dim() != 3 or images.shape[-1] != captions.shape[-1]:
        raise ValueError(
            f"expected images (I, R, d) and captions (C, W, d) with the same d, "
            f"got {tuple(images.shape)} and {tuple(captions.shape)}"
        )
    num_captions, width = captions.shape[:2]
    lengths = caption_lengths.to(device=captions.device, dtype=torch.long)
    if lengths.shape != (num_captions,):
        raise ValueError(f"caption_lengths must have shape ({num_captions},), got {tuple(lengths.shape)}")
    if num_captions and (int(lengths.min()) < 1 or int(lengths.max()) > width):
        raise ValueError(f"caption lengths must lie in [1, {width}], got {lengths.tolist()}")
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if kernel == "triton" or (kernel == "auto" and _fused_kernel_applies(images, captions)):
        return _fused_similarity(images, captions, lengths, direction, smooth)

    valid = torch.arange(width, device=captions.device)[None, :] < lengths[:, None]  # (C, W)
    captions = captions.masked_fill(~valid[:, :, None], 0.0)  # padding may hold anything, even NaN
    image_block, caption_block = _block_sizes(
        images.shape[0], num_captions, images.shape[1] * width, block_elements
    )
    score_block = _i2t_block if direction == "i2t" else _t2i_block
    rows = []
    for i0 in range(0, images.shape[0], image_block):
        image_chunk = images[i0 : i0 + image_block]
        rows.append(
            torch.cat(
                [
                    score_block(
                        image_chunk,
                        captions[c0 : c0 + caption_block],
                        valid[c0 : c0 + caption_block],
                        smooth,
                    )
                    for c0 in range(0, num_captions, caption_block)
                ],
                dim=1,
            )
            if num_captions
            else images.new_zeros((image_chunk.shape[0], 0), dtype=torch.float32)
        )
    if not rows:
        return images.new_zeros((0, num_captions), dtype=torch.float32)
    return torch.cat(rows, dim=0)


def multi_level_similarity(
    images: Sequence[torch.Tensor],
    captions: Sequence[torch.Tensor],
    caption_lengths: torch.Tensor,
    direction: str = "i2t",
    smooth: float = 9.0,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
    kernel: str = "auto",
) -> list[torch.Tensor]:
    """Per-level scores for aligned lists of level features; the fused score is their sum.

    Args:
        images: one ``(I, R_k, d)`` tensor per level.
        captions: one ``(C, W, d)`` tensor per level, all sharing ``caption_lengths``.

    Returns:
        One ``(I, C)`` float32 tensor per level.
    """
    if len(images) != len(captions):
        raise ValueError(f"got {len(images)} image levels but {len(captions)} caption levels")
    return [
        scan_similarity(v, t, caption_lengths, direction, smooth, block_elements, kernel)
        for v, t in zip(images, captions)
    ]


@functools.cache
def _triton_similarity():
    """The fused kernel's entry point, or None (logged once) when Triton is not installed."""
    try:
        from hat.kernels.scan_triton import triton_scan_similarity
    except ImportError as error:
        log.info("the fused similarity kernel is unavailable (%s): scoring with the PyTorch path", error)
        return None
    return triton_scan_similarity


def _fused_kernel_applies(images: torch.Tensor, captions: torch.Tensor) -> bool:
    """CUDA inputs of one dtype that need no gradient, with Triton installed."""
    needs_grad = torch.is_grad_enabled() and (images.requires_grad or captions.requires_grad)
    return images.is_cuda and not needs_grad and images.dtype == captions.dtype and _triton_similarity() is not None


def _fused_similarity(images, captions, lengths, direction: str, smooth: float) -> torch.Tensor:
    """The Triton kernel; under autocast the inputs take the autocast dtype, as the products would."""
    kernel = _triton_similarity()
    if kernel is None:
        raise RuntimeError("kernel='triton' needs Triton (pip install triton)")
    device = images.device.type
    if torch.is_autocast_enabled(device) and images.dtype == torch.float32:
        dtype = torch.get_autocast_dtype(device)
        images, captions = images.to(dtype), captions.to(dtype)
    return kernel(images, captions, lengths, direction, smooth)


def _block_sizes(num_images: int, num_captions: int, pair_elements: int, budget: int) -> tuple[int, int]:
    """Images and captions per block so that ``Ib * Cb * pair_elements <= budget`` (at least 1x1)."""
    pairs = max(1, budget // max(1, pair_elements))
    caption_block = max(1, min(num_captions, pairs))
    image_block = max(1, min(num_images, pairs // caption_block))
    return image_block, caption_block


def _wide(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32, or float64 when it already is (half inputs are widened, float64 kept)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _scores(images: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
    """Dot products of every region with every word: ``(Ib, Cb, R, W)``, at least float32."""
    return _wide(torch.einsum("ird,cwd->icrw", images, captions))


def _i2t_block(images: torch.Tensor, captions: torch.Tensor, valid: torch.Tensor, smooth: float) -> torch.Tensor:
    """i2t scores of one block: images ``(Ib, R, d)``, captions ``(Cb, W, d)``, valid ``(Cb, W)``."""
    scores = _scores(images, captions)  # S[i, c, r, w] = V_r . T_w
    word_mask = valid[None, :, None, :]
    attn = F.leaky_relu(scores, LEAKY_SLOPE).masked_fill(~word_mask, 0.0)
    attn = attn / (attn.norm(dim=2, keepdim=True) + NORM_EPS)  # over regions, per word
    weights = torch.softmax((attn * smooth).masked_fill(~word_mask, -math.inf), dim=3)  # over words
    numerator = (weights * scores).sum(dim=3)  # V_r . c_r, (Ib, Cb, R)
    gram = _wide(torch.einsum("cwd,cvd->cwv", captions, captions))  # (Cb, W, W)
    context_sq = (torch.einsum("icrw,cwv->icrv", weights, gram) * weights).sum(dim=3)
    image_norm = _wide(images).norm(dim=2)[:, None, :]  # (Ib, 1, R)
    denominator = (image_norm * context_sq.clamp_min(0.0).sqrt()).clamp_min(NORM_EPS)
    return (numerator / denominator).mean(dim=2)


def _t2i_block(images: torch.Tensor, captions: torch.Tensor, valid: torch.Tensor, smooth: float) -> torch.Tensor:
    """t2i scores of one block: images ``(Ib, R, d)``, captions ``(Cb, W, d)``, valid ``(Cb, W)``."""
    scores = _scores(images, captions)  # S[i, c, r, w] = V_r . T_w
    word_mask = valid[None, :, None, :]
    attn = F.leaky_relu(scores, LEAKY_SLOPE).masked_fill(~word_mask, 0.0)
    attn = attn / (attn.norm(dim=3, keepdim=True) + NORM_EPS)  # over words, per region
    weights = torch.softmax(attn * smooth, dim=2)  # over regions, per word
    context = _wide(torch.einsum("icrw,ird->icwd", weights.to(images.dtype), images))  # (Ib, Cb, W, d)
    numerator = (weights * scores).sum(dim=2)  # T_w . c_w, (Ib, Cb, W)
    word_norm = _wide(captions).norm(dim=2)[None]  # (1, Cb, W)
    denominator = (word_norm * context.norm(dim=3)).clamp_min(NORM_EPS)
    cosine = (numerator / denominator).masked_fill(~valid[None], 0.0)
    return cosine.sum(dim=2) / valid.sum(dim=1)[None].to(cosine.dtype)
