"""What a resumed run must share with the checkpoint it continues: the data and the model's shape.

Every checkpoint records the data it was trained on (:func:`data_identity`: the dataset's name,
layout and absolute root, and a fingerprint of each split's image keys and captions). A resumed
run compares that record and the checkpoint's model tensors with its own
(:func:`data_differences`, :func:`model_differences`). A model that does not fit always stops the
run with one line naming the difference. Other data stops it too, unless
``resume_changes=allow``: then the run goes on, and the best checkpoint is chosen afresh, since a
monitor measured on other data says nothing about the new one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch

SHOWN = 3  # tensor names shown per kind of model difference


def split_fingerprint(split) -> str:
    """A short hash of a split's images (their keys, in order) and every caption of each."""
    digest = hashlib.sha256()
    for record in split.records:
        digest.update(record.key.encode() + b"\0")
        for caption in record.captions:
            digest.update(caption.encode() + b"\0")
        digest.update(b"\1")
    return digest.hexdigest()[:16]


def data_identity(data, splits: Mapping) -> dict:
    """What a checkpoint records of its data: ``name``, ``layout``, absolute ``root`` (None for
    generated data) and ``splits`` (``{split: fingerprint}``); ``data``: the run's DataSpec."""
    root = None if data.root is None else str(Path(data.root).expanduser().resolve())
    return {"name": data.name, "layout": data.layout, "root": root,
            "splits": {name: split_fingerprint(split) for name, split in splits.items()}}


def data_differences(saved: dict | None, current: dict) -> list[str]:
    """One phrase per difference between the checkpoint's data record and this run's (none when the
    checkpoint predates the record)."""
    if saved is None:
        return []
    found = [f"dataset.{key} was {saved.get(key)}, now {current[key]}"
             for key in ("name", "layout", "root") if saved.get(key) != current[key]]
    old_splits = saved.get("splits", {})
    found += [f"the {name} split's images or captions changed" for name, fingerprint in current["splits"].items()
              if name in old_splits and old_splits[name] != fingerprint]
    return found


def model_differences(saved: Mapping[str, torch.Tensor], model: torch.nn.Module) -> list[str]:
    """One phrase per kind of mismatch between a checkpoint's model tensors and ``model``'s:
    tensors only one of them has, and tensors whose shapes differ (a few names of each)."""
    current = model.state_dict()
    missing = [name for name in current if name not in saved]
    extra = [name for name in saved if name not in current]
    reshaped = [f"{name} {tuple(saved[name].shape)} vs {tuple(current[name].shape)}" for name in current
                if name in saved and saved[name].shape != current[name].shape]
    found = []
    for what, names in (("tensors the checkpoint lacks", missing), ("tensors this model lacks", extra),
                        ("shapes that differ", reshaped)):
        if names:
            more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
            found.append(f"{len(names)} {what} ({', '.join(names[:SHOWN])}{more})")
    return found


def model_settings(config: dict) -> str:
    """The settings that shape a model, as a config records them, for a message."""
    encoder, alignment = config.get("encoder") or {}, config.get("alignment") or {}
    return f"encoder={encoder.get('name')}, alignment.levels={alignment.get('levels')}"
