"""Similarity of I images x C captions at some levels: hat.alignment against the per-caption loop.

    python bench/alignment.py                       # CPU size: I=100, C=500, R=196, W=32, d=256, float32
    python bench/alignment.py --size full           # Flickr30K test: 1000 x 5000, R=49,196,784, d=768, bf16
    python bench/alignment.py --methods blocked,triton --out bench/results/alignment.json
    python bench/alignment.py --size full --regions 196 --captions 1000   # one level, fewer captions

Methods: ``loop`` (bench/loop_reference.py), ``blocked`` (hat.alignment.scan_similarity, the
PyTorch path), ``triton`` (the fused kernel, CUDA only). Each case runs in a fresh process. Each
row: median time of ``--repeats`` calls after a warm-up, peak memory of the warm-up call, and the
largest relative error against the first method over the whole score matrix.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import measure, mib, pick_device, report  # noqa: E402
from hat.alignment import scan_similarity  # noqa: E402
from loop_reference import loop_similarity  # noqa: E402

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


def method_fn(name: str, block_elements: int | None):
    if name == "loop":
        return lambda v, t, n, direction, smooth: loop_similarity(v, t, n, direction, smooth)
    if name == "blocked":
        return lambda v, t, n, direction, smooth: scan_similarity(v, t, n, direction, smooth, block_elements, "torch")
    if name == "triton":
        return lambda v, t, n, direction, smooth: scan_similarity(v, t, n, direction, smooth, kernel="triton")
    raise SystemExit(f"unknown method {name!r}: expected loop, blocked or triton")


def run_case(case: dict) -> None:
    """One method, level and direction in this (fresh) process: its scores go to ``case["scores"]``,
    its timing to stdout as JSON."""
    device = pick_device(case["device"])
    v, t, lengths = features(case["images"], case["captions"], case["regions"], case["words"], case["dim"],
                             getattr(torch, case["dtype"]), device)
    fn = method_fn(case["method"], case["block_elements"])
    first = []

    def score():
        scores = fn(v, t, lengths, case["direction"], 9.0)
        if not first:  # the warm-up call's scores are the ones compared
            first.append(scores.float().cpu())

    with torch.no_grad():
        timing = measure(score, device, repeats=case["repeats"])
    torch.save(first[0], case["scores"])
    print(json.dumps(timing))


def relative_error(scores: torch.Tensor, reference: torch.Tensor) -> float:
    return ((scores - reference).abs().max() / reference.abs().max().clamp_min(1e-12)).item()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--methods", default="loop,blocked,triton")
    parser.add_argument("--directions", default="i2t,t2i")
    parser.add_argument("--images", type=int)
    parser.add_argument("--captions", type=int)
    parser.add_argument("--regions", help="comma-separated region counts (default: the size's levels)")
    parser.add_argument("--block-elements", type=int, help="blocked's score block (default: by device)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: one case in a child process
    args = parser.parse_args(argv)
    if args.case:
        run_case(json.loads(args.case))
        return

    device = pick_device(args.device)
    size = dict(SIZES[args.size])
    size["images"] = args.images or size["images"]
    size["captions"] = args.captions or size["captions"]
    if args.regions:
        size["regions"] = [int(r) for r in args.regions.split(",")]
    methods = [m for m in args.methods.split(",") if m != "triton" or device.type == "cuda"]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for regions in size["regions"]:
            for direction in args.directions.split(","):
                reference = None
                for name in methods:
                    case = {**size, "regions": regions, "direction": direction, "method": name,
                            "device": str(device), "block_elements": args.block_elements, "repeats": args.repeats,
                            "scores": str(Path(folder) / "scores.pt")}
                    child = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)],
                                           capture_output=True, text=True, check=False)
                    if child.returncode:
                        raise SystemExit(f"{name} {direction} R={regions} failed:\n{child.stderr[-3000:]}")
                    timing = json.loads(child.stdout.strip().splitlines()[-1])
                    scores = torch.load(case["scores"])
                    reference = scores if reference is None else reference
                    rows.append([regions, direction, name, timing["median_s"], mib(timing["peak_bytes"]),
                                 relative_error(scores, reference)])
    settings = {**size, "block_elements": args.block_elements or "by device", "repeats": args.repeats}
    columns = ["regions", "direction", "method", "median s", "peak MiB", f"max rel err vs {methods[0]}"]
    report("alignment", device, settings, columns, rows, args.out)


if __name__ == "__main__":
    main()
