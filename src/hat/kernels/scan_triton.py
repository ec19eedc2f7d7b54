"""Fused Triton kernels for the SCAN similarity (docs/model.md), forward only.

One program scores one image against ``BLOCK_C`` captions and keeps every region x word score
tile on chip: nothing of size ``(I, C, R, W)`` or ``(I, C, R, d)`` is ever written to memory.
Products read bf16/fp16/fp32 inputs and accumulate in float32; normalisation, softmax and
cosine run in float32.

- ``i2t``: two sweeps over the regions. The first accumulates, for each word, the squared norm
  over regions of the LeakyReLU scores; the second normalises, takes the softmax over words and
  scores each region without building its context: the cosine's numerator is
  ``sum_w P[r, w] S[r, w]`` and the context's squared norm ``P[r] G P[r]^T`` with the caption's
  W x W Gram matrix ``G``, computed once per program.
- ``t2i``: one sweep over the regions with an online softmax over regions (the running maximum
  rescales the sums, as in flash attention); the words' contexts accumulate in a ``(W, d)``
  float32 tile.

Under ``TRITON_INTERPRET=1`` (set before this module is imported) the kernels run on the CPU
through Triton's interpreter, which is how the tests check them against the PyTorch path.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from hat.kernels.constants import LEAKY_SLOPE, NORM_EPS

_SLOPE = tl.constexpr(LEAKY_SLOPE)
_EPS = tl.constexpr(NORM_EPS)


@triton.jit
def _load_rows(ptr, rows, row_stride, row_valid, cols, col_valid):
    """The ``(rows, cols)`` tile of a row-major matrix, zero outside the valid rows and columns."""
    mask = row_valid[:, None] & col_valid[None, :]
    return tl.load(ptr + rows[:, None] * row_stride + cols[None, :], mask=mask, other=0.0)


@triton.jit
def _load_captions(t_ptr, c_offsets, stride_tc, w_offsets, stride_tw, valid_w, d_offsets, dim):
    """Feature columns ``d_offsets`` of the program's captions: ``(BLOCK_C, BLOCK_W, BLOCK_D)``,
    zero outside the valid words (``valid_w``, ``(BLOCK_C, BLOCK_W)``) and ``dim``."""
    return tl.load(
        t_ptr + c_offsets[:, None, None] * stride_tc + w_offsets[None, :, None] * stride_tw + d_offsets[None, None, :],
        mask=valid_w[:, :, None] & (d_offsets < dim)[None, None, :], other=0.0,
    )


@triton.jit
def _leaky(x):
    return tl.where(x > 0, x, x * _SLOPE)


@triton.jit
def _scores_tile(
    v_ptr, t_ptr, r_offsets, c_offsets, w_offsets, num_regions, dim, stride_vr, stride_tc, stride_tw,
    valid_w, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """``S (BLOCK_R, BLOCK_C, BLOCK_W)`` of one region tile against the program's captions, and
    the squared norms ``(BLOCK_R,)`` of those regions; the product runs over ``dim`` in chunks."""
    scores = tl.zeros((BLOCK_R, BLOCK_C * BLOCK_W), dtype=tl.float32)
    square = tl.zeros((BLOCK_R,), dtype=tl.float32)
    r_valid = r_offsets < num_regions
    for d0 in range(0, dim, BLOCK_D):
        d_offsets = d0 + tl.arange(0, BLOCK_D)
        d_valid = d_offsets < dim
        v = _load_rows(v_ptr, r_offsets, stride_vr, r_valid, d_offsets, d_valid)
        t = _load_captions(t_ptr, c_offsets, stride_tc, w_offsets, stride_tw, valid_w, d_offsets, dim)
        t = tl.reshape(t, (BLOCK_C * BLOCK_W, BLOCK_D))
        scores = tl.dot(v, tl.trans(t), scores, input_precision=PRECISION)
        vf = v.to(tl.float32)
        square += tl.sum(vf * vf, axis=1)
    return tl.reshape(scores, (BLOCK_R, BLOCK_C, BLOCK_W)), square


@triton.jit
def _i2t_kernel(
    v_ptr, t_ptr, len_ptr, out_ptr,
    num_captions, num_regions, dim, smooth,
    stride_vi, stride_vr, stride_tc, stride_tw, stride_oi,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):
    c_offsets = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    image = tl.program_id(1)
    v_ptr += image.to(tl.int64) * stride_vi
    w_offsets = tl.arange(0, BLOCK_W)
    c_valid = c_offsets < num_captions
    lengths = tl.load(len_ptr + c_offsets, mask=c_valid, other=1)
    in_caption = w_offsets[None, :] < lengths[:, None]  # (BLOCK_C, BLOCK_W); a missing caption has length 1
    valid_w = in_caption & c_valid[:, None]  # the words to read

    # The captions' Gram matrices G[c] = T_c T_c^T, (BLOCK_C, BLOCK_W, BLOCK_W), in float32.
    gram = tl.zeros((BLOCK_C, BLOCK_W, BLOCK_W), dtype=tl.float32)
    for d0 in range(0, dim, BLOCK_D):
        d_offsets = d0 + tl.arange(0, BLOCK_D)
        t = _load_captions(t_ptr, c_offsets, stride_tc, w_offsets, stride_tw, valid_w, d_offsets, dim).to(tl.float32)
        gram = tl.dot(t, tl.trans(t, (0, 2, 1)), gram, input_precision="ieee")

    # Sweep 1: squared norm over regions of LeakyReLU(S), per caption word.
    column_square = tl.zeros((BLOCK_C, BLOCK_W), dtype=tl.float32)
    for r0 in range(0, num_regions, BLOCK_R):
        r_offsets = r0 + tl.arange(0, BLOCK_R)
        scores, _ = _scores_tile(
            v_ptr, t_ptr, r_offsets, c_offsets, w_offsets, num_regions, dim, stride_vr, stride_tc, stride_tw,
            valid_w, BLOCK_R, BLOCK_C, BLOCK_W, BLOCK_D, PRECISION,
        )
        attn = _leaky(scores)
        keep = valid_w[None, :, :] & (r_offsets < num_regions)[:, None, None]
        attn = tl.where(keep, attn, 0.0)
        column_square += tl.sum(attn * attn, axis=0)
    column_norm = tl.sqrt(column_square) + _EPS

    # Sweep 2: softmax over words, cosine of each region with its (never built) context.
    total = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for r0 in range(0, num_regions, BLOCK_R):
        r_offsets = r0 + tl.arange(0, BLOCK_R)
        scores, square = _scores_tile(
            v_ptr, t_ptr, r_offsets, c_offsets, w_offsets, num_regions, dim, stride_vr, stride_tc, stride_tw,
            valid_w, BLOCK_R, BLOCK_C, BLOCK_W, BLOCK_D, PRECISION,
        )
        attn = _leaky(scores) / column_norm[None, :, :]
        logits = tl.where(in_caption[None, :, :], attn * smooth, float("-inf"))
        peak = tl.max(logits, axis=2)
        weights = tl.exp(logits - peak[:, :, None])
        weights = weights / tl.sum(weights, axis=2)[:, :, None]  # (BLOCK_R, BLOCK_C, BLOCK_W)
        numerator = tl.sum(weights * scores, axis=2)  # (BLOCK_R, BLOCK_C)
        by_caption = tl.permute(weights, (1, 0, 2))  # (BLOCK_C, BLOCK_R, BLOCK_W)
        quadratic = tl.sum(tl.dot(by_caption, gram, input_precision="ieee") * by_caption, axis=2)  # (BLOCK_C, BLOCK_R)
        context_norm = tl.sqrt(tl.maximum(tl.trans(quadratic), 0.0))
        cosine = numerator / tl.maximum(tl.sqrt(square)[:, None] * context_norm, _EPS)
        cosine = tl.where((r_offsets < num_regions)[:, None], cosine, 0.0)
        total += tl.sum(cosine, axis=0)
    tl.store(out_ptr + image.to(tl.int64) * stride_oi + c_offsets, total / num_regions, mask=c_valid)


@triton.jit
def _t2i_kernel(
    v_ptr, t_ptr, len_ptr, out_ptr,
    num_captions, num_regions, dim, smooth,
    stride_vi, stride_vr, stride_tc, stride_tw, stride_oi,
    BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
):
    caption = tl.program_id(0)
    image = tl.program_id(1)
    v_ptr += image.to(tl.int64) * stride_vi
    w_offsets = tl.arange(0, BLOCK_W)
    d_offsets = tl.arange(0, BLOCK_D)
    d_valid = d_offsets < dim
    length = tl.load(len_ptr + caption)
    w_valid = w_offsets < length
    # (BLOCK_W, BLOCK_D)
    words = _load_rows(t_ptr + caption * stride_tc, w_offsets, stride_tw, w_valid, d_offsets, d_valid)
    words_f = words.to(tl.float32)
    word_norm = tl.sqrt(tl.sum(words_f * words_f, axis=1))

    peak = tl.full((BLOCK_W,), float("-inf"), dtype=tl.float32)
    mass = tl.zeros((BLOCK_W,), dtype=tl.float32)
    numerator = tl.zeros((BLOCK_W,), dtype=tl.float32)
    context = tl.zeros((BLOCK_W, BLOCK_D), dtype=tl.float32)
    for r0 in range(0, num_regions, BLOCK_R):
        r_offsets = r0 + tl.arange(0, BLOCK_R)
        r_valid = r_offsets < num_regions
        regions = _load_rows(v_ptr, r_offsets, stride_vr, r_valid, d_offsets, d_valid)  # (BLOCK_R, BLOCK_D)
        scores = tl.dot(regions, tl.trans(words), input_precision=PRECISION)  # (BLOCK_R, BLOCK_W)
        attn = tl.where(w_valid[None, :], _leaky(scores), 0.0)
        attn = attn / (tl.sqrt(tl.sum(attn * attn, axis=1))[:, None] + _EPS)  # over words, per region
        logits = tl.where(r_valid[:, None], attn * smooth, float("-inf"))
        new_peak = tl.maximum(peak, tl.max(logits, axis=0))
        rescale = tl.exp(peak - new_peak)
        weights = tl.exp(logits - new_peak[None, :])  # (BLOCK_R, BLOCK_W), unnormalised
        mass = mass * rescale + tl.sum(weights, axis=0)
        numerator = numerator * rescale + tl.sum(weights * scores, axis=0)
        context = context * rescale[:, None] + tl.dot(
            tl.trans(weights), regions.to(tl.float32), input_precision="ieee"
        )
        peak = new_peak
    context_norm = tl.sqrt(tl.sum(context * context, axis=1)) / mass
    cosine = (numerator / mass) / tl.maximum(word_norm * context_norm, _EPS)
    cosine = tl.where(w_valid, cosine, 0.0)
    tl.store(out_ptr + image.to(tl.int64) * stride_oi + caption, tl.sum(cosine, axis=0) / length)


def _block(n: int, minimum: int = 16) -> int:
    return max(minimum, triton.next_power_of_2(n))


def triton_scan_similarity(
    images: torch.Tensor,
    captions: torch.Tensor,
    caption_lengths: torch.Tensor,
    direction: str = "i2t",
    smooth: float = 9.0,
    block_regions: int = 32,
    block_captions: int = 4,
) -> torch.Tensor:
    """``(I, C)`` float32 scores, the same contract as :func:`hat.alignment.scan_similarity`
    (padding ignored whatever it holds), without autograd. ``images`` ``(I, R, d)`` and
    ``captions`` ``(C, W, d)`` share one floating dtype; lengths lie in ``[1, W]``."""
    if images.dtype != captions.dtype:
        raise ValueError(f"images and captions must share a dtype, got {images.dtype} and {captions.dtype}")
    images = images.contiguous()
    captions = captions.contiguous()
    lengths = caption_lengths.to(device=captions.device, dtype=torch.int32).contiguous()
    num_images, num_regions, dim = images.shape
    num_captions, width, _ = captions.shape
    out = torch.empty((num_images, num_captions), device=images.device, dtype=torch.float32)
    if num_images == 0 or num_captions == 0:
        return out
    precision = "ieee" if images.dtype == torch.float32 else None  # fp32 products exact, half ones native
    common = (num_captions, num_regions, dim, float(smooth),
              images.stride(0), images.stride(1), captions.stride(0), captions.stride(1), out.stride(0))
    if direction == "i2t":
        grid = (triton.cdiv(num_captions, block_captions), num_images)
        _i2t_kernel[grid](
            images, captions, lengths, out, *common,
            BLOCK_R=block_regions, BLOCK_C=block_captions, BLOCK_W=_block(width), BLOCK_D=min(_block(dim), 64),
            PRECISION=precision,
        )
    elif direction == "t2i":
        _t2i_kernel[(num_captions, num_images)](
            images, captions, lengths, out, *common,
            BLOCK_R=block_regions, BLOCK_W=_block(width), BLOCK_D=_block(dim), PRECISION=precision,
        )
    else:
        raise ValueError(f"direction must be i2t or t2i, got {direction!r}")
    return out
