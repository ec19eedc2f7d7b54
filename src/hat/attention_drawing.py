"""The attention figure drawn from its weights (:mod:`hat.explain` computes them and calls :func:`draw_attention`).

Left to right: the label column (the image, the row names, what i2t means, the region grid and
the level's score), one column of ``cell``-pixel maps per token, and the colour-bar column. Per
level a t2i row (where each word looks among the regions) and an i2t row (which regions pick each
word), each map over the image the model saw, one flat block per region, with grid lines on the
region boundaries (on every few boundaries where regions are narrower than
:data:`hat.figures.MIN_REGION_PIXELS`; the label column says which).

Colour scale: the maps of one row share one scale, from 0 to the row's largest weight among the
tokens shown, drawn as a colour bar labelled with that range at the row's end, so a map whose
weights are 10x another's is 10x further up the same scale. A level's two rows get a scale each
because their weights are shares of different wholes: a t2i weight is a word's share of the ``R``
regions (about ``1/R`` when spread evenly: 0.0013 for 28x28 regions), an i2t weight a region's
share of the ``L`` words (about ``1/L``); on one scale the t2i row of a fine level would be black.

Text: every label is measured with the font it is drawn in. The label and colour-bar columns grow
to their longest text; a token longer than its map is cut with an ellipsis at the map's width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw

from hat.alignment import PairAttention
from hat.figures import BACKGROUND, INK, MUTED, colour_bar, fit_text, font, grid_step, heat_overlay

LABEL = 16  # pixels of text above a row of maps
VALUE = 14  # pixels of text under it
HEADER = 26  # pixels of the caption line
PAD = 3
BAR = 10  # pixels, the colour bar's width
GAP = 2  # white pixels between a map and the next
TITLE, NOTE, SMALL = 12, 11, 10  # font sizes: row names and tokens; notes in the label column; numbers
MEANING = ("which regions", "pick each", "word")
WIDEST_WEIGHTS = ("0.000000", "1.23e-05", "weight")  # the widest texts of the colour-bar column
WIDEST_SCORE = "score -0.000"


def region_grid(count: int) -> int:
    """The side of the square grid of ``count`` regions; other counts raise ValueError."""
    side = math.isqrt(count)
    if side * side != count:
        raise ValueError(f"{count} regions do not form a square grid: cannot lay them over the image")
    return side


def weight_text(value: float) -> str:
    """A weight as the figure prints it: three significant digits."""
    return f"{value:.3g}"


def line_height(size: int) -> int:
    return size + 3


def region_notes(side: int, cell: int) -> list[str]:
    """The label column's lines about a level's region grid of ``side`` x ``side`` regions."""
    step = grid_step(side, cell - GAP)
    return [f"{side}x{side} regions"] + ([f"lines every {step}"] if step > 1 else [])


@dataclass(frozen=True)
class Layout:
    """Where everything of the figure lies. Levels and columns count from 0; ``view`` 0 is a
    level's t2i row, 1 its i2t row."""

    cell: int
    columns: int  # token columns
    levels: int
    label_width: int
    bar_width: int
    body: int  # pixels of a row between its label strip and its value strip (at least ``cell``)

    @property
    def map_size(self) -> int:
        """The side of a map in pixels: its column less a gap that parts it from the next."""
        return self.cell - GAP

    @property
    def row_height(self) -> int:
        return LABEL + self.body + VALUE

    @property
    def size(self) -> tuple[int, int]:
        return (self.label_width + self.columns * self.cell + self.bar_width,
                HEADER + 2 * self.levels * self.row_height)

    def row_top(self, level: int, view: int) -> int:
        return HEADER + (2 * level + view) * self.row_height

    def map_box(self, level: int, view: int, column: int) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)`` of a map, right and bottom exclusive."""
        x, y = self.label_width + column * self.cell, self.row_top(level, view) + LABEL
        return x, y, x + self.map_size, y + self.map_size

    def bar_box(self, level: int, view: int) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)`` of a row's colour bar: top is the row's largest weight, bottom 0."""
        x, y = self.label_width + self.columns * self.cell + PAD, self.row_top(level, view) + LABEL
        return x, y, x + BAR, y + self.body


