"""figures.py: fitting text into a width costs measurements that follow what fits, not the text's length;
heat-maps on a given colour scale with their region grid; the colour bar."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from hat.figures import (
    HEAT_OPACITY,
    MIN_REGION_PIXELS,
    colour_bar,
    fit_text,
    font,
    grid_step,
    heat_colours,
    heat_overlay,
    region_edges,
)
from hat.search.contact_sheet import MARGIN, contact_sheet
from hat.search.ranking import Hit

WORDS = "a small orange square at the top of a light background with two red crosses "
BUDGET = 40  # measurements per line; the old character-by-character cut needed one per character


def long_text(length: int) -> str:
    return (WORDS * (length // len(WORDS) + 1))[:length]


class Measurements(list):
    """The texts the figures' font measured, in order; past ``limit`` of them, or one longer than
    ``longest`` characters (far more than any tested width holds), the measuring call fails at once."""

    limit = BUDGET
    longest = 2_000


@pytest.fixture
def measured(monkeypatch) -> Measurements:
    texts = Measurements()
    face_type = type(font(12))
    original = face_type.getlength

    def counting(self, text, *args, **kwargs):
        texts.append(text)
        assert len(texts) <= texts.limit, f"{len(texts)} measurements"
        assert len(text) <= texts.longest, f"measured {len(text)} characters"
        return original(self, text, *args, **kwargs)

    monkeypatch.setattr(face_type, "getlength", counting)
    return texts


def test_a_longer_text_takes_no_more_measurements_to_fit(measured):
    draw = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    width, size = 824, 15
    counts, longest, results = [], [], []
    for length in (4_000, 100_000):
        measured.clear()
        results.append(fit_text(draw, long_text(length), width, size))
        counts.append(len(measured))
        longest.append(max(map(len, measured)))
    assert counts[0] == counts[1] <= 2 * math.log2(width) + 4
    assert longest[0] == longest[1] < 2 * len(results[0])  # nothing near the text's length was measured
    assert results[0] == results[1]


@pytest.mark.parametrize("width", [0, 30, 160, 824])
def test_the_cut_is_the_longest_start_that_fits_with_an_ellipsis(width):
    draw = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    text = long_text(3_000)
    cut = fit_text(draw, text, width, 12)
    start = cut[:-1]
    assert cut.endswith("…") and text.startswith(start)
    assert not start or draw.textlength(cut, font=font(12)) <= width
    assert draw.textlength(text[: len(start) + 1] + "…", font=font(12)) > width


def test_a_text_that_fits_is_left_whole():
    draw = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    assert fit_text(draw, "two dogs", 200, 12) == "two dogs"
    assert fit_text(draw, "", 0, 12) == ""


def test_a_100_kb_query_heads_its_row_of_the_contact_sheet_by_its_start(measured, tmp_path, monkeypatch):
    Image.new("RGB", (20, 10), (200, 30, 30)).save(tmp_path / "red.png")
    query = long_text(100_000)
    drawn: list[str] = []
    original = ImageDraw.ImageDraw.text

    def text(self, xy, text, *args, **kwargs):
        drawn.append(text)
        return original(self, xy, text, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", text)
    hits = [Hit("red.png", 0.5, [0.4, 0.6]), Hit("red.png", 0.25, [0.2, 0.3])]
    measured.limit = 5 * BUDGET  # the heading and two lines under each thumbnail
    sheet = contact_sheet([query], [hits], tmp_path, thumbnail=64)
    heading = drawn[0]
    assert heading.startswith("“" + query[:10]) and heading.endswith("…")
    assert query.startswith(heading[1:-1])
    assert ImageDraw.Draw(sheet).textlength(heading, font=font(15)) <= sheet.width - 2 * MARGIN
    top = sheet.crop((MARGIN, MARGIN, sheet.width - MARGIN, MARGIN + 20)).convert("L")
    assert top.getextrema()[0] < 100  # the heading is drawn in ink


def test_region_edges_and_grid_steps_follow_the_pixels_a_region_covers():
    assert region_edges(4, 40) == [10, 20, 30]
    assert region_edges(3, 64) == [22, 43]  # pixel p shows region floor(3p / 64): 0..21, 22..42, 43..63
    assert grid_step(7, 94) == 1 and grid_step(28, 94) == 2 and grid_step(28, 62) == 2 and grid_step(28, 14) == 8
    for side, size in ((28, 94), (28, 62), (7, 94), (56, 30)):
        step = grid_step(side, size)
        assert size / side * step >= MIN_REGION_PIXELS and (step == 1 or size / side * (step - 1) < MIN_REGION_PIXELS)


def test_heat_overlay_puts_weights_on_the_given_scale_and_clips_above_it():
    grey = Image.new("RGB", (8, 8), (128, 128, 128))
    weights = torch.tensor([[0.0, 0.1], [0.4, 0.8]])
    drawn = np.asarray(heat_overlay(grey, weights, 8, peak=0.4), dtype=np.float32)
    for (row, column), share in (((0, 0), 0.0), ((0, 1), 0.25), ((1, 0), 1.0), ((1, 1), 1.0)):
        expected = (1 - HEAT_OPACITY) * 128 + HEAT_OPACITY * heat_colours(np.array(share)).astype(np.float32)
        assert np.abs(drawn[row * 4 + 1, column * 4 + 1] - expected).max() <= 1  # inside the block, off the grid
    assert (drawn[4, 1] != drawn[5, 1]).any()  # the grid line on the first pixel row of region row 1


def test_the_colour_bar_runs_from_the_top_of_the_scale_down_to_zero():
    bar = np.asarray(colour_bar(6, 50))
    assert bar.shape == (50, 6, 3)
    assert (bar[0] == heat_colours(np.array(1.0))).all() and (bar[-1] == heat_colours(np.array(0.0))).all()
    brightness = bar[:, 0].astype(int).sum(axis=1)
    assert (np.diff(brightness) <= 0).all()  # darker all the way down
