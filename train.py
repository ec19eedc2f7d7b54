"""Train HAT: ``python train.py experiment=quickstart`` (see conf/train.yaml for every option)."""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from hat.command_line import EXIT_USER_ERROR, run_command
from hat.config import ConfigError, monitor_direction
from hat.config_tree import print_config_tree
from hat.data.problems import DatasetError
from hat.engine.distributed import CollectiveTimeout, from_environment, run_stamp
from hat.engine.failures import TrainingDiverged, last_line
from hat.engine.loop import train
from hat.engine.preemption import EXIT_PREEMPTED, Preempted, PreemptionSignals, in_submitit_job
from hat.engine.slurm_job import SubmititJob, continue_command, leave_submitit_job
from hat.paths import PATH_OPTIONS, absolute_paths, expand_home
from hat.wandb_tracker import override_tags, sweep_group


def main_process(value, otherwise=None):
    """``${main_process:VALUE[,OTHERWISE]}``: VALUE in process 0 of a run, OTHERWISE (default null) in the
    others (torchrun's or SLURM's), so that one process writes the log file and ``.hydra/``."""
    return value if from_environment().is_main else otherwise


def register_resolvers() -> None:
    """The interpolations the configs use: ``${run_stamp:}`` (the run folder's date/time, shared by
    torchrun's ranks), ``${project_root:}`` (this folder, where ``sweeps/`` lives) and
    ``${main_process:...}``, ``${tasks_per_node:GPUS}`` (SLURM tasks: one per GPU, at least one) and
    ``${monitor_direction:MONITOR}`` (maximize or minimize, for the Optuna sweeper).
    Hydra ships them to the jobs of a launcher (SLURM) with its state."""
    OmegaConf.register_new_resolver("run_stamp", run_stamp, replace=True)
    OmegaConf.register_new_resolver("project_root", lambda: str(Path(__file__).resolve().parent), replace=True)
    OmegaConf.register_new_resolver("main_process", main_process, replace=True)
    OmegaConf.register_new_resolver("tasks_per_node", lambda gpus: max(1, int(gpus or 0)), replace=True)
    OmegaConf.register_new_resolver("monitor_direction", monitor_direction, replace=True)


def label_run(cfg: DictConfig) -> None:
    """Tag the W&B run with this job's command-line overrides and, in a multirun, put every job in
    one group named after the sweep (``+sweeps=NAME``) and its start time (unless logger.group is set)."""
    if cfg.logger.backend != "wandb":
        return
    hydra_cfg = HydraConfig.get()
    with open_dict(cfg):
        cfg.logger.tags = [*cfg.logger.tags, *override_tags(list(hydra_cfg.overrides.task))]
        if hydra_cfg.mode == RunMode.MULTIRUN and cfg.logger.group is None:
            choices = hydra_cfg.runtime.choices
            cfg.logger.group = sweep_group(choices.get("sweeps") or choices.get("hparams_search"), hydra_cfg.sweep.dir)


def _fail(error: BaseException, code: int):
    """A single run prints the error and exits with ``code``; a multirun job raises it instead, so
    that the launcher records the job's failure (Hydra's sweepers, submitit's result file) and
    the other jobs of the sweep still run."""
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        raise error
    print(f"error: {last_line(error)}", file=sys.stderr)
    sys.exit(code)


def submitit_job() -> SubmititJob:
    """This SLURM job's launcher settings, run folder and the command that continues it."""
    hydra_cfg = HydraConfig.get()
    launcher = hydra_cfg.launcher
    return SubmititJob(
        int(launcher.timeout_min), int(launcher.signal_delay_s), int(launcher.max_num_timeout),
        continue_command(list(hydra_cfg.overrides.task), hydra_cfg.sweep.dir, hydra_cfg.sweep.subdir),
        Path(hydra_cfg.runtime.output_dir) / "checkpoints" / "last.pt",
    )


def hydra_record(cfg: DictConfig, run_dir: Path):
    """What writes ``.hydra/`` (config, Hydra's config, overrides) the way Hydra would, called by the
    training once the run folder is this run's: a run refused at the folder (in use, or holding
    another run) leaves the record of the run that is there untouched. Process 0 alone calls it."""

    def write() -> None:
        hydra_cfg = HydraConfig.get()
        folder = run_dir / ".hydra"
        folder.mkdir(parents=True, exist_ok=True)
        for name, node in (("config", cfg), ("hydra", OmegaConf.create({"hydra": hydra_cfg})),
                           ("overrides", hydra_cfg.overrides.task)):
            (folder / f"{name}.yaml").write_text(OmegaConf.to_yaml(node))

    return write


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Run one training job in Hydra's output directory; returns the validation monitor of the best
    checkpoint (``train.monitor``), which sweepers and tuners optimise: never a test metric.
    Its path options are made absolute first, so the checkpoints store paths that work from anywhere."""
    absolute_paths(cfg, PATH_OPTIONS["train"])
    label_run(cfg)
    if cfg.print_config and from_environment().is_main:
        print_config_tree(cfg)
    with PreemptionSignals() as signals:
        try:
            run_dir = Path(HydraConfig.get().runtime.output_dir)
            overrides = list(HydraConfig.get().overrides.task)
            return train(cfg, run_dir, signals, record=hydra_record(cfg, run_dir), overrides=overrides).best_monitor
        except (ConfigError, DatasetError) as error:
            _fail(error, EXIT_USER_ERROR)  # fix the input; retrying as is cannot help
        except (TrainingDiverged, CollectiveTimeout) as error:
            _fail(error, 1)
        except Preempted as stop:
            if in_submitit_job():
                leave_submitit_job(stop, submitit_job(), signals)
            signals.ignore_until_exit()  # a second signal must not kill the process on its way out
            print(f"preempted: {stop} (exit status {EXIT_PREEMPTED})", file=sys.stderr)
            sys.exit(EXIT_PREEMPTED)


if __name__ == "__main__":
    sys.argv = expand_home(sys.argv, PATH_OPTIONS["train"])
    register_resolvers()
    run_command(main)
