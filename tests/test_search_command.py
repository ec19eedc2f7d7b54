"""search.py: text queries over a folder of images, and the lines of a text file for an image."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from omegaconf import OmegaConf
from PIL import Image

import hat
import hat.search.command as command
from conftest import ROOT
from hat.config import ConfigError
from hat.data.build import build_splits
from hat.data.spec import data_spec
from hat.data.split_folder import write_split_folder
from hat.search.command import search_captions, search_images, search_mode

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def searchable(retrieving_run, tmp_path_factory):
    """The trained model, a folder of its 20 test images and each image's five captions."""
    retriever = hat.load(retrieving_run / "checkpoints" / "best.pt", device="cpu")
    folder = tmp_path_factory.mktemp("search") / "images"
    test = build_splits(data_spec(retriever.config.dataset), retriever.config.seed)["test"]
    captions = write_split_folder(test, folder)
    return retriever, folder, captions


def _request(**fields):
    return OmegaConf.create({"images": None, "query": None, "captions": None, "image": None, "top_k": 5,
                             "cache_dir": None, "shard_size": 8, "batch_size": 8, "num_workers": 0,
                             "thumbnail": 48, "progress": False, **fields})


def test_each_images_own_captions_find_it_far_above_chance(searchable, tmp_path, monkeypatch):
    retriever, folder, captions = searchable
    queries = [(text, f"{image:03d}.png") for image, texts in enumerate(captions) for text in texts]
    blocks = []
    original = command.read_shards
    monkeypatch.setattr(command, "read_shards", lambda shards, device: (
        blocks.append(len(features)) or (names, features) for names, features in original(shards, device)))
    results = search_images(retriever, _request(images=str(folder), query=[q for q, _ in queries],
                                                cache_dir=str(tmp_path / "cache")), tmp_path)
    found = sum(image in [hit.item for hit in hits] for (_, image), hits in zip(queries, results)) / len(queries)
    assert found >= 0.5  # the image is in the top 5 of 20; chance: 0.25
    assert blocks == [8, 8, 4]  # scored one cached block at a time
    assert all(hits[0].score == pytest.approx(sum(hits[0].level_scores), abs=1e-5) for hits in results)

    saved = json.loads((tmp_path / "search.json").read_text())["results"]
    assert len(saved) == len(set(q for q, _ in queries)) and all(len(hits) == 5 for hits in saved.values())
    sheet = Image.open(tmp_path / "contact_sheet.png")
    rows = len(queries)
    assert sheet.size == (8 + 5 * (48 + 8), 8 + rows * (22 + 48 + 30 + 8))
    assert len(set(sheet.convert("RGB").getdata())) > 50  # thumbnails and text, not a blank page


def test_the_lines_of_a_file_are_ranked_for_an_image(searchable, tmp_path):
    retriever, folder, captions = searchable
    lines = tmp_path / "captions.txt"
    lines.write_text("\n".join(text for texts in captions for text in texts) + "\n\n")
    own = 0
    for image, texts in enumerate(captions):
        hits = search_captions(retriever, _request(captions=str(lines), image=str(folder / f"{image:03d}.png")),
                               tmp_path)
        own += sum(hit.item in texts for hit in hits)
        assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
    assert own / (5 * len(captions)) >= 0.15  # share of the top 5 that describe the image; chance: 0.05


def test_requests_that_are_not_one_search_are_refused_naming_the_fields(tmp_path):
    for fields in ({}, {"images": "x"}, {"images": "x", "query": "a", "captions": "f"}, {"image": "i.png"}):
        with pytest.raises(ConfigError, match="images=DIR query="):
            search_mode(_request(**fields))
    with pytest.raises(ConfigError, match="top_k"):
        search_mode(_request(images="x", query="a", top_k=0))


def test_cli_searches_a_folder_and_reports_a_missing_one(searchable, tmp_path):
    retriever, folder, captions = searchable
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "search.py", f"checkpoint={retriever.source.path}", f"images={folder}",
         f"query={captions[3][0]}", "hardware=cpu", f"cache_dir={tmp_path / 'cache'}", "progress=false",
         "top_k=3", f"hydra.run.dir={run}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"“{captions[3][0]}”" in result.stdout and "level3" in result.stdout
    assert Image.open(run / "contact_sheet.png").size == (8 + 3 * (160 + 8), 8 + 22 + 160 + 30 + 8)
    missing = subprocess.run(
        [sys.executable, "search.py", f"checkpoint={retriever.source.path}", f"images={tmp_path / 'nowhere'}",
         "query=a red circle", "hardware=cpu", f"hydra.run.dir={tmp_path / 'run2'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert missing.returncode == 2 and f"images={tmp_path / 'nowhere'}: no such folder" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_cli_a_full_cache_disk_is_one_line_naming_the_cache_file(searchable, tmp_path, small_disk):
    retriever, folder, captions = searchable
    disk = small_disk("4k")  # one page: the cache's folders fit, a shard of features does not
    result = subprocess.run(
        [sys.executable, "search.py", f"checkpoint={retriever.source.path}", f"images={folder}",
         "query=a red circle", "hardware=cpu", f"cache_dir={disk}", "progress=false", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: cannot write the feature cache file {disk}/"), line
    assert line.endswith("or point cache_dir= at another folder") and "the disk is full" in line, line
