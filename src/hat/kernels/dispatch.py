"""When :func:`hat.alignment.scan_similarity` hands its work to the fused Triton kernel, and how.

``kernel`` (``eval.kernel`` in the configs) takes one of :data:`KERNELS`:

- ``auto``: scores that need no gradient, of CUDA tensors in float32, float16 or bfloat16, go to
  the kernel once it has passed its self-check (:mod:`hat.kernels.self_check`) for the call's
  device, dtype, direction, regions, caption width and feature size, each checked the first time
  it is seen. The first failure (a compile or launch error, scores off the PyTorch path's, or an
  error of any later call) logs one warning and sends every later call of the process to the
  PyTorch path; a pass logs at DEBUG only.
- ``torch``: always the PyTorch path.
- ``triton``: always the kernel, unchecked; an error of the kernel is raised, never replaced.

:data:`FUSED` holds what the process knows of the kernel. The tests put in their own
:class:`FusedKernel`, with another kernel or serving CPU tensors through Triton's interpreter.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable

import torch

from hat.checks import ConfigError, show
from hat.kernels.self_check import Similarity, describe_error, self_check

log = logging.getLogger(__name__)

KERNELS = ("auto", "torch", "triton")
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
CHOICES = "eval.kernel=torch skips the kernel, eval.kernel=triton forces it; hat.load takes kernel='torch' or 'triton'"


@functools.cache
def triton_similarity() -> Similarity | None:
    """The fused kernel's entry point, or None (logged once) when Triton is not installed."""
    try:
        from hat.kernels.scan_triton import triton_scan_similarity
    except ImportError as error:
        log.info("the fused similarity kernel is unavailable (%s): scoring with the PyTorch path", error)
        return None
    return triton_scan_similarity


def interpreting() -> bool:
    """Whether Triton runs its kernels on the CPU through its interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def needs_gradient(images: torch.Tensor, captions: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and (images.requires_grad or captions.requires_grad)


def check_kernel_choice(kernel, device: torch.device | None = None, field: str = "eval.kernel") -> str:
    """``kernel`` if it is one of :data:`KERNELS` and, for ``triton``, ``device`` (when given) is one
    the kernel runs on (CUDA, or any under Triton's interpreter); else a :class:`ConfigError` naming ``field``."""
    if kernel not in KERNELS:
        raise ConfigError(f"{field}={show(kernel)} is not one of {KERNELS} (auto: the fused Triton kernel on CUDA "
                          f"once it passes a self-check; torch: the PyTorch path; triton: the kernel, unchecked)")
    if kernel == "triton" and device is not None and device.type != "cuda" and not interpreting():
        raise ConfigError(f"{field}=triton runs the fused Triton kernel, which needs a CUDA GPU, but scoring runs "
                          f"on {device}; use {field}=auto or {field}=torch")
    return kernel


class FusedKernel:
    """The fused kernel (from ``load``, called on first use; None: not installed) and this process's
    verdicts on it: the shapes that passed the self-check, and the first failure, if any.
    ``devices``: the device types ``auto`` sends to it (CUDA; the tests add the CPU)."""

    def __init__(self, load: Callable[[], Similarity | None], devices: tuple[str, ...] = ("cuda",)) -> None:
        self.load = load
        self.devices = devices
        self.passed: set[tuple] = set()
        self.failure: str | None = None

    def applies(self, images: torch.Tensor, captions: torch.Tensor) -> bool:
        """Whether ``auto`` tries the kernel: inputs on one of :attr:`devices`, of one kernel dtype,
        needing no gradient, outside torch.compile, with the kernel installed and not failed."""
        return (
            self.failure is None
            and images.device.type in self.devices
            and images.dtype == captions.dtype
            and images.dtype in KERNEL_DTYPES
            and not needs_gradient(images, captions)
            and not torch.compiler.is_compiling()
            and self.load() is not None
        )

    def auto(self, images, captions, lengths, direction: str, smooth: float, reference: Similarity):
        """``(I, C)`` scores from the kernel after its self-check against ``reference`` (the PyTorch
        path) for this call's shape, or None when the kernel failed (logged once): the caller then
        scores with the PyTorch path."""
        images, captions = _autocast_inputs(images, captions)
        shape = (images.shape[1], captions.shape[1], images.shape[2])
        key = (str(images.device), images.dtype, direction, *shape)
        if key not in self.passed:
            problem = self_check(self.load(), reference, shape, images.dtype, images.device, direction, smooth)
            if problem is not None:
                self._fail(f"failed its self-check on {_where(key)}: {problem}")
                return None
            log.debug("the fused Triton similarity kernel passed its self-check on %s", _where(key))
            self.passed.add(key)
        try:
            return self.load()(images, captions, lengths, direction, smooth)
        except Exception as error:  # noqa: BLE001 - the PyTorch path scores the call instead
            log.debug("the fused kernel's error", exc_info=True)
            self._fail(f"raised {describe_error(error)} on {_where(key)}")
            return None

    def strict(self, images, captions, lengths, direction: str, smooth: float) -> torch.Tensor:
        """``(I, C)`` scores from the kernel, unchecked (``kernel="triton"``); what keeps it from
        scoring raises, with the way back to the PyTorch path."""
        kernel = self.load()
        if kernel is None:
            raise RuntimeError("kernel='triton' (eval.kernel=triton) needs Triton: pip install triton, "
                               "or use eval.kernel=auto or torch")
        check_kernel_choice("triton", images.device, field="kernel")
        if needs_gradient(images, captions):
            raise ValueError("kernel='triton' computes no gradient: score tensors that need one with kernel='auto' "
                             "or 'torch'")
        images, captions = _autocast_inputs(images, captions)
        try:
            return kernel(images, captions, lengths, direction, smooth)
        except Exception as error:
            where = _where((str(images.device), images.dtype, direction, images.shape[1], captions.shape[1],
                            images.shape[2]))
            raise RuntimeError(f"the fused Triton similarity kernel failed on {where} with eval.kernel=triton "
                               f"(kernel='triton'): {describe_error(error)}; eval.kernel=auto checks the kernel "
                               f"and scores with the PyTorch path when it fails, eval.kernel=torch never uses it"
                               ) from error

    def _fail(self, what: str) -> None:
        self.failure = what
        log.warning("the fused Triton similarity kernel %s; this process scores with the PyTorch path from now on "
                    "(%s)", what, CHOICES)


FUSED = FusedKernel(triton_similarity)


def _autocast_inputs(images: torch.Tensor, captions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Under autocast, float32 inputs take the autocast dtype, as the PyTorch path's products would."""
    device = images.device.type
    if torch.is_autocast_enabled(device) and images.dtype == torch.float32:
        dtype = torch.get_autocast_dtype(device)
        return images.to(dtype), captions.to(dtype)
    return images, captions


def _where(key: tuple) -> str:
    device, dtype, direction, regions, width, dim = key
    return (f"{device} ({str(dtype).removeprefix('torch.')}, {direction}, "
            f"{regions} regions x {width} words x {dim} features)")
