"""hat.engine.score_file: score matrices (float16, or float32) with what it takes to evaluate them again."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from hat.checks import ConfigError
from hat.engine.score_file import FORMAT, ScoredSplit, read_scores, write_scores


def _scored(level_counts=(3,), images=4, per_image=5, protocols=None) -> ScoredSplit:
    generator = torch.Generator().manual_seed(0)
    members = [[torch.randn(images, per_image * images, generator=generator) for _ in range(count)]
               for count in level_counts]
    return ScoredSplit(
        members=members, split="test", dataset="shapes", captions_per_image=per_image, protocols=protocols,
        checkpoints=[f"runs/{m}/best.pt" for m in range(len(level_counts))], epochs=[3, None][: len(level_counts)],
        alignment_levels=[[4, 10, 12][-count:] for count in level_counts],
        configs=[{"seed": m, "dataset": {"name": "shapes"}} for m in range(len(level_counts))],
    )


def _assert_same(a: ScoredSplit, b: ScoredSplit) -> None:
    for field in ("split", "dataset", "captions_per_image", "protocols", "checkpoints", "epochs", "alignment_levels",
                  "configs"):
        assert getattr(a, field) == getattr(b, field), field
    assert [len(levels) for levels in a.members] == [len(levels) for levels in b.members]
    for levels_a, levels_b in zip(a.members, b.members):
        for x, y in zip(levels_a, levels_b):
            assert x.dtype == y.dtype == torch.float32 and torch.equal(x, y)


@pytest.mark.parametrize("level_counts, protocols", [((3,), None), ((3, 1), {"coco1k": 2, "coco5k": 1})])
def test_the_file_gives_back_the_scores_as_saved(tmp_path, level_counts, protocols):
    scored = _scored(level_counts, protocols=protocols)
    path = tmp_path / "scores.safetensors"
    saved = write_scores(path, scored)
    _assert_same(read_scores(path), saved)
    for original, kept in zip(scored.members, saved.members):
        for x, y in zip(original, kept):
            assert torch.equal(y, x.half().float())  # float16, back in float32
    assert [p.name for p in tmp_path.iterdir()] == ["scores.safetensors"]  # no temporary file left
    with safe_open(str(path), framework="pt") as handle:
        assert handle.metadata()["format"] == FORMAT
        names = sorted(handle.keys())
        assert {handle.get_tensor(name).dtype for name in names} == {torch.float16}
    assert names == sorted(f"model{m + 1}/level{k + 1}" for m, count in enumerate(level_counts) for k in range(count))


def test_float32_files_keep_the_exact_scores_and_say_their_dtype(tmp_path):
    scored = _scored((3,))
    path = tmp_path / "scores.safetensors"
    saved = write_scores(path, scored, "float32")
    read = read_scores(path)
    _assert_same(read, saved)
    assert read.stored_dtype == saved.stored_dtype == "float32"
    for original, kept in zip(scored.members[0], read.members[0]):
        assert torch.equal(original, kept)
    write_scores(path, scored)
    assert read_scores(path).stored_dtype == "float16"


def test_saving_again_replaces_the_file(tmp_path):
    path = tmp_path / "scores.safetensors"
    write_scores(path, _scored((3,)))
    write_scores(path, _scored((1,)))
    assert read_scores(path).alignment_levels == [[12]]


def test_a_missing_or_foreign_file_names_scores_and_how_to_write_one(tmp_path):
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(ConfigError, match=f"scores={missing}: no such file.*eval.save_scores=true"):
        read_scores(missing)
    text = tmp_path / "notes.txt"
    text.write_text("not tensors")
    with pytest.raises(ConfigError, match=f"cannot read scores={text}: not a valid safetensors file"):
        read_scores(text)
    weights = tmp_path / "model.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(weights))
    with pytest.raises(ConfigError, match=f"scores={weights} is not a score file of evaluate.py .*eval.save_scores"):
        read_scores(weights)


@pytest.mark.parametrize(
    "tensors, problem",
    [
        ({"model1/level1": torch.zeros(4, 20)}, r"holds tensors \['model1/level1'\], but its metadata describes"),
        ({f"model1/level{k}": torch.zeros(4, 19) for k in (1, 2, 3)}, r"model1/level1 is float16 \(4, 19\); expected"),
        ({f"model1/level{k}": torch.zeros(4, 20 if k < 3 else 25) for k in (1, 2, 3)}, r"model1/level3 is float16"),
    ],
)
def test_tensors_that_do_not_fit_the_metadata(tmp_path, tensors, problem):
    path = tmp_path / "scores.safetensors"
    write_scores(path, _scored((3,)))
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    save_file({name: tensor.half() for name, tensor in tensors.items()}, str(path), metadata=metadata)
    with pytest.raises(ConfigError, match=f"scores={path}: " + problem):
        read_scores(path)
