"""A contact sheet of search results: one row per query, thumbnails in rank order with their scores."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from hat.figures import BACKGROUND, INK, MUTED, fit_text, font, square_thumbnail
from hat.retriever import as_rgb
from hat.search.ranking import Hit

MARGIN = 8
QUERY_LINE = 22  # pixels for the query above its row
SCORE_LINES = 30  # pixels for the two score lines under a thumbnail


def contact_sheet(queries: list[str], results: list[list[Hit]], folder: Path, thumbnail: int = 160) -> Image.Image:
    """For each query (with its hits, best first, images named relative to ``folder``), a row of
    ``thumbnail``-pixel squares in rank order; under each its rank, fused score and level scores."""
    columns = max((len(hits) for hits in results), default=1) or 1
    cell = thumbnail + MARGIN
    row = QUERY_LINE + thumbnail + SCORE_LINES + MARGIN
    sheet = Image.new("RGB", (MARGIN + columns * cell, MARGIN + len(queries) * row), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for line, (query, hits) in enumerate(zip(queries, results)):
        top = MARGIN + line * row
        heading = fit_text(draw, f"“{query}”", sheet.width - 2 * MARGIN, 15)
        draw.text((MARGIN, top + 3), heading, fill=INK, font=font(15))
        for rank, hit in enumerate(hits, start=1):
            x, y = MARGIN + (rank - 1) * cell, top + QUERY_LINE
            sheet.paste(square_thumbnail(as_rgb(folder / hit.item), thumbnail), (x, y))
            draw.text((x, y + thumbnail + 2), fit_text(draw, f"#{rank}  {hit.score:.3f}  {hit.item}", thumbnail, 12),
                      fill=INK, font=font(12))
            levels = "  ".join(f"L{k}={value:.2f}" for k, value in enumerate(hit.level_scores, start=1))
            draw.text((x, y + thumbnail + 16), fit_text(draw, levels, thumbnail, 11), fill=MUTED, font=font(11))
    return sheet
