"""``python -m hat.dashboard --preview PNG --run RUN_DIR``: the workspace's plots for one local run, drawn with PIL.

Line panels are filled from ``RUN_DIR/metrics.jsonl`` against its ``step``, one line per key;
bar panels (the test metrics) from ``RUN_DIR/results.json``, else from the metric's last logged
value. A panel without data says so, or names the runs that log it when only some do. Charts,
tables and images, which only W&B shows, are listed under the plots with whether the run's W&B
folder holds them (:mod:`hat.dashboard.coverage`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

from hat.dashboard.coverage import Coverage, RunData, coverage, expand, has_data, read_run
from hat.dashboard.panels import Panel, Section
from hat.figures import fit_text
from hat.figures import font as figure_font

COLUMNS = 4
TILE = (300, 180)  # one panel, in pixels
GAP = 12
MARGIN = 16
HEADER = 30  # a section's name above its panels
NOTE = 20  # one line naming a section's W&B-only panels
PLOTTED = ("line", "bar")
PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (23, 110, 90), (188, 189, 34), (23, 190, 207),
)
BACKGROUND, INK, FAINT, FRAME = (255, 255, 255), (40, 40, 40), (150, 150, 150), (215, 215, 215)

Box = tuple[int, int, int, int]


@dataclass
class Plan:
    """Where everything goes: the picture's ``size``, section ``headers`` (text and top-left
    corner), one ``tiles`` box per plotted panel and the ``notes`` on the panels that are not
    plotted (section name, panels, top-left corner)."""

    size: tuple[int, int] = (0, 0)
    headers: list[tuple[str, tuple[int, int]]] = field(default_factory=list)
    tiles: list[tuple[Panel, Box]] = field(default_factory=list)
    notes: list[tuple[str, list[Panel], tuple[int, int]]] = field(default_factory=list)


def plan(sections: tuple[Section, ...]) -> Plan:
    """Plotted panels in rows of :data:`COLUMNS` under their section's name, then one note line per
    section with panels that are not plotted."""
    result = Plan()
    y = MARGIN
    for section in sections:
        plotted = [panel for panel in section.panels if panel.kind in PLOTTED]
        if not plotted:
            continue
        result.headers.append((section.name, (MARGIN, y)))
        y += HEADER
        for index, panel in enumerate(plotted):
            row, column = divmod(index, COLUMNS)
            left, top = MARGIN + column * (TILE[0] + GAP), y + row * (TILE[1] + GAP)
            result.tiles.append((panel, (left, top, left + TILE[0], top + TILE[1])))
        y += math.ceil(len(plotted) / COLUMNS) * (TILE[1] + GAP)
    for section in sections:
        others = [panel for panel in section.panels if panel.kind not in PLOTTED]
        if others:
            result.notes.append((section.name, others, (MARGIN, y)))
            y += NOTE
    result.size = (2 * MARGIN + COLUMNS * TILE[0] + (COLUMNS - 1) * GAP, y + MARGIN)
    return result


def colours(sections: tuple[Section, ...]) -> dict[str, tuple[int, int, int]]:
    """One colour per metric, keyed by the last part of its name, so ``val/rsum``,
    ``val/level2/rsum`` and ``test/rsum`` share one (panels of one key are drawn in it; a panel
    of several keys gives each its own colour of :data:`PALETTE`, in order)."""
    leaves = dict.fromkeys(_leaf(key) for section in sections for panel in section.panels for key in panel.keys)
    return {leaf: PALETTE[index % len(PALETTE)] for index, leaf in enumerate(leaves)}


def draw_preview(run_dir: Path, out: Path, sections: tuple[Section, ...]) -> Coverage:
    """Write the picture of ``sections`` for the run in ``run_dir`` to ``out`` (a PNG); returns
    which panels the run leaves without data (:func:`hat.dashboard.coverage.coverage`)."""
    run = read_run(run_dir)
    layout, palette = plan(sections), colours(sections)
    image = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    font, bold = figure_font(13), figure_font(17)
    for name, corner in layout.headers:
        draw.text(corner, name, fill=INK, font=bold)
    for panel, box in layout.tiles:
        area = _frame(draw, box, panel.name, font)
        series = _series(panel, run)
        if not series:
            empty = f"{panel.only} only" if panel.only else "no data"
            _text(draw, ((area[0] + area[2]) // 2, (area[1] + area[3]) // 2), empty, font, FAINT, "mm")
            continue
        if len(series) == 1:
            hues = [palette.get(_leaf(series[0][0]), PALETTE[0])]
        else:
            hues = [PALETTE[index % len(PALETTE)] for index in range(len(series))]
        if panel.kind == "bar":
            _bars(draw, area, [(label, points[-1][1]) for label, points in _labelled(series)], hues, font)
        else:
            _line(draw, area, [points for _, points in series], hues, font)
            if len(series) > 1:
                _legend(draw, area, [label for label, _ in _labelled(series)], hues, font)
    found = {True: "logged", False: "empty", None: "not checked"}
    for name, panels, corner in layout.notes:
        text = f"{name} (in W&B only): " + ", ".join(f"{panel.name} ({found[has_data(panel, run)]})"
                                                       for panel in panels)
        draw.text(corner, fit_text(draw, text, layout.size[0] - 2 * MARGIN, 13), fill=FAINT, font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    return coverage(sections, run)


def _series(panel: Panel, run: RunData) -> list[tuple[str, list[tuple[float, float]]]]:
    """``(key, points)`` of each of ``panel``'s keys that has data: a line's history, or a bar's
    final value (``results.json``, else the last logged one) as a single point."""
    found = []
    for key in expand(panel, run.history):
        points = run.history.get(key, [])
        if panel.kind == "bar":
            value = run.final.get(key, points[-1][1] if points else None)
            points = [] if value is None else [(0.0, value)]
        if points:
            found.append((key, points))
    return found


def _labelled(series: list[tuple[str, list]]) -> list[tuple[str, list]]:
    """``series`` with each key cut to the parts in which the keys differ (``val/level2/rsum``
    among ``val/.../rsum`` keys: ``level2``); a key with nothing of its own left stays whole."""
    parts = [key.split("/") for key, _ in series]
    shortest = min(len(p) for p in parts)
    head = 0
    while head < shortest and len({p[head] for p in parts}) == 1:
        head += 1
    tail = 0
    while tail < shortest - head and len({p[-1 - tail] for p in parts}) == 1:
        tail += 1
    return [("/".join(p[head:len(p) - tail]) or key, points) for p, (key, points) in zip(parts, series)]


def _frame(draw: ImageDraw.ImageDraw, box: Box, title: str, font) -> Box:
    """A panel's border and title; returns the plot area inside it (room left for axis labels)."""
    draw.rounded_rectangle(box, radius=6, outline=FRAME, width=1)
    draw.text((box[0] + 10, box[1] + 8), fit_text(draw, title, box[2] - box[0] - 20, 13), fill=INK, font=font)
    return box[0] + 62, box[1] + 34, box[2] - 14, box[3] - 26


