"""The score matrices of an evaluated split, kept in a file to be evaluated again without a model or
a dataset (``python evaluate.py ... eval.save_scores=true``, then ``python evaluate.py scores=PATH``).

The file is safetensors: one ``(N, K * N)`` tensor per model and trained level (float16 by default,
half the size; float32 with ``eval.scores_dtype=float32``, exactly the evaluated scores), named
``model{m}/level{k}`` (1-based; a plain evaluation has one model, an ensemble one per member),
where caption ``c`` belongs to image ``c // K``. Its metadata (strings, each a JSON value) holds
what the evaluation needs besides: ``format`` (:data:`FORMAT`), ``split``, ``dataset``,
``captions_per_image``, ``test_protocols`` (``{name: folds}`` or null), and per model its
``checkpoints`` path, ``epochs``, ``alignment_levels`` and stored ``configs``.

A saving run evaluates the scores as saved (back in float32 on the CPU) and :func:`read_scores`
gives the same tensors, so both print the same table to the last digit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from hat.atomic import atomic_write
from hat.checks import ConfigError
from hat.models.weights import read_safetensors

FORMAT = "hat-scores/1"
SCORE_DTYPES = {"float16": torch.float16, "float32": torch.float32}  # eval.scores_dtype
FILE_NAME = "scores.safetensors"
FIELDS = ("split", "dataset", "captions_per_image", "test_protocols", "checkpoints", "epochs", "alignment_levels",
          "configs")
WRITE_ONE = "write one with `python evaluate.py checkpoint=PATH eval.save_scores=true`"


@dataclass(frozen=True)
class ScoredSplit:
    """The scores of one split by one model or by each member of an ensemble.

    ``members[m][k]``: the ``(N, K * N)`` float32 scores of model ``m``'s level ``k + 1`` (caption
    ``c`` belongs to image ``c // captions_per_image``). ``protocols``: the test protocols
    (``{name: folds}``, None for a plain table). Per model: ``checkpoints`` (paths as given),
    ``epochs`` (None where unknown), ``alignment_levels`` (the trained levels), ``configs`` (the
    config each model was rebuilt from, plain containers); ``stored_dtype``: the dtype of the file
    the scores were read from or saved to (None: not from a file).
    """

    members: list[list[torch.Tensor]]
    split: str
    dataset: str
    captions_per_image: int
    protocols: dict[str, int] | None
    checkpoints: list[str]
    epochs: list[int | None]
    alignment_levels: list[list[int]]
    configs: list[dict]
    stored_dtype: str | None = None


def _key(member: int, level: int) -> str:
    return f"model{member + 1}/level{level + 1}"


def write_scores(path: Path, scored: ScoredSplit, dtype: str = "float16") -> ScoredSplit:
    """Write ``scored`` to ``path`` as safetensors of ``dtype`` (a key of :data:`SCORE_DTYPES`;
    atomically: a temporary file in the same folder, then a rename); returns the scores as saved,
    back in float32 on the CPU, which is what :func:`read_scores` gives for the file."""
    tensors = {
        _key(m, k): level.detach().to("cpu", SCORE_DTYPES[dtype]).contiguous()
        for m, levels in enumerate(scored.members) for k, level in enumerate(levels)
    }
    metadata = {"format": FORMAT, **{name: json.dumps(getattr(scored, _attribute(name))) for name in FIELDS}}
    data = save(tensors, metadata=metadata)
    atomic_write(path, lambda handle: handle.write(data))
    return _with_tensors(scored, tensors)


def _attribute(field: str) -> str:
    """The :class:`ScoredSplit` attribute a metadata field holds (the file says ``test_protocols``
    as the dataset config does)."""
    return "protocols" if field == "test_protocols" else field


def _with_tensors(scored: ScoredSplit, tensors: dict[str, torch.Tensor]) -> ScoredSplit:
    """``scored`` with its matrices taken from the file's ``tensors`` as float32."""
    members = [[tensors[_key(m, k)].float() for k in range(len(levels))]
               for m, levels in enumerate(scored.alignment_levels)]
    return replace(scored, members=members, stored_dtype=dtype_name(tensors[_key(0, 0)]))


def read_scores(path: Path) -> ScoredSplit:
    """The scores written by :func:`write_scores` at ``path`` (float32, on the CPU).

    A missing file, a file that is not safetensors, one without this format's metadata, or tensors
    that do not fit it raise a :class:`ConfigError` naming ``scores=PATH``.
    """
    label = f"scores={path}"
    if not path.is_file():
        raise ConfigError(f"{label}: no such file; expected a score file, {WRITE_ONE}")
    tensors = read_safetensors(path, label)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != FORMAT or any(name not in metadata for name in FIELDS):
        raise ConfigError(f"{label} is not a score file of evaluate.py (no {FORMAT!r} metadata); {WRITE_ONE}")
    try:
        values = {_attribute(name): json.loads(metadata[name]) for name in FIELDS}
    except json.JSONDecodeError as error:
        raise ConfigError(f"{label}: damaged metadata ({error})") from error
    scored = ScoredSplit(members=[], **values)
    _check_tensors(label, tensors, scored)
    return _with_tensors(scored, tensors)


def _check_tensors(label: str, tensors: dict[str, torch.Tensor], scored: ScoredSplit) -> None:
    """Raise a :class:`ConfigError` unless ``tensors`` are exactly the ``(N, K * N)`` matrices, one N
    and one dtype of :data:`SCORE_DTYPES` for all, that ``scored``'s metadata describes."""
    expected = [_key(m, k) for m, levels in enumerate(scored.alignment_levels) for k in range(len(levels))]
    if sorted(tensors) != sorted(expected):
        raise ConfigError(f"{label}: holds tensors {sorted(tensors)}, but its metadata describes {expected}")
    first = tensors[expected[0]]
    per_image = scored.captions_per_image
    for key in expected:
        tensor = tensors[key]
        if tensor.dtype not in SCORE_DTYPES.values() or tensor.dtype != first.dtype or tensor.ndim != 2 or \
                tensor.shape != first.shape or tensor.shape[1] != per_image * tensor.shape[0]:
            raise ConfigError(
                f"{label}: {key} is {dtype_name(tensor)} {tuple(tensor.shape)}; expected {dtype_name(first)} "
                f"(N, {per_image} * N) with one N for every level ({tuple(first.shape)} for {expected[0]}), "
                f"float16 or float32"
            )


def dtype_name(tensor: torch.Tensor) -> str:
    """``float16``, ``float32``, ...: a tensor's dtype as ``eval.scores_dtype`` names it."""
    return str(tensor.dtype).removeprefix("torch.")
