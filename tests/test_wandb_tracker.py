"""W&B tracking: the mode a run starts in, labels, and real offline runs of train.py read back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageChops

import hat
from conftest import ROOT, TINY_RUN
from hat.attention_drawing import figure_layout
from hat.data.build import build_splits
from hat.data.spec import data_spec
from hat.explain import attention_figure
from hat.wandb_tracker import override_tags, resolve_mode, sweep_group
from wandb_offline import isolated_environment, offline_runs, read_offline_run

NO_NETRC = {"NETRC": "/nonexistent/netrc"}


@pytest.mark.parametrize(
    ("requested", "environ", "expected"),
    [
        ("offline", {"WANDB_MODE": "online", "WANDB_API_KEY": "k"}, "offline"),  # logger.mode wins
        ("disabled", {}, "disabled"),
        (None, {"WANDB_MODE": "disabled"}, "disabled"),
        (None, {"WANDB_MODE": "dryrun"}, "offline"),  # W&B's old name for offline
        (None, {"WANDB_API_KEY": "k"}, "online"),  # logged in
        (None, {}, "offline"),  # no login: never prompt, run offline
        ("online", {}, "offline"),  # online asked for, but no login
        ("online", {"WANDB_API_KEY": "k"}, "online"),
    ],
)
def test_mode(requested, environ, expected):
    assert resolve_mode(requested, {**NO_NETRC, **environ}) == expected


def test_a_bad_mode_names_where_it_came_from():
    with pytest.raises(ValueError, match="WANDB_MODE='sometimes'"):
        resolve_mode(None, {"WANDB_MODE": "sometimes"})


def test_labels():
    long = "dataset.root=/" + "x" * 100
    assert override_tags(["alignment.levels=[12]", long]) == ["alignment.levels=[12]", long[:63] + "…"]
    assert sweep_group("levels", "multirun/2026-11-27/11-42-21") == "levels-2026-11-27-11-42-21"
    assert sweep_group(None, "multirun/2026-11-27/11-42-21") == "multirun-2026-11-27-11-42-21"


def _train(tmp_path: Path, run_dir: Path, *overrides: str, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(  # timeout: a hang guard only, not a speed bound
        [sys.executable, "train.py", *TINY_RUN, f"hydra.run.dir={run_dir}", *overrides],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def offline_training(tmp_path_factory):
    """A tiny training in offline mode, stopped after one epoch and resumed for two more."""
    tmp_path = tmp_path_factory.mktemp("offline")
    env = isolated_environment(tmp_path)
    run_dir = tmp_path / "run"
    _train(tmp_path, run_dir, "logger.mode=offline", "train.epochs=1", env=env)
    _train(tmp_path, run_dir, "logger.mode=offline", "resume=auto", "train.epochs=3", env=env)
    return tmp_path, run_dir


@pytest.mark.slow
def test_offline_run_records_config_metrics_examples_and_results(offline_training):
    tmp_path, run_dir = offline_training
    first, resumed = (read_offline_run(path) for path in offline_runs(tmp_path))
    assert resumed.run_id == first.run_id  # resume=auto continues the same W&B run
    assert resumed.exit_code == 0

    assert first.config["alignment"]["levels"] == [4, 10, 12]
    assert first.config["dataset"]["name"] == "shapes"

    rows = first.history + resumed.history
    validations = [row for row in rows if "val/rsum" in row]
    assert [row["trainer/step"] for row in validations] == [15, 30, 45]  # 24 images x 5 captions / batch 8 per epoch
    for level in (1, 2, 3):
        assert f"val/level{level}/i2t_r1" in validations[0]
    assert any("train/loss" in row and "train/samples_per_s" in row for row in rows)
    assert any("test/rsum" in row for row in resumed.history)

    results = json.loads((run_dir / "results.json").read_text())["metrics"]
    assert resumed.summary["test/rsum"] == results["test/rsum"]
    resumed_rsums = [row["val/rsum"] for row in resumed.history if "val/rsum" in row]
    assert resumed.summary["val/rsum"] == {"max": max(resumed_rsums), "last": resumed_rsums[-1]}
    assert "best/monitor" in resumed.summary
    (offline_dir,) = [p for p in offline_runs(tmp_path) if p.name.endswith(resumed.run_id)][-1:]
    assert json.loads((offline_dir / "files" / "results.json").read_text())["metrics"] == results

    tables = [row for row in first.history if "val/examples/image_queries" in row]
    assert [row["val/examples/image_queries"]["_type"] for row in tables] == ["table-file"]
    images = first.table("val/examples/image_queries")
    assert images["columns"][:3] == ["image", "index", "first_correct_rank"]
    assert len(images["data"]) == 8 and all(len(row) == 3 + 5 for row in images["data"])
    assert all(row[0]["_type"] == "image-file" for row in images["data"])
    captions = first.table("val/examples/caption_queries")
    assert captions["columns"][:3] == ["caption", "image", "first_correct_rank"]
    assert all(1 <= row[2] <= 8 for row in captions["data"])  # the rank of the caption's image
    curve = first.table("val/recall_curve_table")
    assert len(curve["data"]) == 2 * 50  # K = 1..50, i2t and t2i
    (attention,) = [row["val/examples/attention"] for row in first.history if "val/examples/attention" in row]
    assert attention["_type"] == "images/separated" and attention["count"] == 2  # logger.examples.attention_pairs
    offline_dir = [p for p in offline_runs(tmp_path) if p.name.endswith(first.run_id)][0]
    size = figure_layout([4, 2, 1], 64, 12).size  # 32-pixel images: 4x4, 2x2 and 1x1 regions; 12 token columns
    for name in attention["filenames"]:
        figure = Image.open(offline_dir / "files" / name)
        assert figure.size == (attention["width"], attention["height"]) == size
        assert len(set(figure.convert("RGB").getdata())) > 100  # heat-maps over images, not a blank canvas


@pytest.mark.slow
def test_the_attention_figure_logged_in_training_is_the_one_explain_draws(offline_training):
    """The last validation's figures, read back from the run, equal explain's figures of the
    checkpoint that validation wrote (``last.pt``), drawn at ``logger.examples``' size."""
    tmp_path, run_dir = offline_training
    resumed = read_offline_run(offline_runs(tmp_path)[-1])
    attention = [row["val/examples/attention"] for row in resumed.history if "val/examples/attention" in row][-1]
    retriever = hat.load(run_dir / "checkpoints" / "last.pt", device="cpu")
    split = build_splits(data_spec(retriever.config.dataset), retriever.config.seed)["val"]
    offline_dir = offline_runs(tmp_path)[-1]
    for name, label in zip(attention["filenames"], attention["captions"], strict=True):
        image, caption = label.removeprefix("image ").split(": ", 1)
        logged = Image.open(offline_dir / "files" / name).convert("RGB")
        drawn = attention_figure(retriever, split.load_image(split.records[int(image)]), caption, 64, 12, True)
        assert logged.size == drawn.size and ImageChops.difference(logged, drawn).getbbox() is None, label


