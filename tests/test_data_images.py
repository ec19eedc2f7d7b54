"""Bad image files (empty, truncated, decompression bombs) found at start-up, dropped by
``dataset.skip_bad_images``, or named by the loader when a train image fails during training."""

from __future__ import annotations

import logging
import struct
import subprocess
import sys
import zlib

import pytest
from PIL import Image
from torch.utils.data import DataLoader

from conftest import ROOT, TINY_TRAINING, compose_config, make_karpathy_dataset, make_vsepp_coco_dataset
from hat.data.build import build_splits
from hat.data.datasets import PairDataset
from hat.data.problems import DatasetError
from hat.data.records import BadImageError, ImageRecord, load_image_file
from hat.data.spec import data_spec
from hat.data.transforms import eval_transform

BOMB_LIMIT = Image.MAX_IMAGE_PIXELS  # PIL warns above it and refuses above twice it
BOMB_SIDE = 20_000  # 400M pixels: PIL refuses to open it
WARNING_SIDE = 10_000  # 100M pixels: PIL opens it with a DecompressionBombWarning
assert BOMB_SIDE**2 > 2 * BOMB_LIMIT and BOMB_LIMIT < WARNING_SIDE**2 <= 2 * BOMB_LIMIT


def dataset_config(root, name="f30k", *overrides):
    """The ``dataset`` config ``python train.py dataset=NAME dataset.root=ROOT OVERRIDES`` reads."""
    return compose_config("train", [f"dataset={name}", f"dataset.root={root}", *overrides]).dataset


