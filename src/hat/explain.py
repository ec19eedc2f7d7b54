"""Per-level attention maps of one image and one caption: ``python explain.py checkpoint=PATH image=IMG caption="..."``.

For each level the figure has two rows of heat-maps over the image as the model saw it (its centre
crop), one map per word:

- ``t2i``, where each word looks: the word's attention over the regions (sums to one per word);
- ``i2t``, which regions pick each word: for every region, the share of its attention that goes to
  the word (each region's shares over the words sum to one).

The weights come from :func:`hat.alignment.pair_attention`, the functions that score; the drawing
(one colour scale per row with its colour bar, the region grid, labels that fit) is
:func:`hat.attention_drawing.draw_attention`. Training logs the same figure to W&B
(:func:`split_attention_figure`).
"""

from __future__ import annotations

from PIL import Image
from torchvision import transforms as T

from hat.attention_drawing import draw_attention
from hat.data.transforms import EVAL_RESIZE_RATIO
from hat.retriever import ImageInput, Retriever, as_rgb


def model_view(image: Image.Image, image_size: int) -> Image.Image:
    """The square the model encodes: resized to ``image_size * 256 / 224`` and centre-cropped."""
    return T.CenterCrop(image_size)(T.Resize(round(image_size * EVAL_RESIZE_RATIO))(image.convert("RGB")))


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
    return draw_attention(view, levels, tokens, caption, cell, max_words, full_width)


def split_attention_figure(model, cfg, tokenizer, runtime, split, image: int, caption: str) -> Image.Image:
    """The figure of image ``image`` of a dataset ``split`` and ``caption``, for a model in training
    (as it is: its device and mode stay), sized by ``logger.examples`` (``attention_cell``,
    ``attention_words``, every figure ``attention_words`` columns wide)."""
    examples = cfg.logger.examples
    retriever = Retriever(model, cfg, tokenizer, runtime)
    return attention_figure(retriever, split.load_image(split.records[image]), caption,
                            examples.attention_cell, examples.attention_words, full_width=True)