def figure_layout(sides: Sequence[int], cell: int, columns: int) -> Layout:
    """The layout of levels of ``sides`` x ``sides`` regions with ``columns`` token maps of ``cell``
    pixels; its size depends on these alone (not on the weights, scores or caption), so figures of
    one model and settings share one size."""
    notes = [line for side in sides for line in region_notes(side, cell)]
    texts = [(f"level {len(sides)}: t2i", TITLE), (WIDEST_SCORE, NOTE), *((line, NOTE) for line in (*MEANING, *notes))]
    label_width = max(cell, max(math.ceil(font(size).getlength(text)) for text, size in texts) + 2 * PAD)
    widest_number = max(math.ceil(font(SMALL).getlength(text)) for text in WIDEST_WEIGHTS)
    most_notes = max(len(region_notes(side, cell)) for side in sides)
    # the i2t row's notes may run on into its value strip, which is empty in the label column
    body = max(cell, (len(MEANING) + most_notes) * line_height(NOTE) - VALUE, 3 * line_height(SMALL))
    return Layout(cell, columns, len(sides), label_width, 3 * PAD + BAR + widest_number, body)


def colour_scales(levels: Sequence[PairAttention], words: int) -> list[tuple[float, float]]:
    """Per level, the top of its t2i row's and its i2t row's colour scales: the row's largest weight
    among the first ``words`` tokens (each scale runs from 0 to it)."""
    return [(float(level.t2i[:words].max()), float(level.i2t[:, :words].max())) for level in levels]


def draw_attention(
    view: Image.Image, levels: Sequence[PairAttention], tokens: Sequence[str], caption: str, cell: int,
    max_words: int, full_width: bool = False,
) -> Image.Image:
    """The figure of ``caption`` (its ``tokens``, one per t2i row of the weights) over ``view`` (the
    square the model saw): per level a t2i and an i2t row of maps of the first ``max_words``
    tokens; ``full_width``: ``max_words`` token columns whatever the caption's length (blank past
    its tokens), so that figures of different captions share one size."""
    shown = list(tokens[:max_words])
    sides = [region_grid(level.t2i.shape[1]) for level in levels]
    layout = figure_layout(sides, cell, max_words if full_width else len(shown))
    figure = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(figure)
    cut = f"  (first {len(shown)} of {len(tokens)} tokens)" if len(shown) < len(tokens) else ""
    draw.text((4, 5), fit_text(draw, f"“{caption}”{cut}", figure.width - 8, 14), fill=INK, font=font(14))
    for index, (level, side, peaks) in enumerate(zip(levels, sides, colour_scales(levels, len(shown)))):
        maps = (level.t2i, level.i2t.T)  # both as (words, regions)
        for row in (0, 1):
            _draw_row(figure, draw, layout, index, row, maps[row][: len(shown)].reshape(-1, side, side),
                      peaks[row], view, shown)
        top = layout.row_top(index, 0) + LABEL
        figure.paste(view.resize((layout.map_size, layout.map_size)), (0, top))
        draw.text((PAD, top + layout.body + 1), f"score {level.score:.3f}", fill=INK, font=font(NOTE))
        notes = [(text, MUTED) for text in MEANING] + [(text, INK) for text in region_notes(side, cell)]
        for line, (text, colour) in enumerate(notes):
            y = layout.row_top(index, 1) + LABEL + line * line_height(NOTE)
            draw.text((PAD, y), text, fill=colour, font=font(NOTE))
    return figure


def _draw_row(figure, draw, layout: Layout, level: int, row: int, maps, peak: float, view, tokens) -> None:
    """One row: its name, the tokens, their maps (``(words, g, g)`` weights) on the scale 0 ..
    ``peak``, each map's own largest weight under it, and the colour bar."""
    top = layout.row_top(level, row)
    draw.text((PAD, top + 1), f"level {level + 1}: {('t2i', 'i2t')[row]}", fill=INK, font=font(TITLE))
    for column, (token, weights) in enumerate(zip(tokens, maps)):
        left, y, *_ = layout.map_box(level, row, column)
        draw.text((left + 2, top + 1), fit_text(draw, token, layout.cell - 4, TITLE), fill=INK, font=font(TITLE))
        figure.paste(heat_overlay(view, weights, layout.map_size, peak), (left, y))
        value = weight_text(float(weights.max()))
        note = next((text for text in (f"peak {value}", value) if draw.textlength(text, font=font(SMALL))
                     <= layout.cell - 4), "")
        draw.text((left + 2, top + LABEL + layout.body + 1), note, fill=MUTED, font=font(SMALL))
    left, y, right, bottom = layout.bar_box(level, row)
    figure.paste(colour_bar(right - left, bottom - y), (left, y))
    draw.text((left, top + 1), "weight", fill=MUTED, font=font(SMALL))
    draw.text((right + PAD, y), weight_text(peak), fill=INK, font=font(SMALL))
    draw.text((right + PAD, bottom - line_height(SMALL)), "0", fill=INK, font=font(SMALL))
