"""Shapes: an embedded, procedurally generated image-text dataset, so that training and
evaluation run end to end with no downloads.

Each image shows one to three coloured shapes (circle, square, triangle, diamond, cross; small or
large) in distinct cells of a 3x3 grid, with a little jitter, on a plain light or dark background.
Each image has up to five different templated captions, all true of it: each names every shape's
colour and kind, and between them they give each shape's size and grid position, the number of
shapes, the background and the spatial relations between shapes.

Everything is drawn from ``numpy.random.default_rng`` seeded by ``(seed, crc32(split name))``, so
a seed gives the same records and pixels in every process. Records keep a ``spec`` (background and
shapes) instead of a file; ``load_image`` renders it on the fly. No image is shared between
splits or repeated within one: an image's layout (background tone and every shape's colour, kind,
size and cell) belongs to exactly one split, chosen by a hash of the layout.
"""

from __future__ import annotations

import functools
import zlib

import numpy as np
from PIL import Image, ImageDraw

from hat.data.records import CaptionedImages, ImageRecord
from hat.data.shapes_captions import MAX_CAPTIONS_PER_IMAGE, Draws, write_captions

_COLORS = {
    "red": (220, 35, 35),
    "green": (35, 160, 55),
    "blue": (35, 80, 230),
    "yellow": (245, 215, 30),
    "purple": (140, 50, 190),
    "orange": (250, 140, 20),
    "white": (250, 250, 250),
    "black": (20, 20, 20),
}
_BACKGROUND_LEVELS = {"light": (195, 230), "dark": (25, 60)}  # grey levels, before a per-channel tint
_MAX_TINT = 8
_CLASHING_COLOR = {"light": "white", "dark": "black"}
_KINDS = ("circle", "square", "triangle", "diamond", "cross")
_CELLS = tuple((row, col) for row in range(3) for col in range(3))
_LOOKS = {  # (colour, kind) pairs that stand out from each background
    background: tuple((color, kind) for color in _COLORS if color != clash for kind in _KINDS)
    for background, clash in _CLASHING_COLOR.items()
}
_SIZES = {"small": 0.26, "large": 0.44}  # half-width as a fraction of a grid cell
_MAX_JITTER = 0.05  # fraction of a grid cell; keeps large shapes inside their cell
_SUPERSAMPLE = 4

# Outlines in units of the half-width, centred on the shape; circles are drawn as ellipses.
_OUTLINES = {
    "square": ((-1, -1), (1, -1), (1, 1), (-1, 1)),
    "triangle": ((0, -1), (1, 1), (-1, 1)),
    "diamond": ((0, -1), (1, 0), (0, 1), (-1, 0)),
    "cross": (
        (-1 / 3, -1), (1 / 3, -1), (1 / 3, -1 / 3), (1, -1 / 3), (1, 1 / 3), (1 / 3, 1 / 3),
        (1 / 3, 1), (-1 / 3, 1), (-1 / 3, 1 / 3), (-1, 1 / 3), (-1, -1 / 3), (-1 / 3, -1 / 3),
    ),
}

def build_shapes_splits(
    seed: int = 0,
    num_train: int = 2000,
    num_val: int = 100,
    num_test: int = 100,
    image_size: int = 64,
    captions_per_image: int = 5,
) -> dict[str, CaptionedImages]:
    """The ``"train"``, ``"val"`` and ``"test"`` splits of the shapes dataset.

    Records are keyed ``shapes-{split}-{index:06d}`` and hold ``captions_per_image`` (1 to 5)
    distinct captions. ``load_image`` is picklable and renders a record as an RGB image of
    ``image_size`` pixels square. The same arguments give identical records and pixels in any
    process; different seeds give different data; no image appears twice in or across splits.
    """
    sizes = {"train": num_train, "val": num_val, "test": num_test}
    return {
        name: _build_split(name, seed, num_images, image_size, captions_per_image)
        for name, num_images in sizes.items()
    }


