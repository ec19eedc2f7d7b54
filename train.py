"""Train HAT: ``python train.py experiment=quickstart`` (see conf/train.yaml for every option)."""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from hat.config import ConfigError
from hat.data.problems import DatasetError
from hat.engine.loop import train


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Run one training job in Hydra's output directory; returns test/rsum (for sweepers)."""
    try:
        results = train(cfg, Path(HydraConfig.get().runtime.output_dir))
    except (ConfigError, DatasetError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    return results["test/rsum"]


if __name__ == "__main__":
    main()
