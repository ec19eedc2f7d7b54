"""Per-level attention maps of one image and one caption: ``python explain.py checkpoint=PATH image=IMG caption="..."``.

For each level the figure has two rows of heat-maps over the image as the model saw it (its centre
crop), one map per word:

- ``t2i``, where each word looks: the word's attention over the regions (sums to one per word);
- ``i2t``, which regions pick each word: for every region, the share of its attention that goes to
  the word (each region's shares over the words sum to one).

The weights come from :func:`hat.alignment.pair_attention`, the functions that score. The maps of
a row share one colour scale (the row's largest weight is the brightest); each map's own peak is
printed under it, and the level's score under the image.
"""

from __future__ import annotations

import math

from PIL import Image, ImageDraw
from torchvision import transforms as T

from hat.alignment import PairAttention
from hat.data.transforms import EVAL_RESIZE_RATIO
from hat.figures import BACKGROUND, INK, MUTED, fit_text, font, heat_overlay
from hat.retriever import ImageInput, Retriever, as_rgb

LABEL = 16  # pixels of text above a map
VALUE = 14  # pixels of text under a map
HEADER = 26


def model_view(image: Image.Image, image_size: int) -> Image.Image:
    """The square the model encodes: resized to ``image_size * 256 / 224`` and centre-cropped."""
    return T.CenterCrop(image_size)(T.Resize(round(image_size * EVAL_RESIZE_RATIO))(image.convert("RGB")))


def region_grid(count: int) -> int:
    """The side of the square grid of ``count`` regions; other counts raise ValueError."""
    side = math.isqrt(count)
    if side * side != count:
        raise ValueError(f"{count} regions do not form a square grid: cannot lay them over the image")
    return side


def attention_figure(
    retriever: Retriever, image: ImageInput, caption: str, cell: int = 96, max_words: int = 16,
    full_width: bool = False,
) -> Image.Image:
    """The figure for ``image`` and ``caption``: per level a t2i row and an i2t row of ``cell``-pixel
    maps, one column per token (the first ``max_words`` of them), the image in the first column.
    ``full_width``: always ``max_words`` token columns wide (blank past the caption's tokens), so
    that the figures of different captions share one size."""
    picture = as_rgb(image)
    levels = retriever.attention(picture, caption)
    tokens = retriever.tokens(caption)[: levels[0].t2i.shape[0]]
    view = model_view(picture, retriever.image_size)
    shown = tokens[:max_words]
    row = LABEL + cell + VALUE
    columns = max_words if full_width else len(shown)
    figure = Image.new("RGB", ((1 + columns) * cell, HEADER + 2 * row * len(levels)), BACKGROUND)
    draw = ImageDraw.Draw(figure)
    cut = f"  (first {len(shown)} of {len(tokens)} tokens)" if len(shown) < len(tokens) else ""
    draw.text((4, 5), fit_text(draw, f"“{caption}”{cut}", figure.width - 8, 14), fill=INK, font=font(14))
    for number, level in enumerate(levels, start=1):
        top = HEADER + 2 * row * (number - 1)
        _draw_level(figure, draw, view, level, number, shown, top, cell)
    return figure


def _draw_level(figure, draw, view, level: PairAttention, number: int, tokens: list[str], top: int, cell: int) -> None:
    """The two rows of one level, starting ``top`` pixels down."""
    side = region_grid(level.t2i.shape[1])
    row = LABEL + cell + VALUE
    for line, (name, maps, meaning) in enumerate(
        (("t2i", level.t2i, "where each word\nlooks among\nthe regions"),
         ("i2t", level.i2t.T, "which regions\npick each\nword"))
    ):  # both maps as (words, regions)
        y = top + line * row
        draw.text((2, y + 1), f"level {number}: {name}", fill=INK, font=font(12))
        if line == 0:
            figure.paste(view.resize((cell, cell)), (0, y + LABEL))
            draw.text((2, y + LABEL + cell + 1), f"score {level.score:.3f}", fill=INK, font=font(11))
        else:
            draw.text((2, y + LABEL + 4), meaning, fill=MUTED, font=font(11))
        peak = float(maps[: len(tokens)].max())
        for column, token in enumerate(tokens, start=1):
            weights = maps[column - 1].reshape(side, side)
            x = column * cell
            draw.text((x + 2, y + 1), fit_text(draw, token, cell - 4, 12), fill=INK, font=font(12))
            figure.paste(heat_overlay(view, weights, cell, peak), (x, y + LABEL))
            draw.text((x + 2, y + LABEL + cell + 1), f"peak {float(weights.max()):.2f}", fill=MUTED, font=font(10))


def split_attention_figure(model, cfg, tokenizer, runtime, split, image: int, caption: str) -> Image.Image:
    """The figure of image ``image`` of a dataset ``split`` and ``caption``, for a model in training
    (as it is: its device and mode stay), sized by ``logger.examples`` (``attention_cell``,
    ``attention_words``, every figure ``attention_words`` columns wide)."""
    examples = cfg.logger.examples
    retriever = Retriever(model, cfg, tokenizer, runtime)
    return attention_figure(retriever, split.load_image(split.records[image]), caption,
                            examples.attention_cell, examples.attention_words, full_width=True)
