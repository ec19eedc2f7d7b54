"""Data pipeline: images/s of the training transform (JPEG decode, RandomResizedCrop, flip,
normalise), per DataLoader worker count, on JPEG files the size of Flickr30K's (500 x 375).

    python bench/data_pipeline.py                       # workers 0, 1, 2
    python bench/data_pipeline.py --workers 0,4,8,16    # a GPU node
    python bench/data_pipeline.py --gpu-decode          # also torchvision.io.decode_jpeg on CUDA

The images are written once to a temporary folder. ``per worker`` divides by the worker count
(by 1 for the main process); a GPU at batch 58 and 800 samples/s needs the total to reach 800.
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
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import pick_device, report  # noqa: E402

from hat.data.transforms import train_transform  # noqa: E402


class JpegFolder(Dataset):
    def __init__(self, paths: list[Path], transform) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        with Image.open(self.paths[index]) as image:
            return self.transform(image.convert("RGB"))


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


def loader_rate(paths: list[Path], workers: int, batch: int, image_size: int) -> float:
    loader = DataLoader(JpegFolder(paths, train_transform(image_size, (0.5, 1.0), True)), batch_size=batch,
                        num_workers=workers, shuffle=False, persistent_workers=False)
    start, seen = None, 0
    for index, images in enumerate(loader):
        if index == 0:
            start = time.perf_counter()  # workers started and warm
            continue
        seen += images.shape[0]
    return seen / (time.perf_counter() - start)


def gpu_decode_rate(paths: list[Path], image_size: int, device: torch.device) -> float:
    """Files read on the CPU, decoded, cropped and resized on the GPU in batches."""
    from torchvision.io import decode_jpeg, read_file
    from torchvision.transforms.v2 import functional as F

    data = [read_file(str(p)) for p in paths]
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for first in range(0, len(data), 64):
        decoded = decode_jpeg(data[first : first + 64], device=device)
        batch = torch.stack([F.resized_crop(img, 20, 30, 300, 400, [image_size, image_size]) for img in decoded])
        F.normalize(batch.float() / 255, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    torch.cuda.synchronize(device)
    return len(data) / (time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--gpu-decode", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    device = pick_device("auto")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        paths = write_images(Path(folder), args.images)
        for workers in (int(w) for w in args.workers.split(",")):
            rate = loader_rate(paths, workers, args.batch, args.image_size)
            rows.append([f"DataLoader, {workers} workers", rate, rate / max(workers, 1)])
        if args.gpu_decode:
            if device.type != "cuda":
                raise SystemExit("--gpu-decode needs a CUDA GPU")
            rate = gpu_decode_rate(paths, args.image_size, device)
            rows.append(["decode_jpeg + crop on the GPU", rate, rate])
    settings = {"images": args.images, "source": "500x375 JPEG q90", "image_size": args.image_size, "batch": args.batch}
    report("data_pipeline", device, settings, ["pipeline", "images/s", "per worker"], rows, args.out)


if __name__ == "__main__":
    main()
