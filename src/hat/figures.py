"""Drawing helpers shared by the contact sheet and the attention figure: fonts, text, heat-maps."""

from __future__ import annotations

import functools

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
MUTED = (110, 110, 110)
RIGHT = (0, 130, 60)
# A perceptually ordered dark-to-bright ramp (black, purple, red, orange, pale yellow) for heat-maps.
HEAT_STOPS = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32
)
HEAT_OPACITY = 0.6


@functools.cache
def font(size: int) -> ImageFont.ImageFont:
    """Pillow's built-in font at ``size`` pixels."""
    return ImageFont.load_default(size=size)


def fit_text(draw: ImageDraw.ImageDraw, text: str, width: int, size: int) -> str:
    """``text``, cut with an ellipsis so that it fits ``width`` pixels at font ``size``: its longest
    start that fits with "…" after it.

    The one text-fitting function of the figures. Its cost follows what fits, not the text's length:
    starts of doubling length (from a guess of one ``size``-wide glyph per character) are measured
    until one is too wide or the whole text fits, then the cut is binary-searched below that one,
    so a line of ``k`` fitting characters takes O(log k) measurements of at most ``2k + 1``
    characters each, whether the text is a word or 100 KB.
    """
    face = font(size)
    length = max(1, int(width) // size)
    while True:  # the first start at a doubling length that is too wide, unless all of it fits
        length = min(length, len(text))
        if draw.textlength(text[:length], font=face) > width:
            break
        if length == len(text):
            return text
        length *= 2
    fits, too_wide = 0, length  # text[:too_wide] + "…" is too wide; text[:0] + "…" is the least shown
    while too_wide - fits > 1:
        middle = (fits + too_wide) // 2
        if draw.textlength(text[:middle] + "…", font=face) <= width:
            fits = middle
        else:
            too_wide = middle
    return text[:fits] + "…"


def square_thumbnail(image: Image.Image, size: int) -> Image.Image:
    """``image`` scaled to fit ``size`` x ``size`` and centred on a white square of that size."""
    picture = ImageOps.contain(image.convert("RGB"), (size, size))
    canvas = Image.new("RGB", (size, size), BACKGROUND)
    canvas.paste(picture, ((size - picture.width) // 2, (size - picture.height) // 2))
    return canvas


def heat_colours(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 RGB of the same shape plus a last axis of 3."""
    position = np.clip(values, 0.0, 1.0) * (len(HEAT_STOPS) - 1)
    low = np.minimum(np.floor(position).astype(int), len(HEAT_STOPS) - 2)
    share = (position - low)[..., None]
    return ((1 - share) * HEAT_STOPS[low] + share * HEAT_STOPS[low + 1]).round().astype(np.uint8)


def heat_overlay(image: Image.Image, weights: torch.Tensor, size: int, peak: float) -> Image.Image:
    """A ``size`` x ``size`` picture: ``image`` (square, as the model saw it after its centre crop)
    under the ``(g, g)`` map ``weights`` divided by ``peak`` and upsampled bilinearly."""
    grid = weights.detach().float().cpu()[None, None] / max(peak, 1e-12)
    upsampled = torch.nn.functional.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)
    heat = Image.fromarray(heat_colours(upsampled[0, 0].numpy()))
    base = image.convert("RGB").resize((size, size))
    return Image.blend(base, heat, HEAT_OPACITY)
