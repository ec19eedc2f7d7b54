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

MAX_CAPTIONS_PER_IMAGE = 5

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

_KIND_WORDS = {
    "circle": ("circle", "disc"),
    "square": ("square", "block"),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus"),
    "cross": ("cross",),
}
_SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
_COUNT_WORDS = {1: "a single", 2: "two", 3: "three"}
_OBJECT_WORDS = (("shape", "shapes"), ("object", "objects"), ("figure", "figures"))
_POSITION_WORDS = {
    (0, 0): ("in the top left corner", "at the top left", "in the upper left"),
    (0, 1): ("at the top", "at the top center", "in the top middle"),
    (0, 2): ("in the top right corner", "at the top right", "in the upper right"),
    (1, 0): ("on the left", "on the left side", "at the middle left"),
    (1, 1): ("in the center", "in the middle"),
    (1, 2): ("on the right", "on the right side", "at the middle right"),
    (2, 0): ("in the bottom left corner", "at the bottom left", "in the lower left"),
    (2, 1): ("at the bottom", "at the bottom center", "in the bottom middle"),
    (2, 2): ("in the bottom right corner", "at the bottom right", "in the lower right"),
}
_VERTICAL_WORDS = {"above": ("above",), "below": ("below", "beneath")}
_ALONE_WORDS = ("alone", "on its own", "by itself")
_BACKDROP_WORDS = ("on a {} background", "against a {} backdrop")


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
    return _captions(spec, _Draws(np.random.default_rng(seed)), count)