def _line(draw: ImageDraw.ImageDraw, area: Box, lines: list[list[tuple[float, float]]], hues, font) -> None:
    """Each of ``lines`` (points) in its colour of ``hues`` (dots where there are few) on shared
    axes labelled with the ends of their ranges."""
    xs = [x for points in lines for x, _ in points]
    ys = [y for points in lines for _, y in points]
    (x_low, x_high), (y_low, y_high) = _span(min(xs), max(xs)), _span(min(ys), max(ys))
    left, top, right, bottom = area
    _axes(draw, area, (y_low, y_high), font)
    _text(draw, (left, bottom + 5), f"{x_low:.6g}", font, FAINT, "lt")
    _text(draw, (right, bottom + 5), f"{x_high:.6g}", font, FAINT, "rt")
    _text(draw, ((left + right) // 2, bottom + 5), "step", font, FAINT, "mt")
    for points, colour in zip(lines, hues):
        pixels = [
            (left + (x - x_low) / (x_high - x_low) * (right - left),
             bottom - (y - y_low) / (y_high - y_low) * (bottom - top))
            for x, y in points
        ]
        if len(pixels) > 1:
            draw.line(pixels, fill=colour, width=2, joint="curve")
        if len(pixels) <= 40:
            for x, y in pixels:
                draw.ellipse((x - 2.5, y - 2.5, x + 2.5, y + 2.5), fill=colour)


def _bars(draw: ImageDraw.ImageDraw, area: Box, values: list[tuple[str, float]], hues, font) -> None:
    """One bar from zero to each value, side by side in its colour of ``hues``, labelled with the
    value above and, when there are several, its label below."""
    low, high = min(0.0, *(value for _, value in values)), max(0.0, *(value for _, value in values))
    high = high if high > low else 1.0
    left, top, right, bottom = area
    zero = bottom - (0.0 - low) / (high - low) * (bottom - top)
    slot = (right - left) / len(values)
    half = slot * (0.2 if len(values) == 1 else 0.3)
    for index, ((label, value), colour) in enumerate(zip(values, hues)):
        middle = left + slot * (index + 0.5)
        end = bottom - (value - low) / (high - low) * (bottom - top)
        draw.rectangle((middle - half, min(zero, end), middle + half, max(zero, end)), fill=colour)
        _text(draw, (middle, min(zero, end) - 3), f"{value:.4g}", font, INK, "mb")
        _text(draw, (middle, bottom + 5), label if len(values) > 1 else "this run", font, FAINT, "mt")
    _axes(draw, area, (low, high), font)


def _legend(draw: ImageDraw.ImageDraw, area: Box, labels: list[str], hues, font) -> None:
    """``labels`` in their colours, one a line, at the plot's top right."""
    for index, (label, colour) in enumerate(zip(labels, hues)):
        _text(draw, (area[2] - 2, area[1] + 2 + 14 * index), label, font, colour, "rt")


def _axes(draw: ImageDraw.ImageDraw, area: Box, y_range: tuple[float, float], font) -> None:
    """The left and bottom axis lines, with the lowest and highest value at the ends of the left one."""
    left, top, right, bottom = area
    draw.line((left, top, left, bottom, right, bottom), fill=FAINT, width=1)
    _text(draw, (left - 5, top), f"{y_range[1]:.3g}", font, FAINT, "rm")
    _text(draw, (left - 5, bottom), f"{y_range[0]:.3g}", font, FAINT, "rm")


def _text(draw: ImageDraw.ImageDraw, xy, text: str, font, fill, anchor: str) -> None:
    """``text`` placed by a two-letter ``anchor`` (horizontal l/m/r, vertical t/m/b), measured
    here so that any font works."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    width, height = right - left, bottom - top
    x = xy[0] - {"l": 0, "m": width / 2, "r": width}[anchor[0]]
    y = xy[1] - {"t": 0, "m": height / 2, "b": height}[anchor[1]]
    draw.text((x - left, y - top), text, fill=fill, font=font)


def _span(low: float, high: float) -> tuple[float, float]:
    """``(low, high)``, widened around a single value so that it can be scaled."""
    if high > low:
        return low, high
    pad = abs(low) * 0.05 or 1.0
    return low - pad, high + pad


def _leaf(key: str) -> str:
    return key.rsplit("/", 1)[-1]
