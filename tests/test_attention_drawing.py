"""attention_drawing.py: the attention figure's colour scales, colour bars, region grids and labels,
read back from the drawn image (weights made up, so each test knows what the pixels must show)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from hat.alignment import PairAttention
from hat.attention_drawing import (
    LABEL,
    MEANING,
    PAD,
    SMALL,
    colour_scales,
    draw_attention,
    figure_layout,
    region_grid,
    weight_text,
)
from hat.figures import HEAT_OPACITY, INK, font, heat_colours, region_edges

GREY = (128, 128, 128)
VIEW = Image.new("RGB", (64, 64), GREY)


def level(t2i: torch.Tensor, i2t: torch.Tensor | None = None, score: float = 0.5) -> PairAttention:
    """A level with t2i weights ``(L, R)``; i2t defaults to the same weights, transposed."""
    return PairAttention(t2i=t2i, i2t=t2i.T.clone() if i2t is None else i2t, score=score)


def random_levels(sides, words: int, seed: int = 0) -> list[PairAttention]:
    generator = torch.Generator().manual_seed(seed)
    scores = [torch.randn(words, side * side, generator=generator) * 3 for side in sides]
    return [level(s.softmax(1), s.T.softmax(1)) for s in scores]


def pixels(figure: Image.Image) -> np.ndarray:
    return np.asarray(figure, dtype=np.int32)


def centre(box, side: int, row: int, column: int) -> tuple[int, int]:
    """``(y, x)`` of the middle of region ``(row, column)`` of a map drawn in ``box``."""
    left, top, right, _ = box
    step = (right - left) / side
    return top + int((row + 0.5) * step), left + int((column + 0.5) * step)


def test_maps_of_one_row_share_one_scale_so_a_tenth_of_the_weight_looks_darker():
    side, words = 4, 3
    t2i = torch.full((words, side * side), 1 / 16)  # word 0: even, 0.0625 everywhere
    t2i[1] = 0.025
    t2i[1, 0] = 0.625  # word 1: 10x word 0 on region 0
    figure = draw_attention(VIEW, [level(t2i)], ["[CLS]", "dog", "[SEP]"], "dog", cell=48, max_words=8)
    layout = figure_layout([side], 48, words)
    assert colour_scales([level(t2i)], words) == [(0.625, 0.625)]
    drawn = pixels(figure)
    even = drawn[centre(layout.map_box(0, 0, 0), side, 0, 0)]
    strong = drawn[centre(layout.map_box(0, 0, 1), side, 0, 0)]
    assert np.abs(strong - even).sum() > 150  # visibly different, not both the brightest colour
    for colour, weight in ((even, 0.0625), (strong, 0.625)):
        expected = (1 - HEAT_OPACITY) * np.array(GREY) + HEAT_OPACITY * heat_colours(np.array(weight / 0.625))
        assert np.abs(colour - expected).max() <= 1


def test_each_row_has_a_colour_bar_labelled_with_its_range():
    levels = [level(torch.full((2, 16), 1 / 16) * torch.tensor([[1.0], [0.5]])),
              random_levels([2], 2, seed=1)[0]]
    figure = draw_attention(VIEW, levels, ["[CLS]", "[SEP]"], "", cell=48, max_words=2)
    layout = figure_layout([4, 2], 48, 2)
    drawn = pixels(figure)
    for index, peaks in enumerate(colour_scales(levels, 2)):
        for row, peak in enumerate(peaks):
            left, top, right, bottom = layout.bar_box(index, row)
            assert (drawn[top, left:right] == heat_colours(np.array(1.0))).all()  # the scale's top
            assert (drawn[bottom - 1, left:right] == heat_colours(np.array(0.0))).all()  # 0
            for text, y in ((weight_text(peak), top), ("0", bottom - SMALL - 3)):
                expected = Image.new("RGB", (figure.width - right, SMALL + 3), (255, 255, 255))
                ImageDraw.Draw(expected).text((PAD, 0), text, fill=INK, font=font(SMALL))
                printed = figure.crop((right, y, figure.width, y + SMALL + 3))
                assert (pixels(printed) == pixels(expected)).all(), f"level {index + 1} row {row}: {text}"
    assert weight_text(1 / 16) == "0.0625" and weight_text(0.00128) == "0.00128"


@pytest.mark.parametrize(("side", "cell", "every"), [(4, 42, 1), (8, 66, 1), (28, 64, 2), (28, 16, 8)])
def test_grid_lines_lie_on_the_region_boundaries(side, cell, every):
    even = level(torch.full((1, side * side), 1 / side**2))  # one colour everywhere but on grid lines
    figure = draw_attention(VIEW, [even], ["[CLS]"], "", cell=cell, max_words=1)
    layout = figure_layout([side], cell, 1)
    left, top, right, bottom = layout.map_box(0, 0, 0)
    drawn = pixels(figure)[top:bottom, left:right]
    lined_columns = [x for x in range(right - left) if (drawn[0, x] != drawn[0, 0]).any()]  # row 0: no line
    lined_rows = [y for y in range(bottom - top) if (drawn[y, 0] != drawn[0, 0]).any()]
    assert lined_columns == lined_rows == region_edges(side, layout.map_size)[every - 1 :: every]
    assert len(lined_columns) == (side - 1) // every
    on_grid = np.zeros(drawn.shape[:2], dtype=bool)
    on_grid[lined_rows] = on_grid[:, lined_columns] = True
    assert (drawn[~on_grid] == drawn[0, 0]).all() and (drawn[on_grid] == drawn[lined_rows[0], 0]).all()
    assert drawn[lined_rows[0], 0].sum() > drawn[0, 0].sum() + 60  # a light line over the map


def test_each_region_is_one_block_of_colour():
    weights = torch.arange(16, dtype=torch.float32)[None] / 120  # region r: r / 120
    figure = draw_attention(VIEW, [level(weights)], ["[CLS]"], "", cell=42, max_words=1)
    layout = figure_layout([4], 42, 1)
    box = layout.map_box(0, 0, 0)
    drawn = pixels(figure)
    edges = [box[1], *(box[1] + e for e in region_edges(4, layout.map_size)), box[3]]
    for row in range(4):
        for column in range(4):
            block = drawn[edges[row] + 1 : edges[row + 1], edges[column] - box[1] + box[0] + 1:
                          edges[column + 1] - box[1] + box[0]]
            assert (block == block[0, 0]).all()
            assert (drawn[centre(box, 4, row, column)] == block[0, 0]).all()


def _drawn_texts(monkeypatch) -> list[tuple[tuple[int, int, int, int], str, int]]:
    """Every text the figure draws: its bounding box measured with its font, the text, its size."""
    texts = []
    original = ImageDraw.ImageDraw.text

    def text(self, xy, content, *args, **kwargs):
        face = kwargs["font"]
        texts.append((self.textbbox(xy, content, font=face), content, face.size))
        return original(self, xy, content, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", text)
    return texts


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize("cell", [16, 64, 96])
@pytest.mark.parametrize("sides", [[8, 4, 2], [28, 14, 7, 7]])
def test_every_label_fits_whole_glyphs_and_overlaps_nothing(monkeypatch, cell, sides):
    tokens = ["[CLS]", "a", "skateboarding", "dog", "[SEP]"]
    levels = random_levels(sides, len(tokens))
    texts = _drawn_texts(monkeypatch)
    figure = draw_attention(VIEW, levels, tokens, "a skateboarding dog", cell, max_words=12, full_width=True)
    layout = figure_layout(sides, cell, 12)
    assert figure.size == layout.size
    pictures = [layout.bar_box(i, row) for i in range(len(sides)) for row in (0, 1)]
    pictures += [layout.map_box(i, row, column) for i in range(len(sides)) for row in (0, 1) for column in range(5)]
    pictures += [(0, layout.row_top(i, 0) + LABEL, layout.map_size, layout.row_top(i, 0) + LABEL + layout.map_size)
                 for i in range(len(sides))]  # the image
    boxes = [box for box, content, _ in texts if content]
    for box, content, _ in texts:
        if content:
            assert 0 <= box[0] and 0 <= box[1] and box[2] <= figure.width and box[3] <= figure.height, content
            assert not any(_overlap(box, picture) for picture in pictures), content
    assert not any(_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    drawn = [content for _, content, _ in texts]
    assert set(MEANING) <= set(drawn) and f"{sides[0]}x{sides[0]} regions" in drawn  # whole, never cut
    word = [content for content in drawn if content.startswith("skate")]
    width = ImageDraw.Draw(figure).textlength("skateboarding", font=font(12))
    assert word == (["skateboarding"] * 2 * len(sides) if width <= cell - 4 else word)
    assert all(content == "skateboarding" or content.endswith("…") for content in word)


def test_the_size_follows_the_settings_not_the_caption_or_the_weights():
    short = draw_attention(VIEW, random_levels([8, 4], 3), ["[CLS]", "dog", "[SEP]"], "dog", 64, 12, True)
    long_tokens = ["[CLS]", *("word" for _ in range(20)), "[SEP]"]
    long = draw_attention(VIEW, random_levels([8, 4], 22, seed=3), long_tokens, "word " * 20, 64, 12, True)
    assert short.size == long.size == figure_layout([8, 4], 64, 12).size
    fitted = draw_attention(VIEW, random_levels([8, 4], 3), ["[CLS]", "dog", "[SEP]"], "dog", 64, 12)
    assert fitted.size == figure_layout([8, 4], 64, 3).size


def test_regions_must_form_a_square_grid():
    assert region_grid(64) == 8 and region_grid(1) == 1
    with pytest.raises(ValueError, match="12 regions do not form a square grid"):
        region_grid(12)
