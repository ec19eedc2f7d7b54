"""The record form every dataset is served in: a split is a list of images with their captions."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class ImageRecord:
    """One image and its captions.

    ``path`` names the image file for datasets on disk; generated datasets leave it ``None`` and
    keep what is needed to draw the image in ``spec``. ``entry`` names the annotation entry a record
    on disk was read from, for messages (``images[3] of FILE``).
    """

    key: str
    captions: tuple[str, ...]
    path: Path | None = None
    spec: dict = field(default_factory=dict, compare=False, hash=False)
    entry: str = field(default="", compare=False)


SplitRecords = dict[str, list[ImageRecord]]
"""The records of each split, keyed by ``SPLIT_NAMES``, before they become :class:`CaptionedImages`."""


def duplicate_images(records: SplitRecords) -> list[str]:
    """One problem per image file listed more than once in a split, and one per file in several splits.

    Within a split the problem names every entry (:attr:`ImageRecord.entry`) listing the file: a
    duplicate weighs twice in training, and in evaluation its captions match two images, one of
    them counted wrong. Across splits it names the splits and an entry in each: a file in train and
    in val or test leaks evaluation images into training. Files are the same when their paths are;
    copies under other names are not looked for (that would mean reading every file).
    """
    entries: dict[Path, dict[str, list[str]]] = {}
    for split, split_records in records.items():
        for record in split_records:
            entries.setdefault(record.path, {}).setdefault(split, []).append(record.entry)
    problems = []
    for path, by_split in entries.items():
        problems += [
            f"{path}: listed {len(listed)} times in the {split} split ({', '.join(listed)}); "
            f"each image must be listed once"
            for split, listed in by_split.items()
            if len(listed) > 1
        ]
        if len(by_split) > 1:
            places = " and ".join(f"the {split} split ({listed[0]})" for split, listed in by_split.items())
            problems.append(f"{path}: in {places}; the splits must not share images")
    return problems


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


class BadImageError(OSError):
    """An image file that cannot be used: missing, empty, not an image, truncated or corrupt, or a
    possible decompression bomb. The message reads ``"PATH: REASON"``; ``path`` and ``reason`` hold the parts.

    :func:`load_image_file` raises it, in DataLoader workers too, so a train image that fails
    during training can be caught by type. It can be rebuilt from its message alone (``path`` is
    then ``None`` and ``reason`` the message), as torch's DataLoader does to re-raise a worker's
    error in the training process, the worker's traceback added to the message.
    """

    def __init__(self, message: str, path: Path | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason or message

    @classmethod
    def at(cls, path: Path, reason: str) -> BadImageError:
        return cls(f"{path}: {reason}", path, reason)


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be an image file by its ``stat`` alone (missing, not a file, empty), or ``None``."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "image file missing"
    except OSError as error:
        return f"cannot stat the image file: {error.strerror or error}"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    return "empty file (0 bytes)" if info.st_size == 0 else None


def load_image_file(record: ImageRecord) -> Image.Image:
    """``record.path`` decoded as RGB.

    Raises :class:`BadImageError` naming the file and why it cannot be used: missing, empty or not
    a file (:func:`file_problem`), unreadable, not an image PIL reads, truncated or corrupt, or a
    possible decompression bomb: more pixels than ``PIL.Image.MAX_IMAGE_PIXELS``, refused also
    where PIL would only warn.
    """
    path = record.path
    why = file_problem(path)
    if why is not None:
        raise BadImageError.at(path, why)
    try:
        with Image.open(path) as image:
            why = _pixels_problem(image.size)
            if why is None:
                return image.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:  # the warning where filters raise
        raise BadImageError.at(path, f"possible decompression bomb: {error}") from error
    except Image.UnidentifiedImageError as error:
        raise BadImageError.at(path, "not an image file PIL can read") from error
    except (OSError, ValueError) as error:
        raise BadImageError.at(path, f"does not decode: {error}") from error
    raise BadImageError.at(path, why)  # more pixels than the limit, where PIL only warned


def _pixels_problem(size: tuple[int, int]) -> str | None:
    """Why an image of ``size`` is refused as a possible decompression bomb, or ``None`` when within the limit."""
    limit = Image.MAX_IMAGE_PIXELS
    width, height = size
    if limit is None or width * height <= limit:
        return None
    return (
        f"{width}x{height} pixels exceeds the decompression-bomb limit of {limit} pixels (PIL.Image.MAX_IMAGE_PIXELS)"
    )
