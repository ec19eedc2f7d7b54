"""Training throughput: full steps (forward, hardest-negative loss, backward, Adam) of the real
model on random images and captions, with both encoders trained and with both frozen.

    python bench/train_step.py --model tiny --batch 32            # CPU
    python bench/train_step.py --model hat --batch 58             # GPU: Swin-B + BERT-base, bf16
    python bench/train_step.py --model hat --batch 58 --compile   # with torch.compile
    python bench/train_step.py --model hat --batch 58 --compile --compile-mode reduce-overhead   # + CUDA graphs

Models are built from conf/encoder/*.yaml with random weights (nothing is downloaded), HAT's
levels [4,10,12], i2t, lambda 9. Rows: samples/s (median over steps after warm-up) and peak GPU
memory. The step is hat.engine.step.training_step, the one train.py runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from common import mib, pick_device, report, synchronize  # noqa: E402
from hat.engine.step import training_step  # noqa: E402
from hat.losses import build_loss, loss_spec  # noqa: E402
from hat.models.hat import build_model  # noqa: E402
from hat.models.spec import model_spec  # noqa: E402
from hat.runtime import COMPILE_MODES, resolve_runtime  # noqa: E402


def model_config(name: str, image_size: int | None):
    cfg = OmegaConf.create({
        "encoder": OmegaConf.load(ROOT / "conf" / "encoder" / f"{name}.yaml"),
        "alignment": OmegaConf.load(ROOT / "conf" / "alignment" / "hat.yaml"),
        "loss": OmegaConf.load(ROOT / "conf" / "loss" / "hinge_hardest.yaml"),
    })
    cfg.encoder.pretrained = False
    if image_size:
        cfg.encoder.image.image_size = image_size
    return cfg


def throughput(cfg, runtime, batch: int, frozen: bool, steps: int, warmup: int) -> tuple[float, int]:
    """``(samples/s, peak GPU bytes)`` of ``steps`` training steps after ``warmup`` ones."""
    torch.manual_seed(0)
    model = build_model(model_spec(cfg)).to(runtime.device)
    model.set_encoders_frozen(frozen)
    loss_fn = build_loss(loss_spec(cfg.loss)).to(runtime.device)
    step_fn = runtime.compiled(model)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    scaler = runtime.grad_scaler()
    size = cfg.encoder.image.image_size
    width = cfg.encoder.text.max_length
    batch_data = {
        "images": torch.randn(batch, 3, size, size),
        "input_ids": torch.randint(1000, 2000, (batch, width)),
        "attention_mask": (torch.arange(width)[None, :] < torch.randint(8, width + 1, (batch, 1))).long(),
    }
    if runtime.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(runtime.device)
    times = []
    for index in range(warmup + steps):
        synchronize(runtime.device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        training_step(model, step_fn, loss_fn, batch_data, runtime, scaler)
        scaler.step(optimizer)
        scaler.update()
        synchronize(runtime.device)
        if index >= warmup:
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(runtime.device) if runtime.device.type == "cuda" else 0
    return batch / statistics.median(times), peak


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["hat", "tiny"], default="tiny")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--image-size", type=int, help="override the encoder's image size")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", help="auto (bf16 on GPUs, fp32 on CPUs), bf16, fp16, fp32")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--compile-mode", default="default", choices=COMPILE_MODES, help="torch.compile's mode")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    runtime = resolve_runtime(OmegaConf.create({
        "device": device.type, "precision": args.precision, "num_workers": 0, "pin_memory": False,
        "compile": args.compile, "compile_mode": args.compile_mode,
    }))
    cfg = model_config(args.model, args.image_size)
    rows = []
    for frozen in (False, True):
        rate, peak = throughput(cfg, runtime, args.batch, frozen, args.steps, args.warmup)
        compiled = runtime.compile_mode if runtime.compile else "no"
        encoders = "frozen" if frozen else "trained"
        rows.append([args.model, args.batch, runtime.precision, compiled, encoders, rate, mib(peak)])
    settings = {"model": args.model, "image_size": cfg.encoder.image.image_size, "levels": list(cfg.alignment.levels),
                "steps": args.steps, "warmup": args.warmup}
    columns = ["model", "batch", "precision", "compile", "encoders", "samples/s", "peak GPU MiB"]
    report("train_step", device, settings, columns, rows, args.out)


if __name__ == "__main__":
    main()
