"""Training images decoded and cropped on the training device (``hardware.image_decode=device``).

The DataLoader workers only read each JPEG file's bytes and its size from the header, and draw
the RandomResizedCrop box and the flip from the sample's seed exactly as
:func:`~hat.data.transforms.train_transform` draws them, so both paths crop the same region. The
training step then decodes the whole batch with torchvision's ``decode_jpeg`` on the device
(nvJPEG on a GPU, in one batched call), crops, resizes with antialiasing, flips and normalises
there. Pixels differ from the CPU path only by the decoders' and resamplers' rounding.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import accumulate
from pathlib import Path

import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as F

from hat.data.records import ImageRecord
from hat.data.transforms import IMAGENET_MEAN, IMAGENET_STD

IMAGE_DECODE = ("cpu", "device")


@dataclass(frozen=True)
class EncodedCrop:
    """One training image before decoding: the file's bytes and where to crop it.

    ``data`` is the JPEG file; ``box`` is ``(top, left, height, width)`` in the decoded image's
    pixels, resized to ``size x size``; ``flip`` says whether to mirror it left to right;
    ``path`` names the file in errors.
    """

    data: bytes
    box: tuple[int, int, int, int]
    size: int
    flip: bool
    path: Path


def read_jpeg_bytes(record: ImageRecord) -> tuple[bytes, Path]:
    """The bytes of ``record``'s image file; the error names the file when it cannot be read."""
    try:
        return Path(record.path).read_bytes(), record.path
    except OSError as error:
        raise OSError(f"cannot read image {record.path} (record {record.key!r}): {error}") from error


class EncodedTrainCrop:
    """The device path's train transform: ``(bytes, path)`` -> :class:`EncodedCrop`.

    Draws from torch's global generator what ``train_transform(image_size, crop_scale, hflip)``
    draws, in the same order, so under the same seed it picks the same box and flip.
    """

    def __init__(self, image_size: int, crop_scale: Sequence[float] = (0.08, 1.0), hflip: bool = True) -> None:
        self.image_size = image_size
        self.crop = T.RandomResizedCrop(image_size, scale=tuple(crop_scale))  # its scale and ratio, not its pixels
        self.hflip = hflip

    def __call__(self, source: tuple[bytes, Path]) -> EncodedCrop:
        data, path = source
        try:
            with Image.open(io.BytesIO(data)) as header:  # reads the header only, decodes nothing
                if header.format != "JPEG":
                    raise OSError(f"is {header.format}, not JPEG")
                box = self.crop.get_params(header, self.crop.scale, self.crop.ratio)
        except OSError as error:
            raise OSError(
                f"cannot use image {path} with hardware.image_decode=device (JPEG files only): {error}"
            ) from error
        flip = self.hflip and bool(torch.rand(1) < 0.5)
        return EncodedCrop(data, tuple(box), self.image_size, flip, path)


@dataclass
class EncodedImages:
    """A batch of :class:`EncodedCrop` as the collator hands it to the training step.

    The files' bytes are packed in one ``(sum of file sizes,)`` uint8 ``buffer``, so a batch
    crosses from a worker process as one shared-memory block and is pinned as one; file ``i`` is
    ``buffer[ends[i-1]:ends[i]]``. :meth:`decode` turns the batch into the ``(B, 3, S, S)``
    normalised float tensor the CPU path would have produced.
    """

    buffer: torch.Tensor
    ends: list[int]
    boxes: list[tuple[int, int, int, int]]
    flips: list[bool]
    paths: list[Path]
    size: int

    @classmethod
    def from_crops(cls, crops: list[EncodedCrop]) -> EncodedImages:
        """Pack crops drawn by one :class:`EncodedTrainCrop` (one output size)."""
        buffer = torch.frombuffer(bytearray(b"".join(crop.data for crop in crops)), dtype=torch.uint8)
        ends = list(accumulate(len(crop.data) for crop in crops))
        boxes, flips, paths = [c.box for c in crops], [c.flip for c in crops], [c.path for c in crops]
        return cls(buffer, ends, boxes, flips, paths, crops[0].size)

    def __len__(self) -> int:
        return len(self.ends)

    def pin_memory(self) -> EncodedImages:
        """Called by the DataLoader with ``pin_memory=True``."""
        return replace(self, buffer=self.buffer.pin_memory())

    def decode(self, device: torch.device) -> torch.Tensor:
        """Decode, crop, resize, flip and normalise on ``device``: ``(B, 3, S, S)`` float32.

        Raises ``RuntimeError`` naming the batch's files when the decoder rejects one of them.
        """
        files = [self.buffer[start:end] for start, end in zip([0, *self.ends[:-1]], self.ends)]
        try:
            decoded = decode_jpeg(files, mode=ImageReadMode.RGB, device=device)
        except RuntimeError as error:
            names = ", ".join(str(path) for path in self.paths)
            raise RuntimeError(f"decode_jpeg on {device} failed for one of these files: {names}: {error}") from error
        images = []
        for (top, left, height, width), flip, pixels in zip(self.boxes, self.flips, decoded):
            image = F.resized_crop(pixels.float(), top, left, height, width, [self.size, self.size], antialias=True)
            images.append(image.flip(-1) if flip else image)
        batch = torch.stack(images).clamp_(0, 255).div_(255)
        return F.normalize(batch, IMAGENET_MEAN, IMAGENET_STD, inplace=True)


def images_on(images: torch.Tensor | EncodedImages, device: torch.device) -> torch.Tensor:
    """A batch's images on ``device``: moved when decoded by the workers, decoded there when encoded."""
    if isinstance(images, EncodedImages):
        return images.decode(device)
    return images.to(device, non_blocking=True)