def render_shapes(spec: dict, image_size: int) -> Image.Image:
    """Draw a record's ``spec`` as an RGB image of ``image_size`` pixels square (anti-aliased)."""
    canvas_size = image_size * _SUPERSAMPLE
    image = Image.new("RGB", (canvas_size, canvas_size), tuple(spec["background_rgb"]))
    draw = ImageDraw.Draw(image)
    cell = canvas_size / 3
    for shape in spec["shapes"]:
        row, col = shape["cell"]
        dx, dy = shape["jitter"]
        cx, cy = (col + 0.5 + dx) * cell, (row + 0.5 + dy) * cell
        half = _SIZES[shape["size"]] * cell
        fill = _COLORS[shape["color"]]
        if shape["kind"] == "circle":
            draw.ellipse((cx - half, cy - half, cx + half, cy + half), fill=fill)
        else:
            draw.polygon([(cx + half * x, cy + half * y) for x, y in _OUTLINES[shape["kind"]]], fill=fill)
    return image.reduce(_SUPERSAMPLE)


def caption_shapes(spec: dict, seed: int = 0, count: int = MAX_CAPTIONS_PER_IMAGE) -> tuple[str, ...]:
    """``count`` (1 to 5) distinct lowercase captions of ``spec``, written as the dataset writes
    them: each is true of the spec and names every shape's colour and kind; ``seed`` chooses the
    templates, the wording and the order of shapes."""
    return write_captions(spec, Draws(np.random.default_rng(seed)), count)


def _build_split(
    name: str, seed: int, num_images: int, image_size: int, captions_per_image: int
) -> CaptionedImages:
    draws = Draws(np.random.default_rng([seed, zlib.crc32(name.encode())]))
    records: list[ImageRecord] = []
    seen: set[str] = set()
    while len(records) < num_images:
        spec = _random_spec(draws)
        layout = _layout(spec)
        if layout in seen or _owner(layout) != name:
            continue
        seen.add(layout)
        captions = write_captions(spec, draws, captions_per_image)
        records.append(ImageRecord(f"shapes-{name}-{len(records):06d}", captions, spec=spec))
    load_image = functools.partial(_render_record, image_size=image_size)
    return CaptionedImages(name, records, captions_per_image, load_image)


def _render_record(record: ImageRecord, image_size: int) -> Image.Image:
    return render_shapes(record.spec, image_size)


def _random_spec(draws: Draws) -> dict:
    background = draws.pick(tuple(_BACKGROUND_LEVELS))
    low, high = _BACKGROUND_LEVELS[background]
    level = low + int(draws.random() * (high - low))
    tints = (int(draws.random() * (2 * _MAX_TINT + 1)) - _MAX_TINT for _ in range(3))
    background_rgb = tuple(level + tint for tint in tints)

    count = draws.pick((1, 2, 3))
    looks = draws.sample(_LOOKS[background], count)
    cells = draws.sample(_CELLS, count)
    shapes = tuple(
        {
            "color": color,
            "kind": kind,
            "size": draws.pick(tuple(_SIZES)),
            "cell": cell,
            "jitter": tuple(round(_MAX_JITTER * (2 * draws.random() - 1), 3) for _ in range(2)),
        }
        for (color, kind), cell in zip(looks, cells)
    )
    return {"background": background, "background_rgb": background_rgb, "shapes": shapes}


def _layout(spec: dict) -> str:
    """What captions can tell apart: the background tone and each shape's look and cell."""
    shapes = sorted(f"{s['color']} {s['kind']} {s['size']} {s['cell']}" for s in spec["shapes"])
    return "|".join([spec["background"], *shapes])


def _owner(layout: str) -> str:
    """The one split a layout may appear in: a tenth each for val and test, the rest for train."""
    return {0: "test", 1: "val"}.get(zlib.crc32(layout.encode()) % 10, "train")
