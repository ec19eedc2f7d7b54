"""Draw a model's per-level attention: ``python explain.py checkpoint=PATH image=IMG caption="..."``
(see conf/explain.yaml)."""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from hat.command_line import refuse_missing, run_command
from hat.config import ConfigError, require_int
from hat.data.problems import DatasetError
from hat.data.records import BadImageError
from hat.paths import PATH_OPTIONS, absolute_paths, expand_home


@hydra.main(config_path="conf", config_name="explain", version_base="1.3")
def main(cfg: DictConfig) -> None:
    absolute_paths(cfg, PATH_OPTIONS["explain"])
    try:
        refuse_missing(cfg, 'python explain.py checkpoint=PATH image=IMG caption="TEXT" (see conf/explain.yaml)')
        from hat.explain import attention_figure
        from hat.retriever import load

        require_int("cell", cfg.cell, 16)
        require_int("max_words", cfg.max_words, 1)
        retriever = load(Path(cfg.checkpoint), cfg.hardware.device, cfg.hardware.precision, cfg.release)
        figure = attention_figure(retriever, Path(cfg.image), str(cfg.caption), cfg.cell, cfg.max_words)
        output = Path(HydraConfig.get().runtime.output_dir) / cfg.output
        figure.save(output)
        print(f"attention maps of {len(retriever.config.alignment.levels)} levels: {output}")
    except (ConfigError, DatasetError, BadImageError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    sys.argv = expand_home(sys.argv, PATH_OPTIONS["explain"])
    run_command(main)
