"""Similarity of I images x C captions at some levels: hat.alignment against the per-caption loop.

    python bench/alignment.py                       # CPU size: I=100, C=500, R=196, W=32, d=256, float32
    python bench/alignment.py --size full           # Flickr30K test: 1000 x 5000, R=49,196,784, d=768, bf16
    python bench/alignment.py --methods blocked,triton --out bench/results/alignment.json

Methods: ``loop`` (bench/loop_reference.py), ``blocked`` (hat.alignment.scan_similarity, the
PyTorch path), ``triton`` (the fused kernel, CUDA only). Each row: median time of ``--repeats``
calls after a warm-up, peak memory, and the largest relative error against the loop (or, without
the loop, against ``blocked``) over the whole score matrix.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import measure, mib, pick_device, report  # noqa: E402
from loop_reference import loop_similarity  # noqa: E402

from hat.alignment import DEFAULT_BLOCK_ELEMENTS, scan_similarity  # noqa: E402

SIZES = {
    "cpu": dict(images=100, captions=500, regions=[196], words=32, dim=256, dtype="float32"),
    "full": dict(images=1000, captions=5000, regions=[49, 196, 784], words=32, dim=768, dtype="bfloat16"),
}


def features(images: int, captions: int, regions: int, words: int, dim: int, dtype: torch.dtype, device, seed=0):
    """Random unit-scale features and caption lengths in [words // 2, words]."""
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(images, regions, dim, generator=generator) / dim**0.5
    t = torch.randn(captions, words, dim, generator=generator) / dim**0.5
    lengths = torch.randint(words // 2, words + 1, (captions,), generator=generator)
    return v.to(device, dtype), t.to(device, dtype), lengths.to(device)


def method_fn(name: str, block_elements: int):
    if name == "loop":
        return lambda v, t, n, direction, smooth: loop_similarity(v, t, n, direction, smooth)
    if name == "blocked":
        return lambda v, t, n, direction, smooth: scan_similarity(v, t, n, direction, smooth, block_elements)
    if name == "triton":
        from hat.kernels.scan_triton import triton_scan_similarity

        return lambda v, t, n, direction, smooth: triton_scan_similarity(v, t, n, direction, smooth)
    raise SystemExit(f"unknown method {name!r}: expected loop, blocked or triton")


def relative_error(scores: torch.Tensor, reference: torch.Tensor) -> float:
    return ((scores.float() - reference.float()).abs().max() / reference.float().abs().max().clamp_min(1e-12)).item()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--methods", default="loop,blocked,triton")
    parser.add_argument("--directions", default="i2t,t2i")
    parser.add_argument("--images", type=int)
    parser.add_argument("--captions", type=int)
    parser.add_argument("--block-elements", type=int, default=DEFAULT_BLOCK_ELEMENTS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    device = pick_device(args.device)
    size = dict(SIZES[args.size])
    size["images"] = args.images or size["images"]
    size["captions"] = args.captions or size["captions"]
    dtype = getattr(torch, size["dtype"])
    methods = [m for m in args.methods.split(",") if m != "triton" or device.type == "cuda"]
    rows = []
    for regions in size["regions"]:
        v, t, lengths = features(size["images"], size["captions"], regions, size["words"], size["dim"], dtype, device)
        for direction in args.directions.split(","):
            reference = None
            for name in methods:
                fn = method_fn(name, args.block_elements)
                scores = fn(v, t, lengths, direction, 9.0)
                reference = scores if reference is None else reference
                timing = measure(lambda: fn(v, t, lengths, direction, 9.0), device, repeats=args.repeats)
                rows.append([regions, direction, name, timing["median_s"], mib(timing["peak_bytes"]),
                             relative_error(scores, reference)])
            del reference
    settings = {**size, "block_elements": args.block_elements, "repeats": args.repeats}
    report("alignment", device, settings, ["regions", "direction", "method", "median s", "peak MiB", "max rel err"], rows, args.out)


if __name__ == "__main__":
    main()
