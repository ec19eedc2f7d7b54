"""torch datasets over a :class:`~hat.data.records.CaptionedImages` split, and the caption collator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from hat.data.device_decode import EncodedCrop, EncodedImages
from hat.data.records import CaptionedImages, ImageRecord

_SEED_MODULUS = 2**63 - 1


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The random seed of one sample's augmentation, a function of (seed, epoch, index) only."""
    return ((seed * 1_000_003 + epoch) * 10_000_019 + index) % _SEED_MODULUS


class PairDataset(Dataset):
    """Every image-caption pair once per epoch: pair ``p`` is caption ``p % K`` of image ``p // K``.

    Items are ``(transform(read(record)), caption str, image index)``: by default ``read`` is the
    split's image loader and the transform gives a ``(3, S, S)`` tensor; the device-decode path
    reads file bytes instead (:mod:`hat.data.device_decode`). The augmentation of a pair depends
    only on ``(seed, epoch, p)``, not on which worker or process draws it, so runs and resumed
    runs see the same crops. With ``first_captions=True`` item ``i`` is pair ``i * K`` (the first
    caption of image ``i``) and there are as many items as images: ``train.overfit_batches`` trains
    on those, so that no batch holds two captions of one image (each the other's negative, which
    keeps a hinge loss above a floor however well the model fits).
    """

    def __init__(
        self, split: CaptionedImages, transform: Callable, seed: int, read: Callable[[ImageRecord], Any] | None = None,
        first_captions: bool = False,
    ) -> None:
        self.split = split
        self.transform = transform
        self.seed = seed
        self.read = read or split.load_image
        self.epoch = 0
        self.stride = split.captions_per_image if first_captions else 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.split.num_pairs // self.stride

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str, int]:
        pair = index * self.stride
        image_index, caption_index = divmod(pair, self.split.captions_per_image)
        record = self.split.records[image_index]
        source = self.read(record)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.epoch, pair))
            image = self.transform(source)
        return image, record.captions[caption_index], image_index


class ImageDataset(Dataset):
    """Each image of a split once (for evaluation): items are ``(image (3, S, S), image index)``."""

    def __init__(self, split: CaptionedImages, transform: Callable) -> None:
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.split.load_image(self.split.records[index])), index


class EpochShuffleSampler(Sampler[int]):
    """This process's share of a permutation of ``range(size)`` that depends only on ``(seed, epoch)``.

    The permutation is cut into global batches of ``batch_size * world_size`` (a last partial one is
    dropped); rank ``r`` takes the ``r``-th slice of ``batch_size`` of each, so the ranks' batches,
    concatenated in rank order, are exactly the batches of one process with the global batch.
    ``set_epoch(epoch, skip_batches=k)`` starts after ``k`` batches, so that a run resumed
    mid-epoch sees exactly the samples it had not seen yet. ``max_batches`` ends every epoch after
    that many batches (a debugging limit; the permutation still covers all of ``range(size)``).
    """

    def __init__(self, size: int, seed: int, batch_size: int = 1, rank: int = 0, world_size: int = 1,
                 max_batches: int | None = None) -> None:
        self.size = size
        self.seed = seed
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.max_batches = max_batches
        self.epoch = 0
        self.skip_batches = 0

    @property
    def batches_per_epoch(self) -> int:
        whole = self.size // (self.batch_size * self.world_size)
        return whole if self.max_batches is None else min(whole, self.max_batches)

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch = epoch
        self.skip_batches = skip_batches

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.skip_batches) * self.batch_size

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator)
        batches = order[: self.batches_per_epoch * self.batch_size * self.world_size].view(
            self.batches_per_epoch, self.world_size, self.batch_size
        )
        return iter(batches[self.skip_batches :, self.rank].flatten().tolist())


def collate_images(images: list) -> torch.Tensor | EncodedImages:
    """A batch of ``PairDataset`` images: ``(B, 3, S, S)`` stacked, or packed encoded crops."""
    if isinstance(images[0], EncodedCrop):
        return EncodedImages.from_crops(images)
    return torch.stack(images)


class CaptionCollator:
    """Batches ``PairDataset`` items, tokenising captions to at most ``max_length`` tokens.

    Returns a dict: ``images (B, 3, S, S)`` (an :class:`~hat.data.device_decode.EncodedImages`
    when the items hold encoded crops), ``input_ids (B, W)``, ``attention_mask (B, W)`` with
    ``W`` the longest caption in the batch (``max_length`` with ``pad_to_max_length``, which
    processes that gather captions need), and ``image_index (B,)``.
    """

    def __init__(self, tokenizer, max_length: int, pad_to_max_length: bool = False) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.padding = "max_length" if pad_to_max_length else True

    def tokenize(self, captions: list[str]) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer(
            captions, padding=self.padding, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}

    def __call__(self, items: list[tuple[torch.Tensor, str, int]]) -> dict[str, torch.Tensor]:
        images, captions, image_index = zip(*items)
        return {
            "images": collate_images(list(images)),
            **self.tokenize(list(captions)),
            "image_index": torch.tensor(image_index),
        }
