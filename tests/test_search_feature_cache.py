"""The on-disk image features of search: reused while nothing changes, re-encoded where something did."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil

import pytest
import torch
from safetensors.torch import save

import hat
import hat.search.feature_cache as feature_cache
from hat.config import ConfigError
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


def _same_as_direct_encoding(retriever, folder, shards) -> bool:
    blocks = list(read_shards(shards, torch.device("cpu")))
    cached = [torch.cat([features.levels[k] for _, features in blocks]) for k in range(3)]
    direct = retriever.encode_images([folder / name for name in list_images(folder)], batch_size=4)
    return all(torch.equal(a.float(), b.float()) for a, b in zip(cached, direct.levels))


def test_damaged_cache_files_are_encoded_again_with_a_warning_naming_each(setup, caplog):
    retriever, folder, cache, _, encoded = setup
    shards = _build(retriever, folder, cache)
    truncated, garbage, foreign = (shard.path for shard in shards)
    truncated.write_bytes(truncated.read_bytes()[:-100])
    garbage.write_text("not a safetensors file")
    foreign.write_bytes(save({"level1": torch.zeros(4, 2)},
                             metadata={"images": json.dumps(shards[2].images), "skipped": "[]"}))
    with caplog.at_level(logging.WARNING):
        again = _build(retriever, folder, cache)
    assert [shard.path for shard in again] == [truncated, garbage, foreign] and sum(encoded) == 40
    for path in (truncated, garbage, foreign):
        assert f"feature cache file {path} cannot be read (" in caplog.text
    assert "it holds ['level1'], expected ['level1', 'level2', 'level3']" in caplog.text
    assert _same_as_direct_encoding(retriever, folder, again)
    assert sorted(p.name for p in truncated.parent.iterdir()) == sorted(p.name for p in (truncated, garbage, foreign))


def test_a_full_cache_disk_is_one_line_naming_the_file_and_keeps_the_shards_written(setup, small_disk):
    retriever, folder, cache, _, encoded = setup
    shard_bytes = _build(retriever, folder, cache)[0].path.stat().st_size
    disk = small_disk("8m")
    filler = disk / "filler"
    filler.write_bytes(b"\0" * (shutil.disk_usage(disk).free - shard_bytes * 3 // 2))  # room for one shard
    with pytest.raises(ConfigError) as error:
        _build(retriever, folder, disk / "cache")
    message = str(error.value)
    assert re.fullmatch(rf"cannot write the feature cache file {re.escape(str(disk))}/cache/\w+/shard-\w+"
                        rf"\.safetensors: the disk is full \(No space left on device\); free space on "
                        rf"{re.escape(str(disk))} \([\d.]+ \w+ free now\), or point cache_dir= at another folder",
                        message), message
    (home,) = (disk / "cache").iterdir()
    assert len(list(home.iterdir())) == 1  # the first shard stays; no temporary file
    filler.unlink()
    assert sum(encoded) == 20 + 16
    assert _same_as_direct_encoding(retriever, folder, _build(retriever, folder, disk / "cache"))
    assert sum(encoded) == 20 + 16 + 12  # the shard written before the disk filled up is used


def test_a_read_only_cache_serves_what_it_holds_and_names_a_file_it_cannot_replace(setup, small_disk, caplog):
    retriever, folder, _, _, encoded = setup
    disk = small_disk("8m")
    shards = _build(retriever, folder, disk)
    stale = shards[0].path.with_name("shard-outdated.safetensors")
    shutil.copy(shards[0].path, stale)
    small_disk.remount(disk, "ro")
    with caplog.at_level(logging.WARNING):
        assert _same_as_direct_encoding(retriever, folder, _build(retriever, folder, disk))
    assert f"cannot delete the outdated feature cache file {stale} (Read-only file system)" in caplog.text
    assert sum(encoded) == 20

    small_disk.remount(disk, "rw")
    shards[1].path.write_text("damaged")
    small_disk.remount(disk, "ro")
    with pytest.raises(ConfigError, match=re.escape(
            f"cannot write the feature cache file {shards[1].path}: {disk} is mounted read-only (Read-only file "
            f"system); remount {disk} read-write, or point cache_dir= at another folder")):
        _build(retriever, folder, disk)



def test_a_shard_damaged_during_the_search_is_one_line_naming_it(setup):
    retriever, folder, cache, _, _ = setup
    shards = _build(retriever, folder, cache)
    shards[1].path.write_bytes(b"")
    blocks = read_shards(shards, torch.device("cpu"))
    next(blocks)
    with pytest.raises(ConfigError, match=re.escape(f"cannot read the feature cache file {shards[1].path} (")
                       + r".+\): it changed during the search; search again \(a damaged file is then encoded again\)$"):
        next(blocks)
