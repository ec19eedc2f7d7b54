"""Evaluate a checkpoint, an ensemble or saved scores: ``python evaluate.py checkpoint=runs/.../checkpoints/best.pt``
(see conf/evaluate.yaml)."""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from hat.command_line import run_command
from hat.config import ConfigError
from hat.data.problems import DatasetError
from hat.engine.eval_spec import eval_spec
from hat.engine.evaluate_checkpoint import evaluate
from hat.paths import PATH_OPTIONS, absolute_paths, expand_home


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    absolute_paths(cfg, PATH_OPTIONS["evaluate"])
    hydra_cfg = HydraConfig.get()
    try:
        evaluate(eval_spec(cfg, Path(hydra_cfg.runtime.output_dir), list(hydra_cfg.overrides.task)))
    except (ConfigError, DatasetError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    sys.argv = expand_home(sys.argv, PATH_OPTIONS["evaluate"])
    run_command(main)
