"""SCAN-style stacked cross attention between image regions and caption words (docs/model.md).

The similarity of one image and one caption at one level:

- ``i2t`` (regions attend to words): ``S = T V^T`` (W x R); ``A = LeakyReLU(S, 0.1)``; ``A`` is
  L2-normalised over the regions axis for each word; ``P = softmax_words(smooth * A)`` for each
  region; the context of region r is ``c_r = sum_w P[r, w] T_w``; the score is the mean over
  regions of ``cos(V_r, c_r)``.
- ``t2i`` (words attend to regions): the mirror image, averaged over the caption's valid words.

All image-caption pairs are scored at once, in blocks of images x captions whose score tensor
(``Ib x Cb x R x W``) holds at most ``block_elements`` entries. For ``i2t`` the per-region context
``(Ib, Cb, R, d)`` is never built: the cosine's numerator is ``sum_w P[r, w] S[r, w]`` and the
context's squared norm is the quadratic form ``P[r] G P[r]^T`` with the caption's Gram matrix
``G = T T^T`` (W x W).

On CUDA, scores that need no gradient (evaluation) go through the fused Triton kernels of
:mod:`hat.kernels.scan_triton` once they pass a self-check (``kernel="auto"``, see
:mod:`hat.kernels.dispatch`); this PyTorch path is their fallback, the reference they are checked
and tested against, and the path that trains. Under ``torch.compile``
(``hardware.compile``) it traces as one graph, forward and backward, with no data-dependent block
widths, so batches of one caption width reuse it whatever their lengths.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hat.kernels import dispatch
from hat.kernels.constants import LEAKY_SLOPE, NORM_EPS
from hat.kernels.dispatch import KERNELS

DIRECTIONS = ("i2t", "t2i")
CPU_BLOCK_ELEMENTS = 1 << 20  # a few MiB per block tensor: the elementwise passes stay in cache
GPU_BLOCK_ELEMENTS = 1 << 24


def scan_similarity(
    images: torch.Tensor,
    captions: torch.Tensor,
    caption_lengths: torch.Tensor,
    direction: str = "i2t",
    smooth: float = 9.0,
    block_elements: int | None = None,
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
            the working memory independently of ``I`` and ``C``. ``None``: 2^20 on the CPU,
            where cache-sized blocks are fastest, 2^24 on a GPU.
        kernel: ``"auto"``: the fused Triton kernel for CUDA inputs that need no gradient (when
            Triton is installed and the kernel passed its self-check in this process), else this
            PyTorch path; ``"torch"``: always this path; ``"triton"``: always the kernel, unchecked
            (inputs that need a gradient raise ValueError; a failing kernel raises RuntimeError).

    Returns:
        ``(I, C)`` float32 scores (float64 for float64 inputs). Differentiable with respect to ``images``
        and ``captions``.
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
    compiling = torch.compiler.is_compiling()
    if num_captions and not compiling and (int(lengths.min()) < 1 or int(lengths.max()) > width):
        raise ValueError(f"caption lengths must lie in [1, {width}], got {lengths.tolist()}")
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if kernel == "triton":
        return dispatch.FUSED.strict(images, captions, lengths, direction, smooth)
    if kernel == "auto" and dispatch.FUSED.applies(images, captions):
        scores = dispatch.FUSED.auto(images, captions, lengths, direction, smooth, _torch_path)
        if scores is not None:
            return scores

    if num_captions == 0 or images.shape[0] == 0:
        return images.new_zeros((images.shape[0], num_captions), dtype=torch.float32)
    valid = torch.arange(width, device=captions.device)[None, :] < lengths[:, None]  # (C, W)
    captions = captions.masked_fill(~valid[:, :, None], 0.0)  # padding may hold anything, even NaN
    if block_elements is None:
        block_elements = GPU_BLOCK_ELEMENTS if images.is_cuda else CPU_BLOCK_ELEMENTS
    image_block, caption_block = _block_sizes(
        images.shape[0], num_captions, images.shape[1] * width, block_elements
    )
    if compiling:
        # One graph for torch.compile: block widths read from the lengths would break it and
        # recompile it for every batch. Compiled training pads captions to one width instead.
        order = None
        block_widths = [width] * math.ceil(num_captions / caption_block)
    else:
        # Captions of similar length share a block, which is cut to its longest caption: no work
        # on padding beyond it. The columns are put back in the callers' order at the end.
        order = torch.argsort(lengths, stable=True)
        captions, valid = captions[order], valid[order]
        block_widths = [max(chunk) for chunk in _chunks(lengths[order].tolist(), caption_block)]
    score_block = _i2t_block if direction == "i2t" else _t2i_block
    rows = []
    for i0 in range(0, images.shape[0], image_block):
        image_chunk = images[i0 : i0 + image_block]
        rows.append(
            torch.cat(
                [
                    score_block(
                        image_chunk,
                        captions[c0 : c0 + caption_block, :block_width],
                        valid[c0 : c0 + caption_block, :block_width],
                        smooth,
                    )
                    for c0, block_width in zip(range(0, num_captions, caption_block), block_widths)
                ],
                dim=1,
            )
        )
    scores = torch.cat(rows, dim=0)
    return scores if order is None else scores.index_select(1, torch.argsort(order))


def _torch_path(images, captions, lengths, direction: str, smooth: float) -> torch.Tensor:
    """This PyTorch path alone: the reference of the kernel's self-check."""
    return scan_similarity(images, captions, lengths, direction, smooth, kernel="torch")


