"""Data pipeline: training images/s of both decode paths, per DataLoader worker count, on JPEG
files the size of Flickr30K's (500 x 375).

    python bench/data_pipeline.py                       # workers 0, 1, 2
    python bench/data_pipeline.py --workers 0,4,8,16    # a GPU node

Rows: ``hardware.image_decode=cpu`` (workers decode, crop, flip, normalise: ``train_transform``);
``hardware.image_decode=device``, the workers' share (read the file, draw the crop from the JPEG
header) and the device's share (``EncodedImages.decode``: decode_jpeg, crop, resize, flip,
normalise on the benchmark's device, batched). Both go through the training code's
``PairDataset`` and ``CaptionCollator``. The images are written once to a temporary folder.
``per worker`` divides by the worker count (by 1 for the main process); at batch 58 and 800
samples/s a GPU needs 800 from the workers and, on the device path, from the decoder too.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import pick_device, report, synchronize  # noqa: E402
from hat.data.datasets import PairDataset, collate_images  # noqa: E402
from hat.data.device_decode import EncodedTrainCrop, read_jpeg_bytes  # noqa: E402
from hat.data.records import CaptionedImages, ImageRecord, load_image_file  # noqa: E402
from hat.data.transforms import train_transform  # noqa: E402

CROP_SCALE = (0.08, 1.0)


def image_batch(items):
    """The image half of ``CaptionCollator`` (captions are not what is measured)."""
    return collate_images([item[0] for item in items])


def write_images(folder: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        pixels = rng.integers(0, 255, (375, 500, 3), dtype=np.uint8)
        pixels = (pixels // 32 * 32).astype(np.uint8)  # some structure, so JPEG sizes are realistic
        path = folder / f"{index:05d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def training_pairs(paths: list[Path], image_decode: str, image_size: int) -> PairDataset:
    split = CaptionedImages("train", [ImageRecord(p.name, ("a caption",), p) for p in paths], 1, load_image_file)
    if image_decode == "device":
        return PairDataset(split, EncodedTrainCrop(image_size, CROP_SCALE), seed=0, read=read_jpeg_bytes)
    return PairDataset(split, train_transform(image_size, CROP_SCALE), seed=0)


def loader_rate(pairs: PairDataset, workers: int, batch: int) -> float:
    """Images/s out of a DataLoader, after its first batch (workers started and warm)."""
    loader = DataLoader(pairs, batch_size=batch, num_workers=workers, collate_fn=image_batch)
    start, seen = None, 0
    for index, images in enumerate(loader):
        if index == 0:
            start = time.perf_counter()
            continue
        seen += len(images)
    return seen / (time.perf_counter() - start)


def device_decode_rate(pairs: PairDataset, batch: int, device: torch.device) -> float:
    """Images/s of ``EncodedImages.decode`` on ``device``, the crops drawn beforehand."""
    batches = [image_batch([pairs[i] for i in range(first, min(first + batch, len(pairs)))])
               for first in range(0, len(pairs), batch)]
    batches[0].decode(device)  # warm-up: nvJPEG handles, kernels
    synchronize(device)
    start = time.perf_counter()
    for encoded in batches:
        encoded.decode(device)
    synchronize(device)
    return len(pairs) / (time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--device", default="auto", help="where the device path decodes: auto|cpu|cuda")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        paths = write_images(Path(folder), args.images)
        workers = [int(w) for w in args.workers.split(",")]
        for image_decode, what in (("cpu", "decode + crop in workers"), ("device", "read + draw crop in workers")):
            pairs = training_pairs(paths, image_decode, args.image_size)
            for count in workers:
                rate = loader_rate(pairs, count, args.batch)
                rows.append([f"image_decode={image_decode}: {what}, {count} workers", rate, rate / max(count, 1)])
        rate = device_decode_rate(training_pairs(paths, "device", args.image_size), args.batch, device)
        rows.append([f"image_decode=device: decode + crop on {device.type}", rate, rate])
    settings = {"images": args.images, "source": "500x375 JPEG q90", "image_size": args.image_size, "batch": args.batch}
    report("data_pipeline", device, settings, ["pipeline", "images/s", "per worker"], rows, args.out)


if __name__ == "__main__":
    main()