class _Draws:
    """Uniform draws from a numpy generator, fetched a block at a time (scalar numpy calls are slow)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._block: list[float] = []

    def random(self) -> float:
        if not self._block:
            self._block = self._rng.random(1024).tolist()
        return self._block.pop()

    def pick(self, options):
        return options[int(self.random() * len(options))]

    def coin(self) -> bool:
        return self.random() < 0.5

    def sample(self, items, k: int) -> list:
        """``k`` distinct items in random order."""
        pool = list(items)
        for i in range(k):
            j = i + int(self.random() * (len(pool) - i))
            pool[i], pool[j] = pool[j], pool[i]
        return pool[:k]

    def shuffled(self, items) -> list:
        return self.sample(items, len(items))


def _build_split(
    name: str, seed: int, num_images: int, image_size: int, captions_per_image: int
) -> CaptionedImages:
    draws = _Draws(np.random.default_rng([seed, zlib.crc32(name.encode())]))
    records: list[ImageRecord] = []
    seen: set[str] = set()
    while len(records) < num_images:
        spec = _random_spec(draws)
        layout = _layout(spec)
        if layout in seen or _owner(layout) != name:
            continue
        seen.add(layout)
        captions = _captions(spec, draws, captions_per_image)
        records.append(ImageRecord(f"shapes-{name}-{len(records):06d}", captions, spec=spec))
    load_image = functools.partial(_render_record, image_size=image_size)
    return CaptionedImages(name, records, captions_per_image, load_image)


def _render_record(record: ImageRecord, image_size: int) -> Image.Image:
    return render_shapes(record.spec, image_size)


def _random_spec(draws: _Draws) -> dict:
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


def _captions(spec: dict, draws: _Draws, count: int) -> tuple[str, ...]:
    """``count`` (1 to 5) distinct lowercase captions, each true of ``spec`` and naming every
    shape's colour and kind, from as many different templates picked at random.

    Every template leaves a mark no other template makes (a count and colon, a position for every
    shape, a relation word, a background word, ...), so different templates never give equal captions.
    """
    if not 1 <= count <= MAX_CAPTIONS_PER_IMAGE:
        raise ValueError(f"captions per image must be between 1 and {MAX_CAPTIONS_PER_IMAGE}, got {count}")
    shapes = list(spec["shapes"])
    templates = [_inventory, _placement, _relation, _backdrop, _size_groups]
    if len(shapes) > 1 and _reading_axes(shapes):
        templates.append(_reading_order)
    return tuple(template(shapes, spec["background"], draws) for template in draws.sample(templates, count))


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _phrase(shape: dict, draws: _Draws, size: bool) -> str:
    """'a large red circle', 'one red disc', 'an orange cross', ..."""
    words = [draws.pick(_SIZE_WORDS[shape["size"]])] if size else []
    words += [shape["color"], draws.pick(_KIND_WORDS[shape["kind"]])]
    article = draws.pick(("a", "one"))
    if article == "a" and words[0][0] in "aeiou":
        article = "an"
    return " ".join([article, *words])


def _position(shape: dict, draws: _Draws) -> str:
    return draws.pick(_POSITION_WORDS[shape["cell"]])


def _inventory(shapes: list[dict], background: str, draws: _Draws) -> str:
    """'two shapes: a large red circle and one small blue square'"""
    singular, plural = draws.pick(_OBJECT_WORDS)
    noun = singular if len(shapes) == 1 else plural
    listed = _join([_phrase(s, draws, size=True) for s in draws.shuffled(shapes)])
    return f"{_COUNT_WORDS[len(shapes)]} {noun}: {listed}"


def _placement(shapes: list[dict], background: str, draws: _Draws) -> str:
    """'a red circle in the top left corner and one blue square at the bottom'"""
    return _join([f"{_phrase(s, draws, size=False)} {_position(s, draws)}" for s in draws.shuffled(shapes)])


def _relation(shapes: list[dict], background: str, draws: _Draws) -> str:
    """'a red circle to the left of a small blue square, with a green cross at the bottom'"""
    if len(shapes) == 1:
        (shape,) = shapes
        return f"{_phrase(shape, draws, draws.coin())} {draws.pick(_ALONE_WORDS)} {_position(shape, draws)}"
    first, second, *rest = draws.shuffled(shapes)
    relation = _relation_words(first, second, draws)
    caption = f"{_phrase(first, draws, draws.coin())} {relation} {_phrase(second, draws, draws.coin())}"
    for shape in rest:
        caption += f", with {_phrase(shape, draws, size=False)} {_position(shape, draws)}"
    return caption


def _relation_words(shape: dict, other: dict, draws: _Draws) -> str:
    """Where ``shape`` lies relative to ``other`` (in another cell), e.g. 'above and to the left of'."""
    (row, col), (other_row, other_col) = shape["cell"], other["cell"]
    horizontal = "left" if col < other_col else "right" if col > other_col else None
    vertical = "above" if row < other_row else "below" if row > other_row else None
    options: list[str] = []
    if horizontal:
        options += [f"to the {horizontal} of", f"{horizontal} of"]
    if vertical:
        options += _VERTICAL_WORDS[vertical]
    if horizontal and vertical:
        options.append(f"{vertical} and to the {horizontal} of")
    return draws.pick(options)


def _backdrop(shapes: list[dict], background: str, draws: _Draws) -> str:
    """'a big red circle and a blue square on a dark background'"""
    listed = _join([_phrase(s, draws, draws.coin()) for s in draws.shuffled(shapes)])
    return f"{listed} {draws.pick(_BACKDROP_WORDS).format(background)}"


def _size_groups(shapes: list[dict], background: str, draws: _Draws) -> str:
    """'two big shapes, a red circle and a blue square, and one small green cross'"""
    groups = []
    for size in draws.shuffled(list(_SIZE_WORDS)):
        members = [s for s in draws.shuffled(shapes) if s["size"] == size]
        size_word = draws.pick(_SIZE_WORDS[size])
        if len(members) == 1:
            (shape,) = members
            groups.append(f"one {size_word} {shape['color']} {draws.pick(_KIND_WORDS[shape['kind']])}")
        elif members:
            _, plural = draws.pick(_OBJECT_WORDS)
            listed = _join([_phrase(s, draws, size=False) for s in members])
            groups.append(f"{_COUNT_WORDS[len(members)]} {size_word} {plural}, {listed},")
    return " and ".join(groups).rstrip(",")


def _reading_axes(shapes: list[dict]) -> list[tuple[str, int]]:
    """The reading orders that are unambiguous: shapes in distinct columns, or in distinct rows."""
    axes = [("from left to right", 1), ("from top to bottom", 0)]
    return [
        (heading, axis) for heading, axis in axes if len({s["cell"][axis] for s in shapes}) == len(shapes)
    ]


def _reading_order(shapes: list[dict], background: str, draws: _Draws) -> str:
    """'from left to right: a small red circle, a blue square and a green cross'"""
    heading, axis = draws.pick(_reading_axes(shapes))
    ordered = sorted(shapes, key=lambda s: s["cell"][axis])
    return f"{heading}: " + _join([_phrase(s, draws, draws.coin()) for s in ordered])
