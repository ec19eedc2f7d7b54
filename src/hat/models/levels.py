"""Which encoder layers each alignment level taps (issue 2, "Levels")."""

from __future__ import annotations

from collections.abc import Sequence

IMAGE_FAMILIES = ("swin", "vit", "cnn")


def default_image_levels(text_levels: Sequence[int], family: str, image_depth: int, text_depth: int) -> list[int]:
    """Image taps (1-based) paired with ``text_levels`` when ``alignment.image_levels`` is null.

    Swin and CNNs (stages): the last ``n`` stages for ``n`` text levels, so ``[4, 10, 12]`` pairs
    with Swin stages ``[2, 3, 4]``. ViT (layers): each text layer scaled to the image encoder's depth.
    """
    n = len(text_levels)
    if family in ("swin", "cnn"):
        if n > image_depth:
            raise ValueError(
                f"alignment.levels has {n} levels but the {family} image encoder has only "
                f"{image_depth} stages; give alignment.image_levels explicitly"
            )
        return list(range(image_depth - n + 1, image_depth + 1))
    if family == "vit":
        return [max(1, round(level * image_depth / text_depth)) for level in text_levels]
    raise ValueError(f"encoder.image.family must be one of {IMAGE_FAMILIES}, got {family!r}")
