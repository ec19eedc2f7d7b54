"""Encode a split once and score every image against every caption, per level and fused (docs/evaluation.md)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Subset

from hat.alignment import fuse_levels
from hat.data.datasets import CaptionCollator, ImageDataset
from hat.data.records import CaptionedImages
from hat.data.transforms import eval_transform
from hat.engine.distributed import Distributed, gather
from hat.engine.preemption import ignore_stop_signals, iterate_workers_safely
from hat.features import EncodedSplit, encode_caption_batch, encode_image_batch, score_level
from hat.metrics import prefixed, retrieval_recall
from hat.models.hat import HATModel
from hat.runtime import Runtime

log = logging.getLogger(__name__)


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
        ids, mask = tokens["input_ids"][start:stop], tokens["attention_mask"][start:stop]
        levels = encode_caption_batch(model, ids, mask, runtime)
        for chunks, level in zip(caption_chunks, levels):
            chunks.append(level.to(storage))
    return EncodedSplit(
        images=[_gather_shards(torch.cat(chunks), shard, len(split)) for chunks in image_chunks],
        captions=[
            _gather_shards(torch.cat(chunks), shard * per_image, len(split) * per_image) for chunks in caption_chunks
        ],
        lengths=tokens["attention_mask"].sum(dim=1).to(runtime.device),
    )


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
    return [
        _gather_shards(score_level(model, images[lo:hi], captions, encoded.lengths, runtime, stream_images), shard,
                       encoded.images[0].shape[0])
        for images, captions in zip(encoded.images, encoded.captions)
    ]


def recall_table(
    sims: list[torch.Tensor],
    split: str,
    captions_per_image: int,
    protocol: str | None = None,
    fused_levels: Sequence[int] | None = None,
    row: str = "level",
) -> dict[str, float]:
    """Metrics of each level alone (``{split}[/{protocol}]/level{k}/...``) and of the sum of the
    ``fused_levels`` (1-based; all levels for ``None``) under no level part (``{split}/rsum``).

    ``row="model"``: ``sims`` are the fused scores of an ensemble's members (``.../model{m}/...``)
    and the unnamed row is their sum, which ranks every pair as their mean does (see
    :mod:`hat.engine.ensemble`)."""
    metrics: dict[str, float] = {}
    for level, level_sims in enumerate(sims, start=1):
        metrics |= prefixed(retrieval_recall(level_sims, captions_per_image), split, protocol, level, row)
    metrics |= prefixed(retrieval_recall(fuse_levels(sims, fused_levels), captions_per_image), split, protocol)
    return metrics


def fold_mean_table(
    sims: list[torch.Tensor],
    split: str,
    captions_per_image: int,
    protocol: str,
    folds: int,
    fused_levels: Sequence[int] | None = None,
    row: str = "level",
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
    width = size * captions_per_image  # a fold's captions
    tables = [
        recall_table(
            [s[f * size : (f + 1) * size, f * width : (f + 1) * width] for s in sims],
            split,
            captions_per_image,
            protocol,
            fused_levels,
            row,
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
    row: str = "level",
) -> dict[str, float]:
    """One :func:`fold_mean_table` per ``{protocol: folds}`` entry, or a plain table for ``None``."""
    if not protocols:
        return recall_table(sims, split, captions_per_image, None, fused_levels, row)
    metrics: dict[str, float] = {}
    for protocol, folds in protocols.items():
        metrics |= fold_mean_table(sims, split, captions_per_image, protocol, folds, fused_levels, row)
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

