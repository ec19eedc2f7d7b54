"""When :func:`hat.alignment.scan_similarity` hands its work to the fused Triton kernel, and how."""

from __future__ import annotations

import functools
import logging

import torch

log = logging.getLogger(__name__)


@functools.cache
def triton_similarity():
    """The fused kernel's entry point, or None (logged once) when Triton is not installed."""
    try:
        from hat.kernels.scan_triton import triton_scan_similarity
    except ImportError as error:
        log.info("the fused similarity kernel is unavailable (%s): scoring with the PyTorch path", error)
        return None
    return triton_scan_similarity


def fused_kernel_applies(images: torch.Tensor, captions: torch.Tensor) -> bool:
    """CUDA inputs of one dtype that need no gradient, with Triton installed."""
    needs_grad = torch.is_grad_enabled() and (images.requires_grad or captions.requires_grad)
    return images.is_cuda and not needs_grad and images.dtype == captions.dtype and triton_similarity() is not None


def fused_similarity(images, captions, lengths, direction: str, smooth: float) -> torch.Tensor:
    """The Triton kernel; under autocast the inputs take the autocast dtype, as the products would."""
    kernel = triton_similarity()
    if kernel is None:
        raise RuntimeError("kernel='triton' needs Triton (pip install triton)")
    device = images.device.type
    if torch.is_autocast_enabled(device) and images.dtype == torch.float32:
        dtype = torch.get_autocast_dtype(device)
        images, captions = images.to(dtype), captions.to(dtype)
    return kernel(images, captions, lengths, direction, smooth)
