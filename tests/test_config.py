"""The config tree composes for every group option, and bad values fail before any work with clear messages."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONF, ROOT, compose_config
from hat.config import ConfigError, monitor_terms, validate_train_config
from hat.models.config_checks import validate_model_config
from hat.models.spec import model_spec

GROUPS = ("encoder", "alignment", "loss", "dataset", "hardware", "optim", "logger", "experiment", "paths", "debug",
          "hparams_search", "local")


def taps(cfg) -> tuple[list[int], list[int]]:
    """(text taps, image taps) as the model spec resolves them."""
    spec = model_spec(cfg)
    return list(spec.text_taps), list(spec.image_taps)


def group_options():
    for group in GROUPS:
        for path in sorted((CONF / group).glob("*.yaml")):
            yield group, path.stem


@pytest.mark.parametrize(("group", "option"), list(group_options()))
def test_every_group_option_composes_and_its_model_config_is_valid(group, option):
    cfg = compose_config("train", [f"{group}={option}"])
    validate_model_config(cfg)
    monitor_terms(cfg.train.monitor, len(cfg.alignment.levels))


CONFIG_FILES = sorted(p for p in CONF.rglob("*.yaml") if p != CONF / "local" / "default.yaml")  # not the user's own


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(CONF)))
def test_every_config_file_starts_with_the_command_that_uses_it(path):
    lines = [line for line in path.read_text().splitlines() if not line.startswith("# @package")]
    assert lines[0].startswith(("# python ", "# torchrun ")), f"{path} should begin with the command that uses it"


def test_defaults_reproduce_hat_recipe():
    cfg = compose_config("train", [])
    assert cfg.encoder.image.name == "swin_base_patch4_window7_224.ms_in22k"
    assert cfg.encoder.text.name == "bert-base-uncased" and cfg.encoder.text.max_length == 32
    assert list(cfg.alignment.levels) == [4, 10, 12] and cfg.alignment.direction == "i2t"
    assert cfg.alignment.smooth == 9.0 and cfg.loss.name == "hinge_hardest" and cfg.loss.margin == 0.2
    assert cfg.optim.lr == 1e-4 and cfg.optim.step_size == 10 and cfg.optim.gamma == 0.1
    assert cfg.train.batch_size == 58 and cfg.train.freeze_epochs == 11
    assert cfg.train.monitor == "val/i2t_r1+val/t2i_r1"
    assert cfg.logger.backend == "wandb" and cfg.hardware.device == "auto"
    assert taps(cfg) == ([4, 10, 12], [2, 3, 4])


@pytest.mark.parametrize(
    ("levels", "image_levels"),
    [("[4,10,12]", [2, 3, 4]), ("[12]", [4]), ("[4,8,12]", [2, 3, 4]), ("[3,6,9,12]", [1, 2, 3, 4])],
)
def test_text_levels_pair_with_the_top_swin_stages(levels, image_levels):
    cfg = compose_config("train", ["dataset=coco", f"alignment.levels={levels}"])
    validate_model_config(cfg)
    assert taps(cfg)[1] == image_levels


def test_vit_image_levels_scale_the_text_layer_to_its_depth():
    cfg = compose_config(
        "train", ["encoder.image.family=vit", "encoder.image.depth=24", "alignment.levels=[4,10,12]"]
    )
    assert taps(cfg)[1] == [8, 20, 24]


def test_explicit_image_levels_are_used_as_given():
    cfg = compose_config("train", ["alignment.levels=[6,12]", "alignment.image_levels=[3,4]"])
    validate_model_config(cfg)
    assert taps(cfg) == ([6, 12], [3, 4])


BAD_VALUES = [
    (["alignment.levels=[13]"], r"alignment\.levels=\[13\].*13.*1\.\.12"),
    (["alignment.levels=[0,12]"], r"alignment\.levels.*outside 1\.\.12"),
    (["alignment.image_levels=[3,4]"],
     r"alignment\.image_levels=\[3, 4\] has 2 levels.*alignment\.levels=\[4, 10, 12\] has 3"),
    (["alignment.image_levels=[2,3,5]"], r"alignment\.image_levels.*5.*outside 1\.\.4"),
    (["alignment.smooth=0"], r"alignment\.smooth=0.*> 0"),
    (["alignment.smooth=-1.5"], r"alignment\.smooth=-1\.5"),
    (["alignment.direction=both"], r"alignment\.direction='both'.*i2t.*t2i"),
    (["loss.margin=-0.1"], r"loss\.margin=-0\.1.*>= 0"),
    (["train.batch_size=1"], r"train\.batch_size=1.*>= 2"),
    (["train.monitor=val/r1"], r"train\.monitor='val/r1'.*not a validation metric"),
    (["hardware.precision=fp8"], r"hardware\.precision='fp8'"),
    (["hardware.compile_mode=fast"], r"hardware\.compile_mode='fast'.*'default', 'reduce-overhead'"),
    (["resume=/nonexistent/last.pt"], r"resume=/nonexistent/last\.pt"),
    (["dataset=coco", "dataset.root=/nonexistent"], r"dataset\.root=/nonexistent does not exist.*dataset_coco\.json"),
    (["dataset=f30k", "dataset.root=/nonexistent"], r"dataset\.root=/nonexistent.*dataset_flickr30k\.json.*images"),
    (["logger.mode=sometimes"], r"logger\.mode='sometimes'.*online.*offline.*disabled"),
    (["logger.init_timeout=0"], r"logger\.init_timeout=0 must be a finite number > 0 \(seconds"),
    (["logger.examples.top_k=0"], r"logger\.examples\.top_k=0 must be an integer >= 1"),
    (["logger=none", "logger.backend=tensorboard"], r"logger\.backend='tensorboard'.*none.*wandb"),
]


@pytest.mark.parametrize(
    ("overrides", "message"), BAD_VALUES, ids=lambda v: " ".join(v) if isinstance(v, list) else None
)
def test_bad_values_fail_with_a_message_naming_field_value_and_what_is_allowed(overrides, message):
    cfg = compose_config("train", ["dataset=shapes", *overrides])
    with pytest.raises(ConfigError, match=message):
        validate_train_config(cfg)


def test_dataset_root_without_its_annotation_file_names_the_file(tmp_path):
    cfg = compose_config("train", ["dataset=f30k", f"dataset.root={tmp_path}"])
    with pytest.raises(ConfigError, match=r"has no dataset_flickr30k\.json"):
        validate_train_config(cfg)


def test_bad_values_fail_before_the_model_is_built(monkeypatch, tmp_path, tiny_config):
    import hat.engine.loop as loop
    import hat.engine.training_parts as parts

    def must_not_run(*args, **kwargs):
        raise AssertionError("work started before the config was checked")

    monkeypatch.setattr(parts, "build_model", must_not_run)
    monkeypatch.setattr(parts, "build_splits", must_not_run)
    with pytest.raises(ConfigError, match="alignment.smooth"):
        loop.train(tiny_config("alignment.smooth=0"), tmp_path)


@pytest.mark.parametrize(
    ("overrides", "expected_file"),
    [
        (["dataset=coco", "alignment.levels=[4,8,12]"], "dataset_coco.json"),
        (["dataset=f30k"], "dataset_flickr30k.json"),
    ],
)
def test_cli_missing_dataset_root_exits_before_any_work_naming_the_path_and_layout(tmp_path, overrides, expected_file):
    result = subprocess.run(  # timeout: a hang guard only, not a speed bound
        [sys.executable, "train.py", *overrides, "dataset.root=/nonexistent", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 2
    assert "dataset.root=/nonexistent" in result.stderr and expected_file in result.stderr
    log = (tmp_path / "train.log").read_text()  # stopped at the config check: no device, dataset or model yet
    assert "] - device " not in log and "] - dataset " not in log and "] - model: " not in log, log
    assert not (tmp_path / "checkpoints").exists()


def _sweep_jobs(name: str) -> list[list[str]]:
    """Each job's overrides of sweeps/NAME.yaml, expanded as Hydra's basic sweeper does."""
    import yaml
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = yaml.safe_load((ROOT / "sweeps" / f"{name}.yaml").read_text())["hydra"]["sweeper"]["params"]
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    axes = [[f"{o.get_key_element()}={value}" for value in o.sweep_string_iterator()] for o in parsed]
    return [list(job) for job in itertools.product(*axes)]


SWEEPS = sorted(p.stem for p in (ROOT / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("name", SWEEPS)
@pytest.mark.parametrize("base", [[], ["encoder=tiny"]], ids=["hat", "tiny"])
def test_every_sweep_job_composes(name, base):
    lines = (ROOT / "sweeps" / f"{name}.yaml").read_text().splitlines()
    assert lines[1].startswith(f"# python train.py -m +sweeps={name}")
    jobs = _sweep_jobs(name)
    assert len(jobs) >= 2
    for job in jobs:
        cfg = compose_config("train", [f"+sweeps={name}", *base, *job])
        validate_model_config(cfg)


def test_sweep_is_found_from_any_working_directory(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "+sweeps=levels", "--cfg", "hydra"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "alignment.levels: '[12],[10,12],[4,10,12],[3,6,9,12]'" in result.stdout


WANDB_SWEEPS = sorted(p.stem for p in (ROOT / "sweeps" / "wandb").glob("*.yaml"))


def _wandb_agent_jobs(name: str) -> list[list[str]]:
    """The command-line overrides `wandb agent` passes for each run of a grid sweep file."""
    import yaml
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    spec = yaml.safe_load((ROOT / "sweeps" / "wandb" / f"{name}.yaml").read_text())
    assert spec["program"] == "train.py" and spec["method"] == "grid"
    assert spec["command"][-1] == "${args_no_hyphens}"  # key=value: Hydra's override syntax
    keys = list(spec["parameters"])
    grid = itertools.product(*(spec["parameters"][key]["values"] for key in keys))
    return [
        create_sweep_command_args({"args": {k: {"value": v} for k, v in zip(keys, values)}})["args_no_hyphens"]
        for values in grid
    ]


def test_there_is_a_wandb_sweep_file_for_every_hydra_sweep():
    assert WANDB_SWEEPS == SWEEPS


@pytest.mark.parametrize("name", WANDB_SWEEPS)
def test_wandb_sweep_runs_the_same_grid_as_the_hydra_sweep(name):
    jobs = _wandb_agent_jobs(name)
    assert sorted(jobs) == sorted(_sweep_jobs(name))
    for job in jobs:
        validate_model_config(compose_config("train", ["encoder=tiny", *job]))


def test_a_bad_wandb_mode_in_the_environment_stops_the_run_before_any_work(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(ConfigError, match=r"WANDB_MODE='sometimes' is not a W&B mode"):
        validate_train_config(compose_config("train", ["dataset=shapes"]))
    validate_train_config(compose_config("train", ["dataset=shapes", "logger.mode=offline"]))  # logger.mode wins


def test_every_hardware_option_starts_from_the_one_base():
    import yaml

    options = sorted(p for p in (CONF / "hardware").glob("*.yaml") if p.stem != "base")
    assert [p.stem for p in options] == ["auto", "cpu", "ddp", "gpu", "slurm"]
    base = yaml.safe_load((CONF / "hardware" / "base.yaml").read_text())
    for path in options:
        defaults = yaml.safe_load(path.read_text())["defaults"]
        assert defaults[0] in ("base", "/hardware/base@hardware"), path.name
        hardware = compose_config("train", [f"hardware={path.stem}"]).hardware
        assert set(hardware) == set(base), path.name  # no option adds or drops a setting


def _without_tags(cfg) -> dict:
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain["logger"].pop("tags")
    return plain


def test_the_paper_presets_only_name_what_the_defaults_already_are():
    f30k = compose_config("train", ["experiment=hat_f30k"])
    assert _without_tags(f30k) == _without_tags(compose_config("train", []))
    assert list(f30k.logger.tags) == ["paper", "hat_f30k"]
    coco = compose_config("train", ["experiment=hat_coco"])
    assert _without_tags(coco) == _without_tags(compose_config("train", ["dataset=coco"]))
    assert coco.dataset.name == "coco" and coco.dataset.val_images == 1000 and coco.dataset.use_restval
    assert dict(coco.dataset.test_protocols) == {"coco1k": 5, "coco5k": 1}
    assert coco.train.batch_size == 58 and list(coco.alignment.levels) == [4, 10, 12]


def test_a_local_config_sets_this_machines_data_roots_and_wandb_entity(tmp_path):
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "default.yaml").write_text(
        "# @package _global_\n# local\npaths:\n  f30k: /mnt/f30k\n  coco: /mnt/coco\nlogger:\n  entity: lab\n")
    searchpath = f"hydra.searchpath=[file://{tmp_path}]"
    cfg = compose_config("train", [searchpath, "dataset=coco"])
    assert cfg.dataset.root == "/mnt/coco" and cfg.logger.entity == "lab"
    assert compose_config("train", [searchpath, "dataset.root=/elsewhere"]).dataset.root == "/elsewhere"
    assert compose_config("evaluate", [searchpath, "checkpoint=best.pt", "dataset=f30k"]).dataset.root == "/mnt/f30k"
    assert "conf/local/default.yaml" in (ROOT / ".gitignore").read_text().splitlines()


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF / "debug").glob("*.yaml")))
def test_every_debug_option_passes_the_checks_on_the_tiny_run(option, tiny_config):
    cfg = tiny_config(f"debug={option}")
    validate_train_config(cfg)
    assert cfg.logger.backend == "none" and cfg.hardware.num_workers == 0


@pytest.mark.parametrize(("monitor", "direction"), [("val/i2t_r1+val/t2i_r1", "maximize"),
                                                     ("val/level2/t2i_medr", "minimize")])
def test_the_optuna_search_tunes_four_settings_in_the_monitors_direction(monitor, direction):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", [f"train.monitor={monitor}", "hparams_search=optuna"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper.direction == direction
    assert set(sweeper.params) == {"loss.margin", "alignment.smooth", "optim.lr", "optim.warmup_epochs"}


@pytest.mark.parametrize(("group", "typo"),
                         [("experiment", "quickstar"), ("debug", "fdrr"), ("hparams_search", "optunaa")])
def test_a_misspelt_experiment_debug_or_search_option_stops_with_hydras_list_of_options(group, typo):
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match=f"Could not find '{group}/{typo}'") as error:
        compose_config("train", [f"{group}={typo}"])
    listed = str(error.value).split(f"Available options in '{group}':")[1].split("Config search path")[0].split()
    assert listed == sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_without_experiment_debug_or_search_nothing_of_those_groups_is_chosen():
    """The groups default to no option (null), so a plain multirun's W&B group stays ``multirun-...``."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        choices = compose("train", [], return_hydra_config=True).hydra.runtime.choices
    assert choices.experiment is None and choices.debug is None and choices.hparams_search is None


def test_cli_misspelt_experiment_exits_with_hydras_list_of_options_before_any_work(tmp_path):
    result = subprocess.run(  # timeout: a hang guard only, not a speed bound
        [sys.executable, "train.py", "experiment=quickstar", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 2
    assert result.stderr == ("error: experiment=quickstar is not an option of experiment: "
                             "choose one of hat_coco, hat_f30k, quickstart\n")
    assert not (tmp_path / "run").exists()
