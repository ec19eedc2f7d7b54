"""Encode a split once and score every image against every caption, per level and fused (docs/evaluation.md)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Subset

from hat.alignment import fuse_levels
from hat.data.datasets import CaptionCollator, ImageDataset
from hat.data.records import CaptionedImages
from hat.data.transforms import eval_transform
from hat.engine.distributed import Distributed, gather
from hat.engine.preemption import ignore_stop_signals, iterate_workers_safely
from hat.engine.runtime import Runtime
from hat.metrics import prefixed, retrieval_recall
from hat.models.hat import HATModel

log = logging.getLogger(__name__)
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
def encode_split(
    model: HATModel,
    split: CaptionedImages,
    collator: CaptionCollator,
    image_size: int,
    runtime: Runtime,
    batch_size: int,
    ranks: Distributed = Distributed(),
    feature_budget: int | None = None,
) -> EncodedSplit:
    """Run both encoders over a split: each unique image once, each caption once.

    Under torch.distributed each process encodes a contiguous shard of the images and of their
    captions and the shards are gathered, so every process ends with the whole split's features.
    Features stay on the evaluation device when the split's are estimated (from the first batch)
    to fit in ``feature_budget`` bytes (default: half the GPU's free memory; no limit on the CPU),
    else in host memory, from where :func:`level_similarities` streams them in blocks. A
    multi-process evaluation keeps them on the device (its exchange needs them there).
    """
    model.eval()
    lo, hi, shard = _shard(len(split), ranks)
    loader = DataLoader(
        Subset(ImageDataset(split, eval_transform(image_size)), range(lo, hi)),
        batch_size=batch_size,
        num_workers=runtime.num_workers,
        pin_memory=runtime.pin_memory,
        worker_init_fn=ignore_stop_signals,
        generator=torch.Generator().manual_seed(0),  # leave the global RNG (training's dropout) untouched
    )
    per_image = split.captions_per_image
    tokens = collator.tokenize(split.captions())  # padded to the longest caption of the split
    image_chunks: list[list[torch.Tensor]] = [[] for _ in range(model.num_levels)]
    storage = runtime.device
    for pixels, _ in iterate_workers_safely(loader):
        levels = encode_image_batch(model, pixels, runtime)
        if not image_chunks[0]:
            storage = _feature_storage(levels, len(split), per_image * tokens["input_ids"].shape[1],
                                       runtime.device, feature_budget, ranks)
        for chunks, level in zip(image_chunks, levels):
            chunks.append(level.to(storage))

    caption_chunks: list[list[torch.Tensor]] = [[] for _ in range(model.num_levels)]
    for start in range(lo * per_image, hi * per_image, batch_size):
        stop = min(start + batch_size, hi * per_image)
        levels = encode_caption_batch(model, tokens["input_ids"][start:stop], tokens["attention_mask"][start:stop], runtime)
        for chunks, level in zip(caption_chunks, levels):
            chunks.append(level.to(storage))
    return EncodedSplit(
        images=[_gather_shards(torch.cat(chunks), shard, len(split)) for chunks in image_chunks],
        captions=[
            _gather_shards(torch.cat(chunks), shard * per_image, len(split) * per_image) for chunks in caption_chunks
        ],
        lengths=tokens["attention_mask"].sum(dim=1).to(runtime.device),
    )


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


def _feature_storage(
    first_batch: list[torch.Tensor], num_images: int, words_per_image: int, device: torch.device,
    budget: int | None, ranks: Distributed,
) -> torch.device:
    """Where a split's half-precision features go: ``device`` when the estimate from the first
    batch of image features (``(B, R_k, D)`` per level) fits ``budget``, else the host."""
    per_image = sum(level[0].numel() + words_per_image * level.shape[-1] for level in first_batch) * 2
    needed = per_image * num_images
    if budget is None:
        budget = torch.cuda.mem_get_info(device)[0] // 2 if device.type == "cuda" else None
    if budget is None or needed <= budget:
        return device
    if ranks.enabled:
        log.warning("the split's features (%.1f GB) exceed the budget (%.1f GB) but stay on %s: "
                    "processes exchange them there", needed / 1e9, budget / 1e9, device)
        return device
    log.info("the split's features (%.1f GB) exceed the device budget (%.1f GB): kept in host "
             "memory and streamed in blocks", needed / 1e9, budget / 1e9)
    return torch.device("cpu")


def _shard(count: int, ranks: Distributed) -> tuple[int, int, int]:
    """``(first, end, shard size)`` of this process's contiguous share of ``count`` items."""
    if count < ranks.world_size:
        raise ValueError(f"cannot share {count} images between {ranks.world_size} processes")
    size = -(-count // ranks.world_size)
    lo = min(ranks.rank * size, count)
    return lo, min(lo + size, count), size


def _gather_shards(local: torch.Tensor, shard: int, count: int) -> torch.Tensor:
    """Every process's ``local`` rows (padded to ``shard``), concatenated in rank order, first ``count`` rows."""
    padding = shard - local.shape[0]
    if padding:
        local = torch.cat([local, local.new_zeros((padding, *local.shape[1:]))])
    return gather(local)[:count]


@torch.no_grad()
def level_similarities(
    model: HATModel,
    encoded: EncodedSplit,
    runtime: Runtime,
    ranks: Distributed = Distributed(),
    stream_images: int | None = None,
) -> list[torch.Tensor]:
    """One ``(N, K * N)`` float32 score matrix per level; processes share the rows. On the CPU,
    half features are scored in float32. Images are scored ``stream_images`` at a time (default:
    all at once, or 256 when the features were kept in host memory for a GPU evaluation, see
    :func:`encode_split`); a level's captions go to the device whole."""
    lo, hi, shard = _shard(encoded.images[0].shape[0], ranks)
    lengths = encoded.lengths.to(runtime.device)
    sims = []
    for images, captions in zip(encoded.images, encoded.captions):
        images = images[lo:hi]
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
                blocks.append(model.level_similarities([block], [captions], lengths)[0])
        del captions
        sims.append(_gather_shards(torch.cat(blocks), shard, encoded.images[0].shape[0]))
    return sims


def recall_table(
    sims: list[torch.Tensor],
    split: str,
    captions_per_image: int,
    protocol: str | None = None,
    fused_levels: Sequence[int] | None = None,
) -> dict[str, float]:
    """Metrics of each level alone (``{split}[/{protocol}]/level{k}/...``) and of the sum of the
    ``fused_levels`` (1-based; all levels for ``None``) under no level part (``{split}/rsum``)."""
    metrics: dict[str, float] = {}
    for level, level_sims in enumerate(sims, start=1):
        metrics |= prefixed(retrieval_recall(level_sims, captions_per_image), split, protocol, level)
    metrics |= prefixed(retrieval_recall(fuse_levels(sims, fused_levels), captions_per_image), split, protocol)
    return metrics


def fold_mean_table(
    sims: list[torch.Tensor],
    split: str,
    captions_per_image: int,
    protocol: str,
    folds: int,
    fused_levels: Sequence[int] | None = None,
) -> dict[str, float]:
    """:func:`recall_table` averaged over ``folds`` equal contiguous slices of the images (COCO 1K: 5 folds).

    Fold ``f`` scores images ``[f * n, (f + 1) * n)`` against their own captions only.
    """
    num_images = sims[0].shape[0]
    if folds < 1 or num_images % folds:
        raise ValueError(
            f"test protocol {protocol!r} needs {folds} equal folds, but the split has {num_images} images"
        )
    size = num_images // folds
    tables = [
        recall_table(
            [s[f * size : (f + 1) * size, f * size * captions_per_image : (f + 1) * size * captions_per_image] for s in sims],
            split,
            captions_per_image,
            protocol,
            fused_levels,
        )
        for f in range(folds)
    ]
    return {name: sum(table[name] for table in tables) / folds for name in tables[0]}


def protocol_tables(
    sims: list[torch.Tensor],
    split: str,
    captions_per_image: int,
    protocols: dict[str, int] | None,
    fused_levels: Sequence[int] | None = None,
) -> dict[str, float]:
    """One :func:`fold_mean_table` per ``{protocol: folds}`` entry, or a plain table for ``None``."""
    if not protocols:
        return recall_table(sims, split, captions_per_image, None, fused_levels)
    metrics: dict[str, float] = {}
    for protocol, folds in protocols.items():
        metrics |= fold_mean_table(sims, split, captions_per_image, protocol, folds, fused_levels)
    return metrics


def score_split(
    model: HATModel,
    split: CaptionedImages,
    collator: CaptionCollator,
    image_size: int,
    runtime: Runtime,
    batch_size: int,
    ranks: Distributed = Distributed(),
) -> list[torch.Tensor]:
    """Encode ``split`` once and score it: one ``(N, K * N)`` float32 matrix per level (every process
    gets all of them)."""
    encoded = encode_split(model, split, collator, image_size, runtime, batch_size, ranks)
    return level_similarities(model, encoded, runtime, ranks)