def truncate(path):
    """Cut a valid image file to half its bytes: the header survives, the pixel data does not."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def write_bomb(path, side=BOMB_SIDE):
    """Write a valid black PNG of mode ``"1"`` (one bit per pixel), ``side`` pixels square.

    Written by hand, not by PIL, which would hold one byte per pixel (400 MB) to save it; the
    file is a few hundred KB.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(bytes(side * (1 + (side + 7) // 8)), 1)  # each row: filter byte 0, then side bits
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def split_sizes(splits):
    return {name: len(split) for name, split in splits.items()}


def test_empty_image_files_in_every_split_are_named_at_start_up_or_dropped(tmp_path, caplog):
    root = make_karpathy_dataset(tmp_path, "f30k", {"train": 3, "val": 2, "test": 2})
    empty = {"train": "00001.jpg", "val": "00003.jpg", "test": "00006.jpg"}
    for name in empty.values():
        (root / "images" / name).write_bytes(b"")
    with pytest.raises(DatasetError, match=r"3 problem\(s\)") as error:
        build_splits(data_spec(dataset_config(root)), seed=0)
    for split, name in empty.items():
        assert f"{root / 'images' / name}: empty file (0 bytes) ({split} image {name})" in str(error.value)
    with caplog.at_level(logging.WARNING):
        splits = build_splits(data_spec(dataset_config(root, "f30k", "dataset.skip_bad_images=true")), seed=0)
    assert "skipped 3 bad image(s)" in caplog.text and "train 1, val 1, test 1" in caplog.text
    assert f"{root / 'images' / '00001.jpg'} (empty file (0 bytes))" in caplog.text
    assert split_sizes(splits) == {"train": 2, "val": 1, "test": 1}


def test_a_truncated_val_or_test_image_stops_the_run_at_start_up(tmp_path):
    root = make_karpathy_dataset(tmp_path, "f30k", {"train": 3, "val": 2, "test": 2})
    for name in ("00000.jpg", "00004.jpg", "00005.jpg"):  # train, val, test
        truncate(root / "images" / name)
    with pytest.raises(DatasetError, match=r"2 problem\(s\)") as error:
        build_splits(data_spec(dataset_config(root)), seed=0)
    message = str(error.value)
    assert f"{root / 'images' / '00004.jpg'}: does not decode: " in message and "(val image 00004.jpg)" in message
    assert f"{root / 'images' / '00005.jpg'}: does not decode: " in message and "(test image 00005.jpg)" in message
    assert "00000.jpg" not in message  # train images are decoded when loaded, or at start-up with skip_bad_images


def test_a_bad_train_image_fails_when_loaded_with_an_error_naming_it_even_from_a_worker(tmp_path):
    root = make_karpathy_dataset(tmp_path, "f30k", {"train": 2, "val": 1, "test": 1})
    bad = root / "images" / "00000.jpg"
    truncate(bad)
    train = build_splits(data_spec(dataset_config(root)), seed=0)["train"]
    with pytest.raises(BadImageError, match=rf"^{bad}: does not decode: ") as error:
        train.load_image(train.records[0])
    assert error.value.path == bad and error.value.reason.startswith("does not decode: ")
    batches = iter(DataLoader(PairDataset(train, eval_transform(32), seed=0), batch_size=10, num_workers=1))
    try:
        with pytest.raises(BadImageError, match=rf"{bad}: does not decode: "):  # rebuilt from the worker's message
            next(batches)
    finally:
        batches._shutdown_workers()  # left to the garbage collector, the worker would take 5 s to stop


@pytest.mark.parametrize(
    "damage, reason",
    [
        ("missing", "image file missing"),
        ("empty", r"empty file \(0 bytes\)"),
        ("junk", "not an image file PIL can read"),
        ("truncated", "does not decode: "),
        ("bomb", rf"possible decompression bomb: Image size \({BOMB_SIDE**2} pixels\) exceeds limit"),
        pytest.param(
            "over the warning limit",
            rf"{WARNING_SIDE}x{WARNING_SIDE} pixels exceeds the decompression-bomb limit of {BOMB_LIMIT} pixels",
            marks=pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
        ),
        pytest.param(
            "over the warning limit, warnings raised",
            rf"possible decompression bomb: Image size \({WARNING_SIDE**2} pixels\) exceeds limit of {BOMB_LIMIT}",
            marks=pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning"),
        ),
    ],
)
def test_the_loader_names_the_file_and_why_it_cannot_be_used(tmp_path, damage, reason):
    path = tmp_path / "picture.jpg"
    Image.new("RGB", (40, 32), (200, 30, 30)).save(path)
    if damage == "missing":
        path.unlink()
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "junk":
        path.write_bytes(b"not an image")
    elif damage == "truncated":
        truncate(path)
    else:
        write_bomb(path, BOMB_SIDE if damage == "bomb" else WARNING_SIDE)
    with pytest.raises(BadImageError, match=rf"^{path}: {reason}"):
        load_image_file(ImageRecord("picture.jpg", ("a caption",), path))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bombs_are_named_at_start_up_and_dropped_by_skip_bad_images(tmp_path, caplog):
    root = make_karpathy_dataset(tmp_path, "f30k", {"train": 3, "val": 2, "test": 2})
    images = root / "images"
    write_bomb(images / "00001.jpg")  # train: decoded at start-up only with skip_bad_images
    write_bomb(images / "00003.jpg", WARNING_SIDE)  # val: PIL would only warn
    write_bomb(images / "00005.jpg")  # test
    with pytest.raises(DatasetError, match=r"2 problem\(s\)") as error:
        build_splits(data_spec(dataset_config(root)), seed=0)
    message = str(error.value)
    assert (f"{images / '00003.jpg'}: {WARNING_SIDE}x{WARNING_SIDE} pixels exceeds the decompression-bomb limit "
            f"of {BOMB_LIMIT} pixels (PIL.Image.MAX_IMAGE_PIXELS) (val image 00003.jpg)") in message
    assert f"{images / '00005.jpg'}: possible decompression bomb: Image size ({BOMB_SIDE**2} pixels)" in message
    with caplog.at_level(logging.WARNING):
        splits = build_splits(data_spec(dataset_config(root, "f30k", "dataset.skip_bad_images=true")), seed=0)
    assert "skipped 3 bad image(s)" in caplog.text and "train 1, val 1, test 1" in caplog.text
    assert split_sizes(splits) == {"train": 2, "val": 1, "test": 1}
    for split in splits.values():
        for record in split.records:
            split.load_image(record)


def test_the_vsepp_layout_checks_its_image_files_the_same_way(tmp_path, caplog):
    root = make_vsepp_coco_dataset(tmp_path, {"train": 3, "val": 2, "test": 2, "restval": 1})
    val2014 = root / "images" / "val2014"
    (val2014 / "COCO_val2014_000000001003.jpg").write_bytes(b"")  # val
    write_bomb(val2014 / "COCO_val2014_000000001006.jpg")  # test
    truncate(val2014 / "COCO_val2014_000000001007.jpg")  # restval, in train: not decoded without skipping
    cfg = compose_config("train", ["dataset=coco", f"dataset.root={root}"]).dataset
    with pytest.raises(DatasetError, match=r"2 problem\(s\)") as error:
        build_splits(data_spec(cfg), seed=0)
    message = str(error.value)
    assert f"{val2014 / 'COCO_val2014_000000001003.jpg'}: empty file (0 bytes) (val image" in message
    assert f"{val2014 / 'COCO_val2014_000000001006.jpg'}: possible decompression bomb: " in message
    cfg.skip_bad_images = True
    with caplog.at_level(logging.WARNING):
        splits = build_splits(data_spec(cfg), seed=0)
    assert "skipped 3 bad image(s)" in caplog.text and "train 1, val 1, test 1" in caplog.text
    assert split_sizes(splits) == {"train": 3, "val": 1, "test": 1}


@pytest.mark.slow
def test_train_py_exits_before_training_on_a_truncated_test_image(tmp_path):
    root = make_karpathy_dataset(tmp_path / "data", "f30k", {"train": 8, "val": 4, "test": 4})
    bad = root / "images" / "00014.jpg"
    truncate(bad)
    run = tmp_path / "run"
    result = subprocess.run(  # timeout: a hang guard only, not a speed bound
        [sys.executable, "train.py", *TINY_TRAINING, "dataset=f30k", f"dataset.root={root}", "logger=none",
         f"hydra.run.dir={run}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"{bad}: does not decode: " in result.stderr and "(test image 00014.jpg)" in result.stderr
    assert "Traceback" not in result.stderr
    # Stopped while reading the splits: their sizes never logged, no model built, no step run.
    log = (run / "train.log").read_text()
    assert "] - dataset f30k: reading " in log and "] - dataset f30k: {" not in log and "] - model: " not in log, log
    assert not (run / "checkpoints" / "last.pt").exists() and not (run / "metrics.jsonl").exists()
