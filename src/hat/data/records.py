"""The record form every dataset is served in: a split is a list of images with their captions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class ImageRecord:
    """One image and its captions.

    ``path`` names the image file for datasets on disk; generated datasets leave it ``None`` and
    keep what is needed to draw the image in ``spec``.
    """

    key: str
    captions: tuple[str, ...]
    path: Path | None = None
    spec: dict = field(default_factory=dict, compare=False, hash=False)


SplitRecords = dict[str, list[ImageRecord]]
"""The records of each split, keyed by ``SPLIT_NAMES``, before they become :class:`CaptionedImages`."""


@dataclass(frozen=True)
class CaptionedImages:
    """One split of a retrieval dataset.

    Caption ``c`` of the flattened caption list (:meth:`captions`) belongs to image
    ``c // captions_per_image``; every record holds exactly ``captions_per_image`` captions.
    """

    name: str
    records: Sequence[ImageRecord]
    captions_per_image: int
    load_image: Callable[[ImageRecord], Image.Image]

    def __post_init__(self) -> None:
        for index, record in enumerate(self.records):
            if len(record.captions) != self.captions_per_image:
                raise ValueError(
                    f"split {self.name!r}: image {record.key!r} (index {index}) has "
                    f"{len(record.captions)} captions, expected {self.captions_per_image}"
                )

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_pairs(self) -> int:
        return len(self.records) * self.captions_per_image

    def captions(self) -> list[str]:
        """All captions, image by image: ``(N * captions_per_image,)`` strings."""
        return [caption for record in self.records for caption in record.captions]

    def subset(self, num_images: int | None) -> CaptionedImages:
        """The first ``num_images`` images (all of them for ``None``)."""
        if num_images is None or num_images >= len(self.records):
            return self
        return CaptionedImages(self.name, self.records[:num_images], self.captions_per_image, self.load_image)


def load_image_file(record: ImageRecord) -> Image.Image:
    """Open ``record.path`` as RGB; the error names the file when it is missing or unreadable."""
    try:
        with Image.open(record.path) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as error:
        raise OSError(f"cannot read image {record.path} (record {record.key!r}): {error}") from error
