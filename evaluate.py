"""Evaluate a checkpoint: ``python evaluate.py checkpoint=runs/.../checkpoints/best.pt`` (see conf/evaluate.yaml)."""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from hat.config import ConfigError, validate_eval_config
from hat.data.problems import DatasetError
from hat.engine.evaluate_checkpoint import evaluate_checkpoint


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        validate_eval_config(cfg)
        evaluate_checkpoint(
            Path(cfg.checkpoint),
            Path(HydraConfig.get().runtime.output_dir),
            cfg.hardware,
            split=cfg.split,
            dataset=cfg.get("dataset"),
            batch_size=cfg.eval.batch_size,
            release_model=cfg.release,
            export=Path(cfg.export) if cfg.export else None,
            levels=cfg.eval.get("levels"),
        )
    except (ConfigError, DatasetError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
