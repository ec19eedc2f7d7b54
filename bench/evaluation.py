"""Evaluation after encoding: score every image against every caption at HAT's three levels and
compute the recall tables, on synthetic features of Flickr30K and COCO-5K size.

    python bench/evaluation.py --images 100                 # CPU: 100 images x 500 captions per dataset shape
    python bench/evaluation.py                              # GPU: 1,000 x 5,000 (Flickr30K), 5,000 x 25,000 (COCO 5K)

Features are what hat.engine.evaluation keeps: each unique image once and each caption once, in
float16, on the evaluation device. The table gives the time of scoring plus recall, the features'
size, the peak device memory of the scoring (GPU) and the peak host memory of the process.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import mib, pick_device, report, synchronize  # noqa: E402
from hat.alignment import multi_level_similarity  # noqa: E402
from hat.engine.evaluation import protocol_tables  # noqa: E402

DATASETS = {"f30k": (1000, None), "coco5k": (5000, {"coco1k": 5, "coco5k": 1})}
REGIONS = (784, 196, 49)  # Swin stages 2, 3, 4 at 224 px
WORDS, DIM, PER_IMAGE = 32, 768, 5


def synthetic_features(num_images: int, dim: int, device: torch.device, seed: int = 0):
    """Per level: images ``(N, R, d)`` and captions ``(5N, 32, d)`` in float16, caption lengths ``(5N,)``.
    Caption k of image i is close to the image's mean feature, so the recall is far from chance."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    lengths = torch.randint(8, WORDS + 1, (num_images * PER_IMAGE,), generator=generator).to(device)
    images, captions = [], []
    for regions in REGIONS:
        topic = torch.randn(num_images, 1, dim, generator=generator)
        images.append((topic + torch.randn(num_images, regions, dim, generator=generator)).half().to(device))
        noise = torch.randn(num_images * PER_IMAGE, WORDS, dim, generator=generator)
        words = topic.repeat_interleave(PER_IMAGE, dim=0) + 2 * noise
        captions.append(words.half().to(device))
    return images, captions, lengths


@torch.no_grad()
def score_levels(images, captions, lengths, device: torch.device, tenth: bool = False) -> list[torch.Tensor]:
    """i2t scores per level, as evaluation computes them (float32 on the CPU, which has no half
    matmul worth timing). ``tenth``: a tenth of the images and captions, for a warm-up; at the real
    test sizes neither the counts nor their tenths are multiples of 16, so Triton specialises the
    warm-up's kernels as it will the timed ones."""
    if tenth:
        images = [x[: x.shape[0] // 10] for x in images]
        captions, lengths = [x[: x.shape[0] // 10] for x in captions], lengths[: lengths.shape[0] // 10]
    if device.type == "cpu":
        images, captions = [x.float() for x in images], [x.float() for x in captions]
    return multi_level_similarity(images, captions, lengths)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--datasets", default="f30k,coco5k")
    parser.add_argument("--images", type=int, help="images per dataset (default: the real test size)")
    parser.add_argument("--dim", type=int, default=DIM)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    rows = []
    for name in args.datasets.split(","):
        num_images, protocols = DATASETS[name]
        num_images = args.images or num_images
        if protocols and num_images % 5:
            protocols = None  # the 1K protocol needs five equal folds
        images, captions, lengths = synthetic_features(num_images, args.dim, device)
        feature_bytes = sum(x.numel() * x.element_size() for x in (*images, *captions))
        score_levels(images, captions, lengths, device, tenth=True)  # warm-up: Triton compiles its kernels
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        synchronize(device)
        start = time.perf_counter()
        sims = score_levels(images, captions, lengths, device)
        metrics = protocol_tables(sims, "test", PER_IMAGE, protocols)
        synchronize(device)
        seconds = time.perf_counter() - start
        peak_device = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
        peak_host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        rsum = next(value for key, value in metrics.items() if key.endswith("/rsum") and "level" not in key)
        rows.append([name, num_images, num_images * PER_IMAGE, seconds, mib(feature_bytes), mib(peak_device),
                     mib(peak_host), rsum])
        del images, captions, sims
    settings = {"regions": REGIONS, "words": WORDS, "dim": args.dim, "direction": "i2t", "features": "float16"}
    columns = ["dataset", "images", "captions", "score+recall s", "features MiB", "peak GPU MiB", "peak host MiB",
               "rsum"]
    report("evaluation", device, settings, columns, rows, args.out)


if __name__ == "__main__":
    main()
