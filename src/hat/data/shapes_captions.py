"""The captions of a generated shapes image (:mod:`hat.data.shapes`): templates and their wording."""

from __future__ import annotations

import numpy as np

MAX_CAPTIONS_PER_IMAGE = 5

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



class Draws:
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


def write_captions(spec: dict, draws: Draws, count: int) -> tuple[str, ...]:
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


def _phrase(shape: dict, draws: Draws, size: bool) -> str:
    """'a large red circle', 'one red disc', 'an orange cross', ..."""
    words = [draws.pick(_SIZE_WORDS[shape["size"]])] if size else []
    words += [shape["color"], draws.pick(_KIND_WORDS[shape["kind"]])]
    article = draws.pick(("a", "one"))
    if article == "a" and words[0][0] in "aeiou":
        article = "an"
    return " ".join([article, *words])


def _position(shape: dict, draws: Draws) -> str:
    return draws.pick(_POSITION_WORDS[shape["cell"]])


def _inventory(shapes: list[dict], background: str, draws: Draws) -> str:
    """'two shapes: a large red circle and one small blue square'"""
    singular, plural = draws.pick(_OBJECT_WORDS)
    noun = singular if len(shapes) == 1 else plural
    listed = _join([_phrase(s, draws, size=True) for s in draws.shuffled(shapes)])
    return f"{_COUNT_WORDS[len(shapes)]} {noun}: {listed}"


def _placement(shapes: list[dict], background: str, draws: Draws) -> str:
    """'a red circle in the top left corner and one blue square at the bottom'"""
    return _join([f"{_phrase(s, draws, size=False)} {_position(s, draws)}" for s in draws.shuffled(shapes)])


def _relation(shapes: list[dict], background: str, draws: Draws) -> str:
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


def _relation_words(shape: dict, other: dict, draws: Draws) -> str:
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


def _backdrop(shapes: list[dict], background: str, draws: Draws) -> str:
    """'a big red circle and a blue square on a dark background'"""
    listed = _join([_phrase(s, draws, draws.coin()) for s in draws.shuffled(shapes)])
    return f"{listed} {draws.pick(_BACKDROP_WORDS).format(background)}"


def _size_groups(shapes: list[dict], background: str, draws: Draws) -> str:
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


def _reading_order(shapes: list[dict], background: str, draws: Draws) -> str:
    """'from left to right: a small red circle, a blue square and a green cross'"""
    heading, axis = draws.pick(_reading_axes(shapes))
    ordered = sorted(shapes, key=lambda s: s["cell"][axis])
    return f"{heading}: " + _join([_phrase(s, draws, draws.coin()) for s in ordered])
