"""explain.py: per-level attention maps of one image and one caption, drawn over the image."""

from __future__ import annotations

import subprocess
import sys

import pytest
from PIL import Image, ImageChops

import hat
from conftest import ROOT
from hat.attention_drawing import draw_attention, figure_layout, region_grid
from hat.data.build import build_splits
from hat.data.spec import data_spec
from hat.explain import attention_figure, model_view

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def example(retrieving_run, tmp_path_factory):
    """The trained model, one test image saved as a file, and that image's first caption."""
    retriever = hat.load(retrieving_run / "checkpoints" / "best.pt", device="cpu")
    split = build_splits(data_spec(retriever.config.dataset), retriever.config.seed)["test"]
    path = tmp_path_factory.mktemp("explain") / "image.png"
    split.load_image(split.records[3]).save(path)
    return retriever, path, split.records[3].captions[0]


def _expected_size(tokens: int, cell: int, sides=(8, 4, 2)) -> tuple[int, int]:
    """The figure's size for the tiny model's three levels (8x8, 4x4 and 2x2 regions of a 64-pixel image)."""
    return figure_layout(sides, cell, tokens).size


def test_the_figure_has_a_row_pair_per_level_and_a_column_per_token(example):
    retriever, path, caption = example
    tokens = retriever.tokens(caption)
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    figure = attention_figure(retriever, path, caption, cell=48)
    assert figure.size == _expected_size(len(tokens), 48)
    assert len(set(figure.getdata())) > 500  # heat-maps over the image, not a blank canvas
    other = attention_figure(retriever, path, "two small green discs at the top", cell=48)
    assert other.size != figure.size or ImageChops.difference(figure, other).getbbox() is not None
    assert attention_figure(retriever, path, caption, cell=32, max_words=3).size == _expected_size(3, 32)
    wide = attention_figure(retriever, path, "a dog", cell=32, max_words=20, full_width=True)
    assert wide.size == _expected_size(20, 32)


def test_the_maps_follow_the_image_the_model_sees():
    wide = Image.new("RGB", (300, 100), (255, 0, 0))
    assert model_view(wide, 64).size == (64, 64)


def test_the_figure_draws_the_models_own_weights(example):
    retriever, path, caption = example
    levels = retriever.attention(path, caption)
    assert [region_grid(level.t2i.shape[1]) for level in levels] == [8, 4, 2]
    tokens = retriever.tokens(caption)
    view = model_view(Image.open(path), retriever.image_size)
    expected = draw_attention(view, levels, tokens, caption, 48, 16)
    assert ImageChops.difference(attention_figure(retriever, path, caption, cell=48), expected).getbbox() is None


def test_cli_writes_the_figure_and_names_a_missing_image(example, tmp_path):
    retriever, path, caption = example
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "explain.py", f"checkpoint={retriever.source.path}", f"image={path}", f"caption={caption}",
         "hardware=cpu", "cell=40", f"hydra.run.dir={run}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert Image.open(run / "attention.png").size == _expected_size(len(retriever.tokens(caption)), 40)
    missing = subprocess.run(
        [sys.executable, "explain.py", f"checkpoint={retriever.source.path}", f"image={tmp_path / 'none.png'}",
         "caption=a dog", "hardware=cpu", f"hydra.run.dir={tmp_path / 'run2'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert missing.returncode == 2 and "none.png" in missing.stderr and "Traceback" not in missing.stderr
