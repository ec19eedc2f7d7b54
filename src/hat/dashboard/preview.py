"""``python -m hat.dashboard --preview PNG --run RUN_DIR``: the workspace's plots for one local run, drawn with PIL.

Line panels are filled from ``RUN_DIR/metrics.jsonl`` against its ``step``; bar panels (the test
metrics) from ``RUN_DIR/results.json``, else from the metric's last logged value. A panel without
data says so. Charts and tables, which only W&B holds, are listed under the plots.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

from hat.dashboard import DashboardError
from hat.dashboard.panels import Panel, Section
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
    """Where everything goes: the picture's ``size``, section ``headers`` and ``notes`` (text and
    top-left corner) and one ``tiles`` box per plotted panel."""

    size: tuple[int, int] = (0, 0)
    headers: list[tuple[str, tuple[int, int]]] = field(default_factory=list)
    tiles: list[tuple[Panel, Box]] = field(default_factory=list)
    notes: list[tuple[str, tuple[int, int]]] = field(default_factory=list)


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
        others = [panel.key for panel in section.panels if panel.kind not in PLOTTED]
        if others:
            result.notes.append((f"{section.name} (in W&B only): {', '.join(others)}", (MARGIN, y)))
            y += NOTE
    result.size = (2 * MARGIN + COLUMNS * TILE[0] + (COLUMNS - 1) * GAP, y + MARGIN)
    return result


def colours(sections: tuple[Section, ...]) -> dict[str, tuple[int, int, int]]:
    """One colour per metric, keyed by the last part of its name, so ``val/rsum``,
    ``val/level2/rsum`` and ``test/rsum`` share one."""
    leaves = dict.fromkeys(_leaf(panel.key) for section in sections for panel in section.panels)
    return {leaf: PALETTE[index % len(PALETTE)] for index, leaf in enumerate(leaves)}


def read_run(run_dir: Path) -> tuple[dict[str, list[tuple[float, float]]], dict[str, float]]:
    """The run's history, ``{key: [(step, value), ...]}`` in logged order, and its final metrics
    (``results.json``'s ``metrics``). Lines that do not parse and values that are null, not numbers
    or not finite are skipped.

    Raises:
        DashboardError: when the folder holds neither file, or ``results.json`` is not JSON.
    """
    metrics, results = run_dir / "metrics.jsonl", run_dir / "results.json"
    if not metrics.is_file() and not results.is_file():
        raise DashboardError(f"{run_dir} holds neither metrics.jsonl nor results.json")
    history: dict[str, list[tuple[float, float]]] = {}
    for line in metrics.read_text(encoding="utf-8").splitlines() if metrics.is_file() else []:
        try:
            record = json.loads(line)
            step = float(record["step"])
        except (ValueError, KeyError, TypeError):
            continue
        for key, value in record.items():
            if key != "step" and _finite(value):
                history.setdefault(key, []).append((step, float(value)))
    final: dict[str, float] = {}
    if results.is_file():
        try:
            logged = json.loads(results.read_text(encoding="utf-8")).get("metrics") or {}
        except (ValueError, AttributeError):
            raise DashboardError(f"{results} is not a JSON object") from None
        final = {key: float(value) for key, value in logged.items() if _finite(value)}
    return history, final


def draw_preview(run_dir: Path, out: Path, sections: tuple[Section, ...]) -> None:
    """Write the picture of ``sections`` for the run in ``run_dir`` to ``out`` (a PNG)."""
    history, final = read_run(run_dir)
    layout, palette = plan(sections), colours(sections)
    image = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    font, bold = figure_font(13), figure_font(17)
    for name, corner in layout.headers:
        draw.text(corner, name, fill=INK, font=bold)
    for panel, box in layout.tiles:
        area = _frame(draw, box, panel.key, font)
        points = history.get(panel.key, [])
        if panel.kind == "bar":
            value = final.get(panel.key, points[-1][1] if points else None)
            points = [] if value is None else [(0.0, value)]
        if not points:
            _text(draw, ((area[0] + area[2]) // 2, (area[1] + area[3]) // 2), "no data", font, FAINT, "mm")
        elif panel.kind == "bar":
            _bar(draw, area, points[0][1], palette[_leaf(panel.key)], font)
        else:
            _line(draw, area, points, palette[_leaf(panel.key)], font)
    for text, corner in layout.notes:
        draw.text(corner, text, fill=FAINT, font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)


def _frame(draw: ImageDraw.ImageDraw, box: Box, title: str, font) -> Box:
    """A panel's border and title; returns the plot area inside it (room left for axis labels)."""
    draw.rounded_rectangle(box, radius=6, outline=FRAME, width=1)
    draw.text((box[0] + 10, box[1] + 8), title, fill=INK, font=font)
    return box[0] + 62, box[1] + 34, box[2] - 14, box[3] - 26


def _line(draw: ImageDraw.ImageDraw, area: Box, points: list[tuple[float, float]], colour, font) -> None:
    """``points`` as a line (dots where there are few) on axes labelled with the ends of their ranges."""
    xs, ys = [x for x, _ in points], [y for _, y in points]
    (x_low, x_high), (y_low, y_high) = _span(min(xs), max(xs)), _span(min(ys), max(ys))
    left, top, right, bottom = area
    pixels = [
        (left + (x - x_low) / (x_high - x_low) * (right - left),
         bottom - (y - y_low) / (y_high - y_low) * (bottom - top))
        for x, y in points
    ]
    _axes(draw, area, (y_low, y_high), font)
    _text(draw, (left, bottom + 5), f"{x_low:.6g}", font, FAINT, "lt")
    _text(draw, (right, bottom + 5), f"{x_high:.6g}", font, FAINT, "rt")
    _text(draw, ((left + right) // 2, bottom + 5), "step", font, FAINT, "mt")
    if len(pixels) > 1:
        draw.line(pixels, fill=colour, width=2, joint="curve")
    if len(pixels) <= 40:
        for x, y in pixels:
            draw.ellipse((x - 2.5, y - 2.5, x + 2.5, y + 2.5), fill=colour)


def _bar(draw: ImageDraw.ImageDraw, area: Box, value: float, colour, font) -> None:
    """One bar from zero to ``value``, labelled with it."""
    low, high = min(0.0, value), max(0.0, value)
    high = high if high > low else 1.0
    left, top, right, bottom = area
    zero = bottom - (0.0 - low) / (high - low) * (bottom - top)
    end = bottom - (value - low) / (high - low) * (bottom - top)
    middle, half = (left + right) / 2, (right - left) * 0.2
    draw.rectangle((middle - half, min(zero, end), middle + half, max(zero, end)), fill=colour)
    _axes(draw, area, (low, high), font)
    _text(draw, (middle, min(zero, end) - 3), f"{value:.4g}", font, INK, "mb")
    _text(draw, (middle, bottom + 5), "this run", font, FAINT, "mt")


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


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
