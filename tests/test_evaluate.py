"""evaluate.py reproduces a training run's test numbers from its checkpoint, encoding each image once."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from conftest import ROOT, TINY_RUN
from hat.config import ConfigError
from hat.engine.eval_spec import EvalSpec
from hat.engine.evaluate_checkpoint import evaluate, evaluate_checkpoint
from hat.runtime import resolve_runtime

pytestmark = pytest.mark.slow

CPU = OmegaConf.create({"device": "cpu", "precision": "fp32", "num_workers": 0, "pin_memory": False, "compile": False})


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    result = _run("train.py", *TINY_RUN, "train.epochs=1", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_cli_train_then_evaluate_gives_the_same_test_table(trained_run, tmp_path):
    result = _run("evaluate.py", f"checkpoint={trained_run}/checkpoints/best.pt", "hardware=cpu",
                  f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| fused |" in result.stdout and "| level3 |" in result.stdout
    trained = json.loads((trained_run / "results.json").read_text())["metrics"]
    evaluated = json.loads((tmp_path / "results.json").read_text())["metrics"]
    assert evaluated == pytest.approx(trained, abs=1e-6)
    assert {"test/rsum", "test/level1/rsum", "test/i2t_medr"} <= set(evaluated)


def test_each_image_is_encoded_once(trained_run, tmp_path, monkeypatch):
    from hat.models.hat import HATModel

    encoded = []
    original = HATModel.encode_images
    monkeypatch.setattr(HATModel, "encode_images", lambda self, x: encoded.append(len(x)) or original(self, x))
    assert resolve_runtime(CPU).device.type == "cpu"
    metrics = evaluate_checkpoint(trained_run / "checkpoints" / "best.pt", tmp_path, CPU, split="val")
    assert sum(encoded) == 8  # dataset.num_val images, not 8 x 5 captions
    assert "val/rsum" in metrics


def test_fusing_a_subset_of_the_trained_levels(trained_run, tmp_path, capsys):
    best = trained_run / "checkpoints" / "best.pt"
    everything = evaluate_checkpoint(best, tmp_path / "all", CPU, split="val")
    only_top = evaluate_checkpoint(best, tmp_path / "top", CPU, split="val", levels=[3])
    for key, value in everything.items():
        if "/level" in key:
            assert only_top[key] == pytest.approx(value)  # each level alone is unchanged
    for metric in ("i2t_r1", "t2i_r5", "rsum"):
        # one level fused is that level itself
        assert only_top[f"val/{metric}"] == pytest.approx(everything[f"val/level3/{metric}"])
    two = evaluate_checkpoint(best, tmp_path / "two", CPU, split="val", levels=[3, 2])
    assert "| fused level2+level3 |" in capsys.readouterr().out
    assert json.loads((tmp_path / "two" / "results.json").read_text())["fused_levels"] == [2, 3]
    assert json.loads((tmp_path / "all" / "results.json").read_text())["fused_levels"] == [1, 2, 3]
    assert set(two) == set(everything)


@pytest.mark.parametrize("levels", [[4], [0], [2, 2], []])
def test_fused_levels_must_be_trained_levels(trained_run, tmp_path, levels):
    with pytest.raises(ConfigError, match=r"eval\.levels=.*distinct positions 1\.\.3.*alignment\.levels=\[4, 10, 12\]"):
        evaluate_checkpoint(trained_run / "checkpoints" / "best.pt", tmp_path, CPU, split="val", levels=levels)


def _results(folder):
    return json.loads((folder / "results.json").read_text())


def test_saved_scores_reproduce_the_table_exactly(trained_run, tmp_path):
    best = trained_run / "checkpoints" / "best.pt"
    saved = evaluate_checkpoint(best, tmp_path / "save", CPU, save_scores=True)
    scores = tmp_path / "save" / "scores.safetensors"
    record = _results(tmp_path / "save")["scores"]
    assert record["path"] == str(scores) and record["dtype"] == "float16"
    plain = evaluate_checkpoint(best, tmp_path / "plain", CPU)  # the float32 scores, not saved
    assert record["metrics_changed_by_rounding"] == sum(plain[name] != saved[name] for name in plain)
    again = evaluate(EvalSpec(tmp_path / "again", scores=scores))
    assert again == saved  # to the last digit
    assert _results(tmp_path / "again")["metrics"] == _results(tmp_path / "save")["metrics"]
    assert _results(tmp_path / "again")["checkpoint"] == str(best)

    # any eval.levels from the file: as evaluating the checkpoint with them, on the rounded scores
    two = evaluate(EvalSpec(tmp_path / "two", scores=scores, levels=[3, 2]))
    direct = evaluate_checkpoint(best, tmp_path / "direct", CPU, save_scores=True, levels=[2, 3])
    assert two == direct
    assert {k: v for k, v in two.items() if "/level" in k} == {k: v for k, v in saved.items() if "/level" in k}
    with pytest.raises(ConfigError, match=rf"eval\.levels=\[4\] must list distinct positions 1\.\.3 of the levels "
                                          rf"saved in scores={scores} \(alignment\.levels=\[4, 10, 12\]\)"):
        evaluate(EvalSpec(tmp_path / "four", scores=scores, levels=[4]))
    with pytest.raises(ConfigError, match="split=val but scores=.* holds the test split"):
        evaluate(EvalSpec(tmp_path / "val", scores=scores, split="val"))

    cli = _run("evaluate.py", f"scores={scores}", "eval.levels=[2,3]", f"hydra.run.dir={tmp_path / 'cli'}")
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert "| fused level2+level3 |" in cli.stdout
    assert _results(tmp_path / "cli")["metrics"] == _results(tmp_path / "direct")["metrics"]


def test_float32_saved_scores_give_the_table_of_an_evaluation_without_saving(trained_run, tmp_path):
    best = trained_run / "checkpoints" / "best.pt"
    plain = evaluate_checkpoint(best, tmp_path / "plain", CPU)
    saved = evaluate_checkpoint(best, tmp_path / "save", CPU, save_scores=True, scores_dtype="float32")
    record = _results(tmp_path / "save")["scores"]
    assert record["dtype"] == "float32" and record["metrics_changed_by_rounding"] == 0
    again = evaluate(EvalSpec(tmp_path / "again", scores=tmp_path / "save" / "scores.safetensors"))
    assert plain == saved == again
    assert _results(tmp_path / "again")["scores"]["dtype"] == "float32"


def test_an_ensemble_of_a_model_with_itself_is_the_model(trained_run, tmp_path, capsys):
    best = trained_run / "checkpoints" / "best.pt"
    alone = evaluate_checkpoint(best, tmp_path / "alone", CPU, levels=[2, 3])
    pair = evaluate(EvalSpec(tmp_path / "pair", checkpoints=(best, best), hardware=CPU, levels=[2, 3]))
    fused = {name: value for name, value in alone.items() if "/level" not in name}
    assert {name: pair[name] for name in fused} == fused
    for member in ("model1", "model2"):
        assert {name: pair[name.replace("test/", f"test/{member}/")] for name in fused} == fused
    members = {name.replace("test/", f"test/{m}/") for name in fused for m in ("model1", "model2")}
    assert set(pair) == set(fused) | members
    assert "| model2 |" in capsys.readouterr().out
    results = _results(tmp_path / "pair")
    assert results["checkpoints"] == [str(best)] * 2 and results["fused_levels"] == [[2, 3], [2, 3]]

    # an ensemble's scores are saved per member and level, and reproduce its table
    saved = evaluate(EvalSpec(tmp_path / "save", checkpoints=(best, best), hardware=CPU, save_scores=True))
    assert evaluate(EvalSpec(tmp_path / "again", scores=tmp_path / "save" / "scores.safetensors")) == saved


def test_ensemble_members_must_score_the_same_split(trained_run, tmp_path):
    from hat.models.checkpoint_file import load_checkpoint, save_checkpoint

    best = trained_run / "checkpoints" / "best.pt"
    other = load_checkpoint(best)
    other["config"]["seed"] = 1  # the generated test split: other shapes, other captions
    save_checkpoint(other, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match=rf"checkpoints\[1\]={tmp_path / 'other.pt'} is evaluated on another test "
                                          rf"split than checkpoints\[0\]={best}"):
        evaluate(EvalSpec(tmp_path / "eval", checkpoints=(best, tmp_path / "other.pt"), hardware=CPU))


def test_evaluate_needs_a_checkpoint_checkpoints_or_scores(tmp_path):
    result = _run("evaluate.py", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    assert "give exactly one of checkpoint=PATH (a model), checkpoints=[PATH,PATH]" in result.stderr


def test_evaluate_names_a_missing_checkpoint(tmp_path):
    result = _run("evaluate.py", f"checkpoint={tmp_path}/missing.pt", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2 and "missing.pt" in result.stderr


def test_cli_refuses_an_existing_file_as_export_before_evaluating(trained_run, tmp_path):
    target = tmp_path / "model.safetensors"  # say, weights saved earlier
    target.write_bytes(b"keep me")
    run = tmp_path / "run"
    result = _run("evaluate.py", f"checkpoint={trained_run}/checkpoints/best.pt", "hardware=cpu", f"export={target}",
                  f"hydra.run.dir={run}")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: export={target} is an existing file: give a new or empty folder, or an earlier export to replace")
    assert target.read_bytes() == b"keep me"
    assert not (run / "results.json").exists() and "| fused |" not in result.stdout  # no evaluation ran


def test_an_export_that_fills_the_disk_is_one_line_naming_the_folder(trained_run, small_disk):
    from hat.engine.checkpoint import load_checkpoint
    from hat.models.export import export_model

    state = load_checkpoint(trained_run / "checkpoints" / "best.pt")
    disk = small_disk("256k")  # the tiny model's weights need about 6 MB
    with pytest.raises(ConfigError, match=re.escape(
            f"cannot write the exported model in {disk / 'export'}: the disk is full (No space left on device); "
            f"free space on {disk} (")) as error:
        export_model(state["model"], state["config"], disk / "export")
    assert str(error.value).endswith("free now), then export again (or give another export= folder)")
    assert list((disk / "export").iterdir()) == []  # no temporary file left


def test_export_folder_evaluates_the_same_and_seeds_training(trained_run, tmp_path, tiny_config):
    from hat.engine.loop import train
    from hat.models.export import read_export

    hardware = OmegaConf.create({"device": "cpu", "precision": "fp32", "num_workers": 0, "pin_memory": False,
                                 "compile": False})
    export = tmp_path / "export"
    direct = evaluate_checkpoint(trained_run / "checkpoints" / "best.pt", tmp_path / "a", hardware, export=export)
    assert sorted(p.name for p in export.iterdir()) == ["README.md", "config.yaml", "model.safetensors", "tokenizer"]
    assert evaluate_checkpoint(export, tmp_path / "b", hardware) == pytest.approx(direct)

    train(tiny_config("init_weights=" + str(export), "train.max_steps=1", "train.freeze_epochs=5",
                      "optim.lr=1e-12"), tmp_path / "run")
    state, _, _ = read_export(export)
    from hat.engine.checkpoint import load_checkpoint

    started = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    name = "text_encoder.model.encoder.layer.3.output.dense.weight"  # frozen: unchanged by training
    assert torch.equal(started[name], state[name])


def test_release_checkpoint_needs_a_dataset(tmp_path):
    from conftest import save_lightning_checkpoint

    fake = tmp_path / "hat_f30k.ckpt"
    save_lightning_checkpoint(fake, {})  # a readable release: what is missing is the dataset
    result = _run("evaluate.py", f"checkpoint={fake}", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2 and "pass dataset=f30k|coco" in result.stderr


@pytest.mark.parametrize("layout", ["f30k-karpathy", "coco-vsepp"])
def test_cli_train_and_evaluate_on_datasets_on_disk(tmp_path, layout):
    from conftest import TINY_TRAINING, make_karpathy_dataset, make_vsepp_coco_dataset

    name = layout.split("-")[0]
    counts = {"train": 8, "val": 5, "test": 5}
    root = (make_vsepp_coco_dataset if layout == "coco-vsepp" else make_karpathy_dataset)(
        tmp_path / "data", **({"counts": counts} if layout == "coco-vsepp" else {"name": name, "splits": counts})
    )
    run = tmp_path / "run"
    trained = _run("train.py", *TINY_TRAINING, f"dataset={name}", f"dataset.root={root}", "train.epochs=1",
                   f"hydra.run.dir={run}")
    assert trained.returncode == 0, trained.stderr[-3000:]
    # the training's hardware: loader workers set the compute threads (hat.threads), and a model
    # trained one epoch scores near-ties that another thread count's rounding orders otherwise
    evaluated = _run("evaluate.py", f"checkpoint={run}/checkpoints/best.pt", "hardware=cpu", "hardware.num_workers=0",
                     f"hydra.run.dir={tmp_path / 'eval'}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval" / "results.json").read_text())["metrics"]
    assert metrics == pytest.approx(json.loads((run / "results.json").read_text())["metrics"], abs=1e-6)
    expected = ["test/rsum"] if name == "f30k" else ["test/coco1k/rsum", "test/coco5k/rsum"]
    assert all(key in metrics for key in expected)
    if name == "coco":
        assert "coco1k:" in evaluated.stdout and "coco5k:" in evaluated.stdout


def test_cli_reports_every_missing_image_and_exits_2(tmp_path):
    from conftest import TINY_TRAINING, make_karpathy_dataset

    root = make_karpathy_dataset(tmp_path / "data", "f30k", {"train": 4, "val": 2, "test": 2})
    (root / "images" / "00001.jpg").unlink()
    (root / "images" / "00006.jpg").unlink()
    result = _run(
        "train.py", *TINY_TRAINING, "dataset=f30k", f"dataset.root={root}", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert result.returncode == 2 and "error:" in result.stderr
    assert "00001.jpg" in result.stderr and "00006.jpg" in result.stderr
