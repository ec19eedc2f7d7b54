"""Encode images and captions into level features, and score features level by level, in blocks.

The primitives shared by evaluation (:mod:`hat.engine.evaluation`, which adds data loading and
the sharing between processes) and the model API (:mod:`hat.retriever`), so both give one number.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hat.models.hat import HATModel
from hat.runtime import Runtime

STREAM_IMAGES = 256  # images per block scored from host memory


@dataclass
class EncodedSplit:
    """Projected features of a split, in half precision.

    ``images``: one ``(N, R_k, D)`` tensor per level (each image encoded once);
    ``captions``: one ``(K * N, W, D)`` tensor per level; ``lengths``: ``(K * N,)``.
    """

    images: list[torch.Tensor]
    captions: list[torch.Tensor]
    lengths: torch.Tensor


@torch.no_grad()
def encode_image_batch(model: HATModel, pixels: torch.Tensor, runtime: Runtime) -> list[torch.Tensor]:
    """``(B, 3, S, S)`` normalised pixels -> one float16 ``(B, R_k, D)`` tensor per level, on the device."""
    with runtime.autocast():
        levels = model.encode_images(pixels.to(runtime.device, non_blocking=True))
    return [level.half() for level in levels]


@torch.no_grad()
def encode_caption_batch(
    model: HATModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, runtime: Runtime
) -> list[torch.Tensor]:
    """``(B, W)`` token ids and mask -> one float16 ``(B, W, D)`` tensor per level, on the device."""
    with runtime.autocast():
        levels, _ = model.encode_captions(input_ids.to(runtime.device), attention_mask.to(runtime.device))
    return [level.half() for level in levels]


@torch.no_grad()
def score_level(
    model: HATModel, images: torch.Tensor, captions: torch.Tensor, lengths: torch.Tensor, runtime: Runtime,
    stream_images: int | None = None,
) -> torch.Tensor:
    """One level's ``(n, C)`` float32 scores of images ``(n, R, D)`` against captions ``(C, W, D)``
    with ``lengths`` ``(C,)``. On the CPU, half features are scored in float32. Images are scored
    ``stream_images`` at a time (default: all at once, or :data:`STREAM_IMAGES` when they are kept
    off the device); the captions go to the device whole. ``runtime.kernel`` picks the similarity's
    path (``eval.kernel``)."""
    lengths = lengths.to(runtime.device)
    captions = captions.to(runtime.device)
    if runtime.device.type == "cpu":
        captions = captions.float()
    step = stream_images or (STREAM_IMAGES if images.device != runtime.device else max(1, images.shape[0]))
    blocks = []
    for start in range(0, images.shape[0], step):
        block = images[start : start + step].to(runtime.device, non_blocking=True)
        if runtime.device.type == "cpu":
            block = block.float()
        with runtime.autocast():
            blocks.append(model.level_similarities([block], [captions], lengths, runtime.kernel)[0])
    return torch.cat(blocks)