@pytest.mark.slow
def test_an_unreachable_server_falls_back_to_an_offline_run_without_trying_wandb_online(tmp_path):
    env = isolated_environment(tmp_path, WANDB_BASE_URL="http://127.0.0.1:9", WANDB_API_KEY="a" * 40)
    run_dir = tmp_path / "run"
    result = _train(tmp_path, run_dir, "logger.mode=online", "logger.init_timeout=5", "train.epochs=1", env=env)
    assert (run_dir / "results.json").is_file()
    # The run's own probe of the server failed, so wandb (which retries an unreachable server for
    # minutes) never started online: one offline run, and no online run folder.
    warning = "W&B could not start online (no answer from the W&B server http://127.0.0.1:9 "
    assert (result.stderr + result.stdout).count(warning) == 1
    (offline,) = offline_runs(tmp_path)
    assert "test/rsum" in read_offline_run(offline).summary
    assert not list((tmp_path / "wandb_dir" / "wandb").glob("run-*"))


def test_a_wandb_folder_that_cannot_be_created_leaves_the_run_to_its_local_files(tmp_path, caplog):
    from omegaconf import OmegaConf

    from hat.wandb_tracker import WandbTracker

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    settings = OmegaConf.create({"mode": "offline", "project": "hat", "dir": str(blocker / "wandb"),
                                 "init_timeout": 5, "examples": {"queries": 0}})
    with caplog.at_level("WARNING"):
        tracker = WandbTracker(settings, tmp_path, {"seed": 0})
    assert tracker.run is None and tracker.run_id is None
    assert f"W&B cannot use the folder {blocker / 'wandb'}" in caplog.text
    tracker.log_metrics({"train/loss": 1.0}, 1)  # and every call is then a no-op
    tracker.finish(0)
