"""Shared helpers: compose the project's Hydra config in-process, and a tiny fast run config."""

from __future__ import annotations

import os
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

if not torch.cuda.is_available():
    # Triton kernels run through Triton's interpreter on the CPU. Set before anything imports
    # triton (timm and transformers do), since triton reads it when its functions are defined.
    os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
sys.path.insert(0, str(ROOT))
from train import register_resolvers  # noqa: E402  (the entry point owns the config's resolvers)

register_resolvers()

# logger=wandb is the default: no test may reach a W&B server. Tests of W&B name logger.mode
# themselves (offline, or online against an unreachable local address).
os.environ["WANDB_MODE"] = "disabled"
os.environ["WANDB_SILENT"] = "true"
os.environ.pop("WANDB_API_KEY", None)

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


# A tiny model trained long enough to retrieve well above chance on its 20 test images (t2i R@5
# about 0.7 where chance is 0.25): about 50 s on a 2-core CPU, trained once per session.
RETRIEVING_RUN = [
    "dataset=shapes", "dataset.num_train=600", "dataset.num_val=20", "dataset.num_test=20",
    *(item for item in TINY_TRAINING if not item.startswith(("encoder.image.image_size", "train.", "optim."))),
    "train.batch_size=32", "train.epochs=4", "train.freeze_epochs=0", "train.log_every=50",
    "optim.lr=1e-3", "optim.step_size=3", "loss.warmup_epochs=2", "logger=none",
]


@pytest.fixture(scope="session")
def retrieving_run(tmp_path_factory) -> Path:
    """The run folder of :data:`RETRIEVING_RUN` (``checkpoints/best.pt``, ``results.json``)."""
    from hat.engine.loop import train

    run_dir = tmp_path_factory.mktemp("retrieving_run")
    train(compose_config("train", RETRIEVING_RUN), run_dir)
    return run_dir


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


def make_vsepp_coco_dataset(root: Path, counts=None, captions_per_image: int = 5) -> Path:
    """Write a small MSCOCO dataset in the VSE++/SCAN layout under ``root``; returns ``root``.

    ``counts`` maps split (train/val/test/restval) to a number of images. Train images go to
    ``images/train2014`` and ``captions_train2014.json``, the others to ``val2014`` (as in the real
    layout, restval is part of COCO's val2014); ``coco_{train,dev,test,restval}_ids.npy`` list
    ``captions_per_image`` consecutive annotation ids per image. Image ``k`` is a flat colour and
    its captions read ``"picture k is <colour>, caption j"``, like :func:`make_karpathy_dataset`.
    """
    import json

    import numpy as np
    from PIL import Image

    counts = counts or {"train": 8, "val": 5, "test": 5, "restval": 2}
    colours = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}
    names = list(colours)
    files = {folder: {"images": [], "annotations": []} for folder in ("train2014", "val2014")}
    ids = {split: [] for split in ("train", "val", "test", "restval")}
    index = 0
    for split, count in counts.items():
        folder = "train2014" if split == "train" else "val2014"
        (root / "images" / folder).mkdir(parents=True, exist_ok=True)
        for _ in range(count):
            colour = names[index % len(names)]
            image_id = 1000 + index
            file_name = f"COCO_{folder}_{image_id:012d}.jpg"
            Image.new("RGB", (40, 32), colours[colour]).save(root / "images" / folder / file_name)
            files[folder]["images"].append({"id": image_id, "file_name": file_name})
            for k in range(captions_per_image):
                annotation_id = 50_000 + index * 10 + k
                caption = f"picture {index} is {colour}, caption {k}"
                files[folder]["annotations"].append({"id": annotation_id, "image_id": image_id, "caption": caption})
                ids[split].append(annotation_id)
            index += 1
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for folder, content in files.items():
        (root / "annotations" / f"captions_{folder}.json").write_text(json.dumps(content))
    for split, split_ids in ids.items():
        name = {"val": "dev"}.get(split, split)
        np.save(root / "annotations" / f"coco_{name}_ids.npy", np.array(split_ids, dtype=np.int64))
    return root


class ModelCheckpoint:
    """Stands in for Lightning's callback class, which keys the callback states of a checkpoint."""


class AttributeDict(dict):
    """Stands in for Lightning's ``hyper_parameters`` container (a dict subclass)."""


def save_lightning_checkpoint(path, state_dict, **extra) -> None:
    """Write ``state_dict`` the way PyTorch Lightning 1.3 does: with callback states keyed by a class,
    hyper-parameters, optimizer and scheduler states; ``extra`` entries are added or replace those."""
    checkpoint = {
        "epoch": 68,
        "global_step": 34500,
        "pytorch-lightning_version": "1.3.8",
        "state_dict": OrderedDict(state_dict),
        "callbacks": {ModelCheckpoint: {"best_model_score": torch.tensor(540.2), "best_model_path": "best.ckpt"}},
        "optimizer_states": [{"state": {0: {"exp_avg": torch.randn(3)}}, "param_groups": [{"lr": 1e-5}]}],
        "lr_schedulers": [{"step_size": 10, "gamma": 0.1, "last_epoch": 68}],
        "hyper_parameters": AttributeDict(config={"image_size": 224, "lr": 1e-4}),
        **extra,
    }
    torch.save(checkpoint, path)


def descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (a run's ranks and loader workers), from /proc."""
    found = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        found += [int(child), *descendants(int(child))]
    return found


def wait_for_step(metrics: Path, step: int, process, timeout: float = 180) -> None:
    """Wait until the run writing ``metrics`` (metrics.jsonl) has logged optimizer step ``step``;
    fails with the run's stderr if ``process`` ends first, or after ``timeout`` seconds."""
    import json
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metrics.is_file() and any(json.loads(line).get("step", 0) >= step
                                     for line in metrics.read_text().splitlines() if line.endswith("}")):
            return
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.05)
    raise AssertionError(f"no step {step} within {timeout} s")


@pytest.fixture
def small_disk(tmp_path):
    """Tiny file systems to fill up: ``small_disk("256k")`` mounts a tmpfs of that size on a new folder
    under ``tmp_path`` and returns the folder; ``small_disk.remount(folder, "ro")`` (or ``"size=64m"``)
    changes its options. Everything mounted is unmounted when the test ends. Skips the test where
    mounting is not permitted (not root, or a container without CAP_SYS_ADMIN)."""
    import shutil
    import subprocess

    mounted: list[Path] = []

    def run(*args: str) -> subprocess.CompletedProcess:
        if shutil.which("mount") is None:
            pytest.skip("no mount command: cannot make a small disk to fill")
        return subprocess.run(["mount", *args], capture_output=True, text=True)

    def mount(size: str) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        result = run("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder))
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs to fill a disk ({result.stderr.strip() or 'mount failed'})")
        mounted.append(folder)
        return folder

    def remount(folder: Path, options: str) -> None:
        result = run("-o", f"remount,{options}", str(folder))
        assert result.returncode == 0, result.stderr

    mount.remount = remount
    try:
        yield mount
    finally:
        for folder in reversed(mounted):
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)
