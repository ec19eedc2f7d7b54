"""The on-disk image features of search: reused while nothing changes, re-encoded where something did."""

from __future__ import annotations

import logging
import os
import shutil

import pytest
import torch

import hat
import hat.search.feature_cache as feature_cache
from hat.data.build import build_splits
from hat.data.spec import data_spec
from hat.data.split_folder import write_split_folder
from hat.search.feature_cache import build_cache, list_images, read_shards

pytestmark = pytest.mark.slow


@pytest.fixture
def setup(retrieving_run, tmp_path, monkeypatch):
    """A retriever loaded from a copy of the trained checkpoint (the test changes its time stamp), a
    folder of the 20 test images, and a counter of the images the cache encodes."""
    checkpoint = tmp_path / "model.pt"
    shutil.copy(retrieving_run / "checkpoints" / "best.pt", checkpoint)
    retriever = hat.load(checkpoint, device="cpu")
    test = build_splits(data_spec(retriever.config.dataset), retriever.config.seed)["test"]
    write_split_folder(test, tmp_path / "images")
    encoded = []
    original = feature_cache.encode_image_batch
    monkeypatch.setattr(feature_cache, "encode_image_batch",
                        lambda model, pixels, runtime: encoded.append(len(pixels)) or original(model, pixels, runtime))
    return retriever, tmp_path / "images", tmp_path / "cache", checkpoint, encoded


def _build(retriever, folder, cache):
    return build_cache(retriever, folder, cache, shard_size=8, batch_size=4, progress=False)


def test_features_are_cached_in_shards_and_equal_direct_encoding(setup):
    retriever, folder, cache, _, encoded = setup
    shards = _build(retriever, folder, cache)
    assert [len(shard.images) for shard in shards] == [8, 8, 4] and sum(encoded) == 20
    blocks = list(read_shards(shards, torch.device("cpu")))
    assert [len(features) for _, features in blocks] == [8, 8, 4]  # one shard in memory at a time
    cached = [torch.cat([features.levels[k] for _, features in blocks]) for k in range(3)]
    direct = retriever.encode_images([folder / name for name in list_images(folder)], batch_size=4)
    assert all(level.dtype == torch.float16 for level in cached)
    assert all(torch.equal(a, b) for a, b in zip(cached, direct.levels))


def test_unchanged_files_reuse_the_cache_and_a_changed_file_re_encodes_its_shard_only(setup):
    retriever, folder, cache, checkpoint, encoded = setup
    first = _build(retriever, folder, cache)
    assert [shard.path for shard in _build(retriever, folder, cache)] == [shard.path for shard in first]
    assert sum(encoded) == 20  # nothing encoded the second time

    shutil.copy(folder / "010.png", folder / "003.png")  # image 3 now shows image 10
    changed = _build(retriever, folder, cache)
    assert sum(encoded) == 20 + 8
    assert changed[0].path != first[0].path and [s.path for s in changed[1:]] == [s.path for s in first[1:]]
    assert not first[0].path.exists()  # the outdated shard is removed
    blocks = list(read_shards(changed, torch.device("cpu")))
    first_block, second_block = blocks[0][1], blocks[1][1]
    assert torch.equal(first_block.levels[2][3], second_block.levels[2][2])  # 003.png == 010.png now

    os.utime(checkpoint, ns=(checkpoint.stat().st_atime_ns, checkpoint.stat().st_mtime_ns + 10**9))  # new weights
    _build(retriever, folder, cache)
    assert sum(encoded) == 20 + 8 + 20


def test_unreadable_images_are_left_out_and_named_every_time(setup, caplog):
    retriever, folder, cache, _, _ = setup
    (folder / "broken.png").write_bytes(b"not a picture")
    for _ in range(2):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            shards = _build(retriever, folder, cache)
        assert "broken.png" in caplog.text and "not an image file" in caplog.text
        assert sum(len(shard.images) for shard in shards) == 20
        assert all("broken.png" not in shard.images for shard in shards)


def test_a_folder_without_images_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        list_images(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(FileNotFoundError, match="holds no image files"):
        list_images(tmp_path)