def multi_level_similarity(
    images: Sequence[torch.Tensor],
    captions: Sequence[torch.Tensor],
    caption_lengths: torch.Tensor,
    direction: str = "i2t",
    smooth: float = 9.0,
    block_elements: int | None = None,
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


def fuse_levels(level_scores: Sequence[torch.Tensor], levels: Sequence[int] | None = None) -> torch.Tensor:
    """HAT's fused score: the sum of the per-level ``(I, C)`` scores of ``levels`` (1-based; all
    levels for ``None``)."""
    chosen = [level_scores[k - 1] for k in levels] if levels else list(level_scores)
    return torch.stack(chosen).sum(dim=0)


@dataclass(frozen=True)
class PairAttention:
    """The cross attention of one image and one caption at one level, as the similarity computes it.

    ``t2i``: ``(L, R)``, where each of the caption's ``L`` words looks among the ``R`` regions
    (each row sums to one); ``i2t``: ``(R, L)``, which words each region picks (each row sums to
    one). ``score``: the pair's similarity in the model's ``direction``.
    """

    t2i: torch.Tensor
    i2t: torch.Tensor
    score: float


@torch.no_grad()
def pair_attention(
    image: torch.Tensor, caption: torch.Tensor, length: int, direction: str = "i2t", smooth: float = 9.0
) -> PairAttention:
    """Both attention views of image regions ``(R, d)`` and caption words ``(W, d)`` (the first
    ``length`` of them valid), from the functions the similarity itself uses (float32)."""
    image, caption = _wide(image)[None], _wide(caption[:length])
    valid = torch.ones((1, length), dtype=torch.bool, device=caption.device)
    i2t_scores = torch.matmul(image, caption.T)[:, :, None]  # (1, R, 1, L)
    i2t = _i2t_weights(i2t_scores, valid, smooth)[0, :, 0]
    t2i = _t2i_weights(i2t_scores.permute(0, 2, 3, 1), smooth)[0, 0]  # S as (1, 1, L, R)
    score = scan_similarity(image, caption[None], torch.tensor([length]), direction, smooth, kernel="torch")
    return PairAttention(t2i=t2i, i2t=i2t, score=float(score))


def _chunks(items: list, size: int) -> list[list]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _block_sizes(num_images: int, num_captions: int, pair_elements: int, budget: int) -> tuple[int, int]:
    """Images and captions per block so that ``Ib * Cb * pair_elements <= budget`` (at least 1x1),
    as square as the counts allow: several images per block make the score product one larger
    matrix product (2x faster on the CPU than one image against many captions)."""
    pairs = max(1, budget // max(1, pair_elements))
    image_block = max(1, min(num_images, math.isqrt(pairs)))
    caption_block = max(1, min(num_captions, pairs // image_block))
    image_block = max(1, min(num_images, pairs // caption_block))
    return image_block, caption_block


def _wide(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32, or float64 when it already is (half inputs are widened, float64 kept)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _norm(x: torch.Tensor, dim: int) -> torch.Tensor:
    """L2 norm over ``dim`` (kept), with the zero gradient ``Tensor.norm`` gives a zero vector (a
    padding word's column). Squares summed along a middle axis vectorise over the contiguous last
    one, which ``Tensor.norm`` does not do on the CPU (3x slower here)."""
    squares = x.square().sum(dim=dim, keepdim=True)
    positive = squares > 0
    return torch.where(positive, squares, 1.0).sqrt() * positive


def _i2t_weights(scores: torch.Tensor, valid: torch.Tensor, smooth: float) -> torch.Tensor:
    """i2t attention ``P`` from scores ``S[i, r, c, w]`` ``(Ib, R, Cb, W)`` (padding words score 0):
    LeakyReLU, L2-normalised over regions per word, softmax over the valid words of each region."""
    attn = F.leaky_relu(scores, LEAKY_SLOPE)
    scale = smooth / (_norm(attn, dim=1) + NORM_EPS)  # normalise over regions, per word
    padding = torch.zeros(valid.shape, dtype=scale.dtype, device=scale.device).masked_fill(~valid, -math.inf)
    return torch.softmax(torch.addcmul(padding, attn, scale), dim=3)  # over words


def _t2i_weights(scores: torch.Tensor, smooth: float) -> torch.Tensor:
    """t2i attention from scores ``S[i, c, w, r]`` ``(Ib, Cb, W, R)`` (padding words score 0):
    LeakyReLU, L2-normalised over words per region, softmax over the regions of each word."""
    attn = F.leaky_relu(scores, LEAKY_SLOPE)
    scale = smooth / (_norm(attn, dim=2) + NORM_EPS)  # normalise over words, per region
    return torch.softmax(attn * scale, dim=3)  # over regions, per word


def _i2t_block(images: torch.Tensor, captions: torch.Tensor, valid: torch.Tensor, smooth: float) -> torch.Tensor:
    """i2t scores of one block: images ``(Ib, R, d)``, captions ``(Cb, W, d)`` (zero at padding),
    valid ``(Cb, W)``. Padding words score exactly 0, so they leave the norms over regions alone.
    Tensors are laid out ``(Ib, R, Cb, W)``, as one matrix product per image leaves them."""
    num_captions, width, dim = captions.shape
    scores = _wide(torch.matmul(images, captions.reshape(-1, dim).T))  # (Ib, R, Cb * W)
    scores = scores.view(images.shape[0], images.shape[1], num_captions, width)  # S[i, r, c, w] = V_r . T_w
    weights = _i2t_weights(scores, valid, smooth)
    numerator = (weights * scores).sum(dim=3)  # V_r . c_r, (Ib, R, Cb)
    gram = _wide(torch.matmul(captions, captions.transpose(1, 2)))  # (Cb, W, W)
    context_sq = (torch.einsum("ircw,cwv->ircv", weights, gram) * weights).sum(dim=3)  # |c_r|^2 = P G P^T
    image_norm = _wide(images).norm(dim=2)[:, :, None]  # (Ib, R, 1)
    denominator = (image_norm * context_sq.clamp_min(0.0).sqrt()).clamp_min(NORM_EPS)
    return (numerator / denominator).mean(dim=1)


def _t2i_block(images: torch.Tensor, captions: torch.Tensor, valid: torch.Tensor, smooth: float) -> torch.Tensor:
    """t2i scores of one block: images ``(Ib, R, d)``, captions ``(Cb, W, d)`` (zero at padding),
    valid ``(Cb, W)``. Padding words score exactly 0, so they leave the norms over words alone.
    Tensors are laid out ``(Ib, Cb, W, R)``, as one matrix product per image leaves them."""
    num_images, num_regions, dim = images.shape
    num_captions, width, _ = captions.shape
    scores = _wide(torch.matmul(captions.reshape(-1, dim), images.transpose(1, 2)))  # (Ib, Cb * W, R)
    scores = scores.view(num_images, num_captions, width, num_regions)  # S[i, c, w, r] = T_w . V_r
    weights = _t2i_weights(scores, smooth)
    context = _wide(torch.matmul(weights.view(num_images, -1, num_regions).to(images.dtype), images))  # (Ib, Cb * W, d)
    numerator = (weights * scores).sum(dim=3)  # T_w . c_w, (Ib, Cb, W)
    word_norm = _wide(captions).norm(dim=2)[None]  # (1, Cb, W)
    denominator = (word_norm * context.view(num_images, num_captions, width, dim).norm(dim=3)).clamp_min(NORM_EPS)
    cosine = (numerator / denominator).masked_fill(~valid[None], 0.0)
    return cosine.sum(dim=2) / valid.sum(dim=1)[None].to(cosine.dtype)
