"""Convert the authors' released HAT checkpoints (PyTorch Lightning ``.ckpt``) into a :class:`HATModel`.

The released ``state_dict`` names its parts differently from ours:

- ``vit_model.*``: Swin in timm 0.4 layout -> ``image_encoder.backbone.*`` (timm 1.0). timm 0.4
  puts a stage's patch merging at its end (``layers.{i}.downsample``), timm 1.0 at the start of
  the next stage (``layers.{i+1}.downsample``); the channel order of the merge is the same.
  ``vit_model.norm_{k}`` -> ``image_encoder.stage_norms.{k+1}``; ``vit_model.norm`` is the
  backbone's final norm in both.
- ``text_transformer.*``: a transformers BERT with pooler -> ``text_encoder.model.*``.
- ``cross_modal_{image,text}_transform_1``, ``_2`` and the unsuffixed one: the projections of
  text layers 4, 10, 12 and Swin stages 2, 3, 4 -> ``{image,text}_proj.0``, ``.1``, ``.2``.

Buffers that our encoders recompute (Swin's ``attn_mask`` and ``relative_position_index``,
BERT's ``position_ids`` and ``token_type_ids``) are dropped. The Swin renaming is the rule of
timm's ``swin_transformer.checkpoint_filter_fn``, applied key by key here instead of calling it,
because that function silently resamples a patch embedding or position table whose shape does
not fit (a different model, not a conversion) and reports in timm's names rather than the
release's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import torch

from hat.models.hat import HATModel
from hat.models.lightning_unpickler import read_lightning_state_dict

RELEASE_PREFIXES = ("vit_model.", "text_transformer.")
RECOMPUTED_BUFFERS = (".attn_mask", ".relative_position_index", ".position_ids", ".token_type_ids")
RELEASE_TEXT_TAPS = [4, 10, 12]
RELEASE_IMAGE_TAPS = [2, 3, 4]
PROJECTION_LEVELS = {"_1": 0, "_2": 1, "": 2}  # release suffix -> level index


def is_release_state_dict(keys: Iterable[str]) -> bool:
    """Whether ``keys`` look like a released HAT state dict (both ``vit_model.`` and ``text_transformer.`` keys)."""
    keys = list(keys)
    return all(any(key.startswith(prefix) for key in keys) for prefix in RELEASE_PREFIXES)


def release_to_model_key(key: str) -> str | None:
    """Our state-dict name for one released name, or ``None`` when no rule applies."""
    if match := re.fullmatch(r"cross_modal_(image|text)_transform(_1|_2|)\.(weight|bias)", key):
        side, suffix, leaf = match.groups()
        return f"{side}_proj.{PROJECTION_LEVELS[suffix]}.{leaf}"
    if match := re.fullmatch(r"vit_model\.norm_(\d+)\.(.+)", key):
        return f"image_encoder.stage_norms.{int(match[1]) + 1}.{match[2]}"
    if match := re.fullmatch(r"vit_model\.layers\.(\d+)\.downsample\.(.+)", key):
        return f"image_encoder.backbone.layers.{int(match[1]) + 1}.downsample.{match[2]}"
    if key.startswith("vit_model."):
        return "image_encoder.backbone." + key.removeprefix("vit_model.")
    if key.startswith("text_transformer."):
        return "text_encoder.model." + key.removeprefix("text_transformer.")
    return None


def convert_release_state_dict(release: dict[str, torch.Tensor], model: HATModel) -> dict[str, torch.Tensor]:
    """A state dict that ``model.load_state_dict(..., strict=True)`` accepts, from a released one.

    ``model`` must align text layers 4, 10, 12 with Swin stages 2, 3, 4, as the released models
    do. Every released tensor but the recomputed buffers must land on a model tensor of the same
    shape, and every model parameter must be covered; model buffers are taken from ``model``
    itself. Otherwise a ValueError lists every unplaced released key, every shape mismatch
    (both names, both shapes) and every missing model parameter.
    """
    text_taps, image_taps = model.text_encoder.taps, model.image_encoder.taps
    if text_taps != RELEASE_TEXT_TAPS or image_taps != RELEASE_IMAGE_TAPS:
        raise ValueError(
            f"HAT's released checkpoints align text layers {RELEASE_TEXT_TAPS} with Swin stages "
            f"{RELEASE_IMAGE_TAPS}; this model aligns text layers {text_taps} with image stages "
            f"{image_taps} (build it with alignment.levels={RELEASE_TEXT_TAPS} and no alignment.image_levels)"
        )
    target = model.state_dict()
    parameters = {name for name, _ in model.named_parameters()}
    converted: dict[str, torch.Tensor] = {}
    unplaced, mismatched = [], []
    for key, tensor in release.items():
        if key.endswith(RECOMPUTED_BUFFERS):
            continue
        name = release_to_model_key(key)
        if name not in target:
            unplaced.append(key)
        elif tensor.shape != target[name].shape:
            mismatched.append(
                f"{key} -> {name}: {tuple(tensor.shape)} in the release, {tuple(target[name].shape)} in the model"
            )
        else:
            converted[name] = tensor
    missing = [name for name in target if name in parameters and name not in converted]
    problems = [
        f"{len(items)} {what}:\n  " + "\n  ".join(items)
        for what, items in [
            ("released tensors with no place in the model", unplaced),
            ("shape mismatches", mismatched),
            ("model parameters missing from the release", missing),
        ]
        if items
    ]
    if problems:
        raise ValueError("the released checkpoint does not fit the model:\n" + "\n".join(problems))
    return {name: converted.get(name, value) for name, value in target.items()}


def load_release_checkpoint(path: Path, model: HATModel) -> None:
    """Load the authors' Lightning checkpoint at ``path`` into ``model`` (strict), or raise naming the file.

    The file is read without executing its pickle (:func:`read_lightning_state_dict`).
    """
    release = read_lightning_state_dict(Path(path))
    if not is_release_state_dict(release):
        raise ValueError(
            f"{path} is not a released HAT checkpoint: its state_dict has no keys starting with "
            f"{' and '.join(RELEASE_PREFIXES)}"
        )
    try:
        state = convert_release_state_dict(release, model)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    model.load_state_dict(state, strict=True)
