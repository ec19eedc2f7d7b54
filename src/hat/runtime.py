"""Device, precision, autocast and CPU threads resolved from the ``hardware`` config."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch

from hat.kernels.dispatch import check_kernel_choice
from hat.threads import apply_threads

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    """Where and in which precision a run computes, and by which path scores without gradient are
    computed (``kernel``: ``eval.kernel``, see :mod:`hat.kernels.dispatch`)."""

    device: torch.device
    precision: str  # bf16 | fp16 | fp32
    num_workers: int
    pin_memory: bool
    compile: bool
    compile_mode: str = "default"
    threads: int | None = None  # torch's compute threads, set by resolve_runtime (None: left as torch had them)
    kernel: str = "auto"  # auto | torch | triton

    def autocast(self):
        """Autocast to bf16/fp16 for this device; a no-op context for fp32."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_DTYPES[self.precision])

    def compiled(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` through ``torch.compile`` in :attr:`compile_mode` when compiling, else itself."""
        return torch.compile(module, mode=self.compile_mode) if self.compile else module

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A GradScaler, enabled only for fp16."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 on GPUs that support it, else fp16, and fp32 on the CPU; others unchanged."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def resolve_runtime(cfg, local_rank: int = 0, kernel: str = "auto") -> Runtime:
    """``device: auto`` takes the GPU when there is one (``cuda:local_rank`` under torchrun);
    ``precision: auto`` is bf16 on GPUs that support it, else fp16, and fp32 on the CPU.
    ``torch.compile`` is never used on the CPU. ``threads`` sets this process's compute threads
    (:func:`hat.threads.apply_threads`, which logs the choice); a config without the key (written
    before it existed, or built by hand) leaves torch's thread count as it is. ``kernel``:
    ``eval.kernel`` (``triton`` on a device the kernel does not run on raises ConfigError)."""
    kind = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    device = torch.device(kind, local_rank) if kind == "cuda" else torch.device(kind)
    precision = resolve_precision(cfg.precision, device)
    compile_model = bool(cfg.compile)
    if compile_model and device.type == "cpu":
        log.warning("hardware.compile=true is ignored on the CPU")
        compile_model = False
    pin_memory = device.type == "cuda" if cfg.pin_memory == "auto" else bool(cfg.pin_memory)
    mode = cfg.get("compile_mode", "default")
    threads = apply_threads(cfg.threads, int(cfg.num_workers)).threads if "threads" in cfg else None
    check_kernel_choice(kernel, device)
    return Runtime(device, precision, int(cfg.num_workers), pin_memory, compile_model, mode, threads, kernel)
