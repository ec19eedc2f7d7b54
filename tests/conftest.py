"""Shared helpers: compose the project's Hydra config in-process, and a tiny fast run config."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# A run small enough for a test: tiny encoders on a few generated images, CPU, no workers.
TINY_RUN = [
    "encoder=tiny",
    "dataset=shapes",
    "dataset.num_train=24",
    "dataset.num_val=8",
    "dataset.num_test=8",
    "encoder.image.image_size=32",
    "hardware=cpu",
    "hardware.num_workers=0",
    "train.batch_size=8",
    "train.epochs=2",
    "train.freeze_epochs=1",
    "train.log_every=5",
    "optim.lr=1e-3",
]


def compose_config(name: str, overrides: list[str]):
    """The config ``python {name}.py OVERRIDES`` would run with (Hydra's own composition)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


@pytest.fixture
def tiny_config():
    """Compose the tiny run config with extra overrides: ``tiny_config("train.epochs=1")``."""
    return lambda *extra: compose_config("train", [*TINY_RUN, *extra])
