"""train.py, the entry point: what it hands to sweepers, how it fails in single runs and in
multirun jobs, and the SLURM preset it composes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import open_dict

import train as entry
from conftest import CONF, ROOT, TINY_RUN
from hat.config import ConfigError


def _compose(*overrides, mode=RunMode.RUN):
    """The config with its ``hydra`` node, registered as the running job's (as in a real run)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode = mode
    HydraConfig.instance().set_config(cfg)
    return cfg


def test_train_returns_the_validation_monitor_of_the_best_epoch_never_a_test_metric(tmp_path):
    cfg = _compose(*TINY_RUN, "logger=none", "train.epochs=1", f"hydra.runtime.output_dir={tmp_path}")
    with open_dict(cfg):
        del cfg.hydra
    returned = entry.main.__wrapped__(cfg)
    best = yaml.safe_load((tmp_path / "results.json").read_text())["monitor"]["val/i2t_r1+val/t2i_r1"]
    assert returned == best


@pytest.mark.parametrize("mode", [RunMode.RUN, RunMode.MULTIRUN])
def test_errors_end_a_single_run_with_status_2_and_are_raised_in_multirun_jobs(mode, capsys):
    _compose(mode=mode)
    error = ConfigError("train.batch_size='abc' must be an integer >= 2")
    if mode == RunMode.MULTIRUN:  # the launcher records the failure (submitit: its result file)
        with pytest.raises(ConfigError, match="batch_size"):
            entry._fail(error, 2)
    else:
        with pytest.raises(SystemExit) as exit_info:
            entry._fail(error, 2)
        assert exit_info.value.code == 2
        assert capsys.readouterr().err == "error: train.batch_size='abc' must be an integer >= 2\n"


@pytest.mark.parametrize(("gpus", "tasks", "device"), [("8", 8, "auto"), ("null", 1, "auto")])
def test_slurm_preset_resumes_by_default_and_runs_on_cpu_nodes(gpus, tasks, device):
    cfg = _compose("hardware=slurm", f"hydra.launcher.gpus_per_node={gpus}", mode=RunMode.MULTIRUN)
    assert cfg.resume == "auto", "hardware=slurm's resume: auto must win over train.yaml's null"
    assert cfg.hydra.launcher.tasks_per_node == tasks
    assert cfg.hardware.device == device
    assert cfg.hydra.launcher.signal_delay_s > 0 and cfg.hydra.launcher.max_num_timeout >= 1


def test_only_process_0_writes_the_log_file_and_hydra_never_writes_its_record_itself(monkeypatch):
    """train.py writes .hydra/ once the run folder is its own (tests/test_run_folder.py), so Hydra must not."""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    follower = _compose("hydra.runtime.output_dir=/runs/x")
    assert follower.hydra.output_subdir is None
    assert follower.hydra.job_logging.handlers.file.filename == "/dev/null"
    monkeypatch.setenv("RANK", "0")
    main = _compose("hydra.runtime.output_dir=/runs/x")
    assert main.hydra.output_subdir is None
    assert main.hydra.job_logging.handlers.file.filename == f"/runs/x/{main.hydra.job.name}.log"


def test_wandb_sweep_files_optimise_the_validation_monitor_that_every_dataset_logs():
    for path in sorted((ROOT / "sweeps" / "wandb").glob("*.yaml")):
        metric = yaml.safe_load(path.read_text())["metric"]
        assert metric == {"name": "best/monitor", "goal": "maximize"}, path.name
    assert Path(entry.__file__).resolve().parent == ROOT


def test_another_job_logging_choice_still_composes_and_runs_without_a_log_file(tmp_path):
    cfg = _compose("hydra/job_logging=disabled", "hydra.runtime.output_dir=/runs/x")
    assert "handlers" not in cfg.hydra.job_logging


def _optuna_sweep(sweep: Path, storage: str, *overrides: str) -> None:
    tiny = [item for item in TINY_RUN if not item.startswith("optim.lr=")]  # a value given here is not tuned
    command = [sys.executable, str(ROOT / "train.py"), "hparams_search=optuna", *tiny, "logger=none",
               f"hydra.sweeper.storage={storage}", f"hydra.sweep.dir={sweep}", *overrides]
    subprocess.run(command, cwd=sweep.parent, check=True, capture_output=True, timeout=600)


def _trial_monitors(sweep: Path, jobs: int) -> list[float]:
    """Each job's best validation monitor, after checking that the job got all four tuned values."""
    monitors = []
    for job in range(jobs):
        results = json.loads((sweep / str(job) / "results.json").read_text())
        overrides = (sweep / str(job) / ".hydra" / "overrides.yaml").read_text()
        assert all(f"{key}=" in overrides for key in ("loss.margin", "alignment.smooth", "optim.lr",
                                                      "optim.warmup_epochs"))
        monitors.append(results["monitor"]["val/i2t_r1+val/t2i_r1"])
    return monitors


@pytest.mark.slow
def test_three_optuna_trials_tune_on_the_validation_monitor_and_write_the_best(tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    _optuna_sweep(tmp_path / "sweep", storage, "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.n_startup_trials=3")
    monitors = _trial_monitors(tmp_path / "sweep", 3)
    best = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(monitors)  # recalls: maximised
    assert set(best["best_params"]) == {"loss.margin", "alignment.smooth", "optim.lr", "optim.warmup_epochs"}
    assert 0.05 <= best["best_params"]["loss.margin"] <= 0.4

    # The study lives on in its database: another sweep (another sampler seed) adds a new trial to it.
    _optuna_sweep(tmp_path / "more", storage, "hydra.sweeper.n_trials=1", "hydra.sweeper.sampler.seed=1")
    trials = optuna.load_study(study_name="hat", storage=storage).trials
    assert [trial.value for trial in trials] == monitors + _trial_monitors(tmp_path / "more", 1)
    assert trials[3].params not in [trial.params for trial in trials[:3]]
    best = yaml.safe_load((tmp_path / "more" / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(trial.value for trial in trials)
