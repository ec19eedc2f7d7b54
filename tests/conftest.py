"""Shared helpers: compose the project's Hydra config in-process, and a tiny fast run config."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# A run small enough for a test: tiny encoders on a few generated images, CPU, no workers.
TINY_SHAPES = ["dataset=shapes", "dataset.num_train=24", "dataset.num_val=8", "dataset.num_test=8"]
TINY_TRAINING = [
    "encoder=tiny",
    "encoder.image.image_size=32",
    "hardware=cpu",
    "hardware.num_workers=0",
    "train.batch_size=8",
    "train.epochs=2",
    "train.freeze_epochs=1",
    "train.log_every=5",
    "optim.lr=1e-3",
]
TINY_RUN = [*TINY_SHAPES, *TINY_TRAINING]


def compose_config(name: str, overrides: list[str]):
    """The config ``python {name}.py OVERRIDES`` would run with (Hydra's own composition)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


@pytest.fixture
def tiny_config():
    """Compose the tiny run config with extra overrides: ``tiny_config("train.epochs=1")``."""
    return lambda *extra: compose_config("train", [*TINY_RUN, *extra])


@pytest.fixture
def tiny_training_config():
    """Like ``tiny_config`` but with no dataset settings: pass ``dataset=...`` yourself."""
    return lambda *extra: compose_config("train", [*TINY_TRAINING, *extra])


def make_karpathy_dataset(root: Path, name: str = "f30k", splits=None, captions_per_image: int = 5) -> Path:
    """Write a small Karpathy-layout dataset (JSON + JPEG files) under ``root``; returns ``root``.

    ``splits`` maps split name (train/val/test/restval) to a number of images. Image ``k`` is a
    flat colour and its captions name that colour, so a model can learn something from it.
    """
    import json

    from PIL import Image

    splits = splits or {"train": 12, "val": 4, "test": 4}
    colours = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}
    names = list(colours)
    entries = []
    index = 0
    for split, count in splits.items():
        for _ in range(count):
            colour = names[index % len(names)]
            filepath = {"train": "train2014", "restval": "val2014"}.get(split, "val2014") if name == "coco" else ""
            filename = f"{index:05d}.jpg"
            folder = root / "images" / filepath
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (40, 32), colours[colour]).save(folder / filename)
            entry = {
                "filename": filename,
                "split": split,
                "sentences": [{"raw": f"picture {index} is {colour}, caption {k}"} for k in range(captions_per_image)],
            }
            if filepath:
                entry["filepath"] = filepath
            entries.append(entry)
            index += 1
    annotation = {"f30k": "dataset_flickr30k.json", "coco": "dataset_coco.json"}[name]
    (root / annotation).write_text(json.dumps({"images": entries, "dataset": name}))
    return root
