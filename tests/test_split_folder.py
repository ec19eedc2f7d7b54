"""python -m hat.data.split_folder: a run's generated split as image files and a captions file."""

from __future__ import annotations

import pytest
from PIL import Image

from hat.data.split_folder import main

pytestmark = pytest.mark.slow


def test_writes_the_runs_test_images_and_captions(retrieving_run, tmp_path, capsys):
    out = tmp_path / "shapes_test"
    assert main([str(out), "--from", str(retrieving_run / "checkpoints" / "best.pt")]) == 0
    images = sorted(out.glob("*.png"))
    assert [p.name for p in images[:2]] == ["000.png", "001.png"] and len(images) == 20  # dataset.num_test
    assert Image.open(images[0]).size == (64, 64)
    lines = (out / "captions.txt").read_text().splitlines()
    assert len(lines) == 20 * 5 and all(lines)
    assert "20 images and 100 captions of shapes/test" in capsys.readouterr().out


def test_a_missing_checkpoint_is_named(tmp_path, capsys):
    assert main([str(tmp_path / "out"), "--from", str(tmp_path / "none.pt")]) == 2
    assert "none.pt does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
