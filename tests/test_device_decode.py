"""hardware.image_decode=device: workers read JPEG bytes and draw crops, the training device decodes.

On the CPU the same code runs with ``decode_jpeg(device="cpu")``; the GPU test runs nvJPEG.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from conftest import compose_config, make_karpathy_dataset
from hat.config import ConfigError, validate_train_config
from hat.data.datasets import CaptionCollator, PairDataset
from hat.data.device_decode import EncodedImages, EncodedTrainCrop, images_on, read_jpeg_bytes
from hat.data.records import CaptionedImages, ImageRecord, load_image_file
from hat.data.transforms import train_transform
from hat.engine.loop import train
from hat.models.spec import model_spec
from hat.models.text_encoder import build_tokenizer


def photo_like(path: Path, size=(500, 375), mode="RGB", seed=0) -> Path:
    """A JPEG with gradients and noise, so crops and resampling show in the pixels."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([(x * 0.5) % 255, (y * 0.7) % 255, ((x + y) * 0.3) % 255], -1)
    pixels = pixels + np.random.default_rng(seed).integers(0, 20, pixels.shape)
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    image.convert(mode).save(path, "JPEG", quality=90)
    return path


def split_of(paths: list[Path]) -> CaptionedImages:
    records = [ImageRecord(p.name, (f"caption of {p.stem}",), p) for p in paths]
    return CaptionedImages("train", records, 1, load_image_file)


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("hflip", [True, False])
def test_device_crops_match_the_cpu_transform_pixel_for_pixel_up_to_rounding(tmp_path, mode, hflip):
    split = split_of([photo_like(tmp_path / f"{k}.jpg", mode=mode, seed=k) for k in range(4)])
    cpu = PairDataset(split, train_transform(64, (0.08, 1.0), hflip), seed=3)
    device = PairDataset(split, EncodedTrainCrop(64, (0.08, 1.0), hflip), seed=3, read=read_jpeg_bytes)
    for epoch in range(3):
        cpu.set_epoch(epoch)
        device.set_epoch(epoch)
        for pair in range(len(split)):
            expected = cpu[pair][0]
            crop = device[pair][0]
            decoded = EncodedImages.from_crops([crop]).decode(torch.device("cpu"))[0]
            assert decoded.shape == expected.shape == (3, 64, 64)
            difference = (decoded - expected).abs()
            # Normalised units: 0.02 is about one grey level in 255; a different box or flip is tens of levels.
            assert difference.mean() < 0.02, (epoch, pair, crop.box, crop.flip)
            assert difference.max() < 0.1, (epoch, pair, crop.box, crop.flip)


def test_the_crop_box_and_flip_depend_on_the_sample_seed_only(tmp_path):
    split = split_of([photo_like(tmp_path / "a.jpg")])
    dataset = PairDataset(split, EncodedTrainCrop(32), seed=0, read=read_jpeg_bytes)
    draws = set()
    for epoch in range(8):
        dataset.set_epoch(epoch)
        first, again = dataset[0][0], dataset[0][0]
        assert (first.box, first.flip) == (again.box, again.flip)
        draws.add((first.box, first.flip))
    assert len(draws) == 8


def test_a_batch_from_a_worker_process_decodes_to_the_crops_drawn_in_process(tmp_path):
    paths = [photo_like(tmp_path / f"{k}.jpg", seed=k) for k in range(3)]
    dataset = PairDataset(split_of(paths), EncodedTrainCrop(48), seed=0, read=read_jpeg_bytes)
    collator = CaptionCollator(build_tokenizer(model_spec(compose_config("train", ["encoder=tiny"])).text), 16)
    batch = next(iter(DataLoader(dataset, batch_size=3, collate_fn=collator, num_workers=1)))
    assert isinstance(batch["images"], EncodedImages) and len(batch["images"]) == 3
    assert batch["input_ids"].shape[0] == 3
    images = images_on(batch["images"], torch.device("cpu"))
    assert images.shape == (3, 3, 48, 48) and images.dtype == torch.float32
    expected = EncodedImages.from_crops([dataset[k][0] for k in range(3)]).decode(torch.device("cpu"))
    torch.testing.assert_close(images, expected, rtol=0, atol=0)


def test_a_file_that_is_not_a_jpeg_is_named_when_its_crop_is_drawn(tmp_path):
    png = tmp_path / "picture.jpg"
    Image.new("RGB", (40, 30), (10, 20, 30)).save(png, "PNG")
    with pytest.raises(OSError, match=rf"{png}.*hardware.image_decode=device \(JPEG files only\).*PNG, not JPEG"):
        EncodedTrainCrop(32)(read_jpeg_bytes(ImageRecord("picture.jpg", ("c",), png)))


def test_a_missing_file_is_named(tmp_path):
    missing = tmp_path / "gone.jpg"
    with pytest.raises(OSError, match=rf"cannot read image {missing} \(record 'gone.jpg'\)"):
        read_jpeg_bytes(ImageRecord("gone.jpg", ("c",), missing))


def test_a_jpeg_the_decoder_rejects_fails_naming_the_batch_files(tmp_path):
    good = photo_like(tmp_path / "good.jpg")
    bad = tmp_path / "bad.jpg"
    data = photo_like(tmp_path / "source.jpg").read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # the header survives, half the scan data does not
    crop = EncodedTrainCrop(32)
    with pytest.raises(RuntimeError, match=rf"decode_jpeg on cpu failed for one of these files: {good}, {bad}"):
        encoded = EncodedImages.from_crops([crop((good.read_bytes(), good)), crop((bad.read_bytes(), bad))])
        encoded.decode(torch.device("cpu"))


def test_config_rejects_an_unknown_mode_and_the_generated_dataset(tiny_config):
    with pytest.raises(ConfigError, match=r"hardware.image_decode='gpu' is not one of \('cpu', 'device'\)"):
        validate_train_config(tiny_config("hardware.image_decode=gpu"))
    with pytest.raises(ConfigError, match=r"hardware.image_decode=device decodes JPEG files.*dataset=shapes"):
        validate_train_config(tiny_config("hardware.image_decode=device"))


def test_training_with_device_decoding_runs_every_step(tmp_path, tiny_training_config):
    root = make_karpathy_dataset(tmp_path / "data", "f30k", {"train": 8, "val": 4, "test": 5})
    cfg = tiny_training_config("dataset=f30k", f"dataset.root={root}", "train.epochs=1", "hardware.image_decode=device")
    metrics = train(cfg, tmp_path / "run").test
    assert 0.0 <= metrics["test/rsum"] <= 600.0
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert max(record.get("step", 0) for record in steps) == 5  # 40 pairs at batch 8


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_nvjpeg_batch_matches_the_cpu_decoder(tmp_path):
    paths = [photo_like(tmp_path / f"{k}.jpg", seed=k) for k in range(6)]
    crop = EncodedTrainCrop(224)
    torch.manual_seed(0)
    encoded = EncodedImages.from_crops([crop((p.read_bytes(), p)) for p in paths])
    on_gpu = encoded.pin_memory().decode(torch.device("cuda")).cpu()
    on_cpu = encoded.decode(torch.device("cpu"))
    assert (on_gpu - on_cpu).abs().mean() < 0.02
