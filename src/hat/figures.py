"""Drawing helpers shared by the contact sheet and the attention figure: fonts, text, heat-maps,
region grids and colour bars."""

from __future__ import annotations

import functools
import math

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
GRID = (255, 255, 255)
GRID_OPACITY = 0.5
MIN_REGION_PIXELS = 4  # regions drawn narrower than this get a grid line only every few regions


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


def region_edges(side: int, size: int) -> list[int]:
    """The first pixel of regions ``1 .. side - 1`` along a ``size``-pixel edge cut into ``side``
    regions, pixel ``p`` belonging to region ``floor(p * side / size)``."""
    return [math.ceil(k * size / side) for k in range(1, side)]


def grid_step(side: int, size: int) -> int:
    """Regions from one grid line to the next: 1 when a region is at least ``MIN_REGION_PIXELS``
    wide, else the fewest regions that are (lines every pixel or two would hide the map)."""
    return max(1, math.ceil(MIN_REGION_PIXELS * side / size))


def heat_overlay(image: Image.Image, weights: torch.Tensor, size: int, peak: float) -> Image.Image:
    """A ``size`` x ``size`` picture: ``image`` (square, as the model saw it after its centre crop)
    under the ``(g, g)`` map ``weights`` on the colour scale from 0 to ``peak`` (values above it
    are drawn as ``peak``), each region a flat block (pixel ``p`` shows region
    ``floor(p * g / size)``), with a grid line on the first pixel row and column of every
    :func:`grid_step`-th region."""
    side = weights.shape[0]
    region = np.arange(size) * side // size
    values = weights.detach().float().cpu().numpy()[region[:, None], region[None, :]] / max(peak, 1e-12)
    base = np.asarray(image.convert("RGB").resize((size, size)), dtype=np.float32)
    mixed = (1 - HEAT_OPACITY) * base + HEAT_OPACITY * heat_colours(values)
    lines = np.zeros(size, dtype=bool)
    lines[region_edges(side, size)[grid_step(side, size) - 1 :: grid_step(side, size)]] = True
    on_grid = lines[:, None] | lines[None, :]
    mixed[on_grid] = (1 - GRID_OPACITY) * mixed[on_grid] + GRID_OPACITY * np.array(GRID, dtype=np.float32)
    return Image.fromarray(mixed.round().astype(np.uint8))


def colour_bar(width: int, height: int) -> Image.Image:
    """The heat colours from the top (the scale's maximum) to the bottom (0), ``width`` x ``height``."""
    column = heat_colours(np.linspace(1.0, 0.0, height, dtype=np.float32))
    return Image.fromarray(np.repeat(column[:, None], width, axis=1))
