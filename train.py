"""Train HAT: ``python train.py experiment=quickstart`` (see conf/train.yaml for every option)."""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from hat.config import ConfigError
from hat.data.problems import DatasetError
from hat.engine.distributed import follower_overrides, run_stamp
from hat.engine.loop import train
from hat.engine.preemption import EXIT_PREEMPTED, Preempted
from hat.metrics import metric_name
from hat.wandb_tracker import override_tags, sweep_group


def register_resolvers() -> None:
    """The interpolations conf/train.yaml uses: ``${run_stamp:}`` (the run folder's date/time, shared by
    torchrun's ranks) and ``${project_root:}`` (this folder, where ``sweeps/`` lives)."""
    OmegaConf.register_new_resolver("run_stamp", run_stamp, replace=True)
    OmegaConf.register_new_resolver("project_root", lambda: str(Path(__file__).resolve().parent), replace=True)


def label_run(cfg: DictConfig) -> None:
    """Tag the W&B run with this job's command-line overrides and, in a multirun, put every job in
    one group named after the sweep (``+sweeps=NAME``) and its start time (unless logger.group is set)."""
    if cfg.logger.backend != "wandb":
        return
    hydra_cfg = HydraConfig.get()
    with open_dict(cfg):
        cfg.logger.tags = [*cfg.logger.tags, *override_tags(list(hydra_cfg.overrides.task))]
        if hydra_cfg.mode == RunMode.MULTIRUN and cfg.logger.group is None:
            cfg.logger.group = sweep_group(hydra_cfg.runtime.choices.get("sweeps"), hydra_cfg.sweep.dir)


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Run one training job in Hydra's output directory; returns the test rsum (of the first test
    protocol, e.g. test/coco1k/rsum on COCO) for sweepers."""
    label_run(cfg)
    try:
        results = train(cfg, Path(HydraConfig.get().runtime.output_dir))
    except (ConfigError, DatasetError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except Preempted as stop:
        print(f"preempted: {stop}", file=sys.stderr)
        sys.exit(EXIT_PREEMPTED)
    protocols = cfg.dataset.get("test_protocols")
    return results[metric_name("test", "rsum", next(iter(protocols)) if protocols else None)]


if __name__ == "__main__":
    register_resolvers()
    sys.argv += follower_overrides()
    main()
