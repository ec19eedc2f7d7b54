"""The embedded shapes dataset: determinism, disjoint splits, caption truth, and images."""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hat.data import shapes as shapes_module
from hat.data.shapes import build_shapes_splits, caption_shapes, render_shapes

COLORS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
KIND_WORDS = {
    "circle": ("circle", "disc"),
    "square": ("square", "block"),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus"),
    "cross": ("cross",),
}
RELATION = re.compile(r"\b(left of|right of|above|below|beneath)\b")
COLOR_WORD = re.compile(r"\b(" + "|".join(COLORS) + r")\b")


@pytest.fixture(scope="module")
def splits():
    return build_shapes_splits()


def fingerprint(seed: int) -> str:
    """A digest of the keys, captions, specs and pixels of a small build."""
    digest = hashlib.sha256()
    for split in build_shapes_splits(seed, num_train=20, num_val=5, num_test=5, image_size=32).values():
        for record in split.records:
            digest.update(repr((record.key, record.captions, record.spec)).encode())
            digest.update(split.load_image(record).tobytes())
    return digest.hexdigest()


def layout(record) -> tuple:
    shapes = sorted((s["color"], s["kind"], s["size"], tuple(s["cell"])) for s in record.spec["shapes"])
    return (record.spec["background"], *shapes)


def shape(color: str, kind: str, cell: tuple[int, int], size: str = "large") -> dict:
    return {"color": color, "kind": kind, "size": size, "cell": cell, "jitter": (0.0, 0.0)}


def test_default_split_sizes_and_keys(splits):
    assert {name: len(split) for name, split in splits.items()} == {"train": 2000, "val": 100, "test": 100}
    test = splits["test"]
    assert test.captions_per_image == 5 and test.num_pairs == 500 and len(test.captions()) == 500
    assert [record.key for record in test.records[:2]] == ["shapes-test-000000", "shapes-test-000001"]
    assert all(record.path is None for split in splits.values() for record in split.records)


def test_same_seed_same_data_across_processes():
    src = Path(shapes_module.__file__).resolve().parents[2]
    path = os.pathsep.join([str(src), str(Path(__file__).parent)])
    env = {**os.environ, "PYTHONPATH": path, "PYTHONHASHSEED": "12345"}
    child = subprocess.run(
        [sys.executable, "-c", "from test_shapes import fingerprint; print(fingerprint(3))"],
        env=env, capture_output=True, text=True, check=True,
    )
    assert child.stdout.strip() == fingerprint(3) == fingerprint(3)


def test_different_seeds_differ():
    assert fingerprint(0) != fingerprint(1)


def test_no_image_repeats_within_or_across_splits(splits):
    layouts = {name: [layout(record) for record in split.records] for name, split in splits.items()}
    for name, found in layouts.items():
        assert len(set(found)) == len(found), name
    assert not set(layouts["train"]) & set(layouts["val"])
    assert not set(layouts["train"]) & set(layouts["test"])
    assert not set(layouts["val"]) & set(layouts["test"])


def test_shapes_fit_the_grid(splits):
    for record in splits["train"].records:
        shapes = record.spec["shapes"]
        assert 1 <= len(shapes) <= 3
        assert len({tuple(s["cell"]) for s in shapes}) == len(shapes)
        assert len({(s["color"], s["kind"]) for s in shapes}) == len(shapes)


def test_five_distinct_short_lowercase_captions_naming_every_shape(splits):
    for split in splits.values():
        for record in split.records:
            assert len(set(record.captions)) == 5, record.captions
            for caption in record.captions:
                assert caption == caption.lower() and len(caption.split()) <= 25, caption
                for s in record.spec["shapes"]:
                    assert s["color"] in caption, (caption, s)
                    assert any(word in caption for word in KIND_WORDS[s["kind"]]), (caption, s)


def test_captions_per_image_is_configurable():
    split = build_shapes_splits(num_train=10, num_val=2, num_test=2, captions_per_image=3)["train"]
    assert all(len(set(record.captions)) == 3 for record in split.records)
    with pytest.raises(ValueError, match="between 1 and 5"):
        build_shapes_splits(num_train=10, num_val=2, num_test=2, captions_per_image=6)


def test_relations_in_hand_built_scene_are_true():
    spec = {
        "background": "light",
        "background_rgb": (210, 210, 210),
        "shapes": (shape("blue", "square", (1, 2)), shape("red", "circle", (1, 0))),
    }
    captions = [caption for seed in range(60) for caption in caption_shapes(spec, seed)]
    left = [c for c in captions if "left of" in c]
    right = [c for c in captions if "right of" in c]
    ordered = [c for c in captions if c.startswith("from left to right:")]
    assert left and right and ordered
    assert all(c.index("red") < c.index("left of") < c.index("blue") for c in left)
    assert all(c.index("blue") < c.index("right of") < c.index("red") for c in right)
    assert all(c.index("red") < c.index("blue") for c in ordered)
    assert not any(word in c for c in captions for word in ("above", "below", "beneath", "top to bottom"))


def test_relations_and_reading_orders_in_generated_captions_are_true(splits):
    checked = 0
    for split in splits.values():
        for record in split.records[:400]:
            cells = {s["color"]: s["cell"] for s in record.spec["shapes"]}
            if len(cells) < len(record.spec["shapes"]):
                continue  # two shapes of one colour: a colour does not name a shape
            for caption in record.captions:
                for match in RELATION.finditer(caption):
                    (row, col) = cells[COLOR_WORD.findall(caption[: match.start()])[-1]]
                    (other_row, other_col) = cells[COLOR_WORD.search(caption, match.end()).group()]
                    assert {
                        "left of": col < other_col,
                        "right of": col > other_col,
                        "above": row < other_row,
                        "below": row > other_row,
                        "beneath": row > other_row,
                    }[match.group()], caption
                    checked += 1
                for heading, axis in (("from left to right:", 1), ("from top to bottom:", 0)):
                    if caption.startswith(heading):
                        order = [cells[color][axis] for color in COLOR_WORD.findall(caption)]
                        assert order == sorted(set(order)), caption
    assert checked > 100


@pytest.mark.parametrize("image_size", [64, 96])
def test_images_are_rgb_of_the_requested_size_with_shapes_where_the_spec_says(image_size):
    split = build_shapes_splits(num_train=10, num_val=2, num_test=2, image_size=image_size)["train"]
    load_image = pickle.loads(pickle.dumps(split.load_image))
    for record in split.records:
        image = load_image(record)
        assert image.mode == "RGB" and image.size == (image_size, image_size)
        pixels = np.asarray(image)
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1
        background = np.asarray(record.spec["background_rgb"])
        for s in record.spec["shapes"]:
            (row, col), (dx, dy) = s["cell"], s["jitter"]
            x, y = int((col + 0.5 + dx) * image_size / 3), int((row + 0.5 + dy) * image_size / 3)
            assert np.abs(pixels[y, x].astype(int) - background).sum() > 60, (record.key, s)
        assert np.array_equal(pixels, np.asarray(render_shapes(record.spec, image_size)))
