"""The fused kernel's self-check: before ``kernel="auto"`` trusts the kernel with a shape, it scores
a small block with the kernel and with the PyTorch path and compares (docs/model.md, "The fused
Triton kernel").

The block has the call's regions, caption width, feature size, dtype and device, so the kernel
compiles the variant the call will use; its features are random (fixed seed), its captions take
several lengths (the full width and one word among them) and their padding holds a large value, so
a kernel that reads padding as words is far off. The PyTorch path scores the same (rounded) inputs
in float64 without autocast: the kernel reads half inputs exactly and accumulates in float32, so
the two agree to float32 rounding and the tolerance stays tight.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Similarity = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, str, float], torch.Tensor]

CHECK_IMAGES = 2
CHECK_CAPTIONS = 5  # the kernel scores captions 4 at a time: a full and a partial block
PADDING_VALUE = 1e4  # what the padding words hold (float16's range reaches 65504)
# |kernel - reference| <= tolerance * (1 + |reference|); the kernel's own error is about 1e-7.
TOLERANCES = {torch.float32: 1e-4, torch.float16: 1e-3, torch.bfloat16: 1e-3}


def check_inputs(
    regions: int, width: int, dim: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images ``(CHECK_IMAGES, regions, dim)``, captions ``(CHECK_CAPTIONS, width, dim)`` of
    ``dtype`` on ``device`` (padding set to :data:`PADDING_VALUE`) and their ``(CHECK_CAPTIONS,)``
    lengths in ``[1, width]``, the first ``width`` and the second 1."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(CHECK_IMAGES, regions, dim, generator=generator)
    captions = torch.randn(CHECK_CAPTIONS, width, dim, generator=generator)
    lengths = torch.randint(1, width + 1, (CHECK_CAPTIONS,), generator=generator)
    lengths[0], lengths[1] = width, 1
    captions[torch.arange(width)[None, :] >= lengths[:, None]] = PADDING_VALUE
    return images.to(device, dtype), captions.to(device, dtype), lengths.to(device)


def self_check(
    kernel: Similarity,
    reference: Similarity,
    shape: tuple[int, int, int],
    dtype: torch.dtype,
    device: torch.device,
    direction: str,
    smooth: float,
) -> str | None:
    """None when ``kernel`` scores a check block of ``shape`` (regions, caption width, feature size),
    ``dtype`` and ``device`` within :data:`TOLERANCES` of ``reference`` (the PyTorch path);
    otherwise what went wrong, in one line: the error the kernel raised (compiling, launching or
    running), or how far its scores are off."""
    images, captions, lengths = check_inputs(*shape, dtype, device)
    try:
        got = kernel(images, captions, lengths, direction, smooth)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # an error of the launched kernel surfaces here
    except Exception as error:  # noqa: BLE001 - whatever the kernel raises, the PyTorch path can score instead
        return f"it raised {describe_error(error)}"
    with torch.autocast(device.type, enabled=False):
        expected = reference(images.double(), captions.double(), lengths, direction, smooth).float()
    if got.shape != expected.shape:
        return f"it returned scores of shape {tuple(got.shape)} where {tuple(expected.shape)} were expected"
    tolerance = TOLERANCES[dtype]
    got = got.float()
    if torch.isclose(got, expected, rtol=tolerance, atol=tolerance).all():
        return None
    worst = (got - expected).abs().nan_to_num(nan=float("inf")).max().item()
    return (f"its scores differ from the PyTorch path's by up to {worst:.3g} "
            f"(tolerance {tolerance:g} for {str(dtype).removeprefix('torch.')})")


def describe_error(error: BaseException) -> str:
    """``Type: message`` on one line, followed by ``<- Type: message`` for each cause. Triton's
    compile errors quote the kernel's source first and end with the cause (or a ``^`` under the
    failing column, the cause chained), so the last line that is not a caret is kept, cut at 300
    characters."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip().strip("^")]
    text = f"{type(error).__name__}: {lines[-1][:300]}" if lines else type(error).__name__
    cause = error.__cause__
    return text if cause is None else f"{text} <- {describe_error(cause)}"
