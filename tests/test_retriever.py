"""hat.load: one model API over checkpoints, export folders and HAT releases, scoring as evaluate.py does."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

import hat
from conftest import save_lightning_checkpoint
from hat.config import ConfigError
from hat.data.build import build_splits
from hat.data.spec import data_spec
from hat.engine.evaluate_checkpoint import evaluate_checkpoint
from hat.engine.evaluation import recall_table
from test_hat_release import tiny_release

pytestmark = pytest.mark.slow

CPU = OmegaConf.create({"device": "cpu", "precision": "fp32", "num_workers": 0, "pin_memory": False, "compile": False})


@pytest.fixture(scope="module")
def sources(retrieving_run, tmp_path_factory):
    """The trained weights as a checkpoint, an export folder and a HAT release, each with the
    metrics evaluate_checkpoint gives it on the test split."""
    folder = tmp_path_factory.mktemp("sources")
    best = retrieving_run / "checkpoints" / "best.pt"
    export = folder / "export"
    evaluated = {"checkpoint": evaluate_checkpoint(best, folder / "a", CPU, export=export)}
    evaluated["export"] = evaluate_checkpoint(export, folder / "b", CPU)
    model = hat.load(best, device="cpu")
    architecture = {"encoder": model.config.encoder, "alignment": model.config.alignment}
    release = folder / "hat_tiny.ckpt"
    save_lightning_checkpoint(release, tiny_release(model.model))
    evaluated["release"] = evaluate_checkpoint(release, folder / "c", CPU, dataset=model.config.dataset,
                                               release_model=architecture)
    split = build_splits(data_spec(model.config.dataset), model.config.seed)["test"]
    paths = {"checkpoint": best, "export": export, "release": release,
             "folders": {"checkpoint": folder / "a", "export": folder / "b", "release": folder / "c"}}
    return paths, evaluated, architecture, split


@pytest.mark.parametrize("kind", ["checkpoint", "export", "release"])
def test_load_scores_the_test_split_as_evaluate_does(sources, kind):
    paths, evaluated, architecture, split = sources
    model = hat.load(paths[kind], device="cpu", precision="fp32", architecture=architecture)
    images = model.encode_images([record.path or split.load_image(record) for record in split.records])
    scores = model.score(images, model.encode_texts(split.captions()))
    assert scores.fused.shape == (len(split), len(split) * split.captions_per_image)
    assert recall_table(scores.levels, "test", split.captions_per_image) == pytest.approx(evaluated[kind], abs=1e-9)
    assert evaluated[kind] == pytest.approx(evaluated["checkpoint"], abs=1e-9)
    assert evaluated[kind]["test/t2i_r5"] > 40  # chance: 25 (5 of 20 images)


def test_fused_scores_are_the_sum_of_the_chosen_levels(sources):
    paths, _, _, split = sources
    model = hat.load(paths["export"], device="cpu")
    assert model.num_levels == 3
    images = model.encode_images([split.load_image(record) for record in split.records[:4]])
    texts = model.encode_texts(["a red circle", "two small blue squares on a light background"])
    everything, top_two = model.score(images, texts), model.score(images, texts, levels=[2, 3])
    assert [level.shape for level in everything.levels] == [(4, 2)] * 3
    torch.testing.assert_close(everything.fused, sum(everything.levels))
    torch.testing.assert_close(top_two.fused, everything.levels[1] + everything.levels[2])
    with pytest.raises(ValueError, match="levels 1..3"):
        model.score(images, texts, levels=[4])
    with pytest.raises(ValueError, match="non-empty strings"):
        model.encode_texts(["a dog", ""])


def test_every_source_names_the_epoch_its_weights_are_from_as_training_does(sources, retrieving_run):
    """One numbering everywhere, counted from 0: training's best epoch (results.json, the log) is
    what evaluate.py records for best.pt and for its export, and a release gives the epoch its
    Lightning checkpoint records (HAT's Flickr30K release: 68), not null."""
    import json

    from hat.models.weight_sources import open_weight_source

    paths, _, _, _ = sources
    best_epoch = json.loads((retrieving_run / "results.json").read_text())["best_epoch"]
    assert isinstance(best_epoch, int)
    epochs = {kind: open_weight_source(paths[kind]).epoch for kind in ("checkpoint", "export", "release")}
    assert epochs == {"checkpoint": best_epoch, "export": best_epoch, "release": 68}
    recorded = {kind: json.loads((folder / "results.json").read_text())["epoch"]
                for kind, folder in paths["folders"].items()}
    assert recorded == epochs
    assert f"weights from epoch {best_epoch} " in (paths["export"] / "README.md").read_text()


def test_the_model_card_describes_the_model_it_carries(sources):
    """A tiny Swin is built from timm's Swin-B name with other widths: the card says so, with the
    parameter counts of what the export holds."""
    from hat.models.export import read_export

    state, config, _ = read_export(sources[0]["export"])
    card = (sources[0]["export"] / "README.md").read_text()
    image = sum(t.numel() for name, t in state.items() if name.startswith("image_encoder.") and t.is_floating_point())
    assert "'embed_dim': 16" in card and "'depths': [1, 1, 2, 1]" in card and f"{image / 1e6:.2f} M parameters" in card
    assert "BERT built from config (width 32), 12 layers" in card


def test_the_export_folder_carries_tokenizer_and_model_card(sources):
    paths, evaluated, _, _ = sources
    export = paths["export"]
    assert {"model.safetensors", "config.yaml", "tokenizer", "README.md"} <= {p.name for p in export.iterdir()}
    assert (export / "tokenizer" / "tokenizer.json").stat().st_size > 100_000  # the real WordPiece vocabulary
    card = (export / "README.md").read_text()
    assert "hat.load(" in card and "## Training config" in card and "num_train: 600" in card
    assert f"| {evaluated['export']['test/rsum']:.2f} |" in card  # the fused rsum of the test table


def test_a_path_without_a_model_is_named(tmp_path, sources):
    with pytest.raises(ConfigError, match=str(tmp_path / "missing")):
        hat.load(tmp_path / "missing")
    paths = sources[0]
    with pytest.raises(ConfigError, match="architecture"):
        hat.load(paths["release"])
    with pytest.raises(ValueError, match="precision='fp8'"):
        hat.load(paths["checkpoint"], precision="fp8")
