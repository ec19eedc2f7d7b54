"""Search with a trained model: ``python search.py checkpoint=PATH images=DIR query="two dogs on a beach"``
(see conf/search.yaml)."""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from hat.command_line import refuse_missing, run_command
from hat.config import ConfigError
from hat.data.problems import DatasetError
from hat.data.records import BadImageError
from hat.paths import PATH_OPTIONS, absolute_paths, expand_home


@hydra.main(config_path="conf", config_name="search", version_base="1.3")
def main(cfg: DictConfig) -> None:
    absolute_paths(cfg, PATH_OPTIONS["search"])
    try:
        refuse_missing(cfg, 'python search.py checkpoint=PATH images=DIR query="TEXT" (see conf/search.yaml)')
        from hat.retriever import load
        from hat.search.command import search_captions, search_images, search_mode

        mode = search_mode(cfg)
        retriever = load(Path(cfg.checkpoint), cfg.hardware.device, cfg.hardware.precision, cfg.release,
                         cfg.eval.kernel)
        out_dir = Path(HydraConfig.get().runtime.output_dir)
        (search_images if mode == "images" else search_captions)(retriever, cfg, out_dir)
    except (ConfigError, DatasetError, BadImageError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    sys.argv = expand_home(sys.argv, PATH_OPTIONS["search"])
    run_command(main)
