"""torch datasets over a :class:`~hat.data.records.CaptionedImages` split, and the caption collator."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Dataset, Sampler

from hat.data.records import CaptionedImages

_SEED_MODULUS = 2**63 - 1


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The random seed of one sample's augmentation, a function of (seed, epoch, index) only."""
    return ((seed * 1_000_003 + epoch) * 10_000_019 + index) % _SEED_MODULUS


class PairDataset(Dataset):
    """Every image-caption pair once per epoch: pair ``p`` is caption ``p % K`` of image ``p // K``.

    Items are ``(image (3, S, S), caption str, image index)``. The augmentation of a pair depends
    only on ``(seed, epoch, p)``, not on which worker or process draws it, so runs and resumed
    runs see the same crops.
    """

    def __init__(self, split: CaptionedImages, transform: Callable, seed: int) -> None:
        self.split = split
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.split.num_pairs

    def __getitem__(self, pair: int) -> tuple[torch.Tensor, str, int]:
        image_index, caption_index = divmod(pair, self.split.captions_per_image)
        record = self.split.records[image_index]
        image = self.split.load_image(record)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.epoch, pair))
            pixels = self.transform(image)
        return pixels, record.captions[caption_index], image_index


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
    """A permutation of ``range(size)`` that depends only on ``(seed, epoch)``.

    ``set_epoch(epoch, skip=k)`` starts the epoch's permutation at position ``k``, so that a run
    resumed mid-epoch sees exactly the samples it had not seen yet.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch = epoch
        self.skip = skip

    def __len__(self) -> int:
        return self.size - self.skip

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator)[self.skip :].tolist())


class CaptionCollator:
    """Batches ``PairDataset`` items, tokenising captions to at most ``max_length`` tokens.

    Returns a dict: ``images (B, 3, S, S)``, ``input_ids (B, W)``, ``attention_mask (B, W)`` with
    ``W`` the longest caption in the batch, and ``image_index (B,)``.
    """

    def __init__(self, tokenizer, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def tokenize(self, captions: list[str]) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer(
            captions, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}

    def __call__(self, items: list[tuple[torch.Tensor, str, int]]) -> dict[str, torch.Tensor]:
        images, captions, image_index = zip(*items)
        return {
            "images": torch.stack(images),
            **self.tokenize(list(captions)),
            "image_index": torch.tensor(image_index),
        }
