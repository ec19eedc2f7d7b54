"""Write a split of a run's dataset as plain files, e.g. the generated shapes images to search in.

``python -m hat.data.split_folder OUT --from runs/qs/checkpoints/best.pt [--split test]`` writes
``OUT/NNN.png`` (the split's images, in order) and ``OUT/captions.txt`` (every caption, one per
line, image by image), rebuilding the split from the dataset config the checkpoint stores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omegaconf import OmegaConf

from hat.checks import ConfigError
from hat.data.build import build_splits
from hat.data.records import CaptionedImages
from hat.data.spec import data_spec
from hat.models.checkpoint_file import load_checkpoint

CAPTIONS_FILE = "captions.txt"


def write_split_folder(split: CaptionedImages, folder: Path) -> list[list[str]]:
    """Save the images of ``split`` as ``folder/NNN.png`` and their captions to ``folder/captions.txt``;
    returns each image's captions."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, record in enumerate(split.records):
        split.load_image(record).save(folder / f"{index:03d}.png")
    captions = [list(record.captions) for record in split.records]
    (folder / CAPTIONS_FILE).write_text("".join(text + "\n" for texts in captions for text in texts), encoding="utf-8")
    return captions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hat.data.split_folder", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the folder to write")
    parser.add_argument("--from", dest="checkpoint", type=Path, required=True, help="a .pt checkpoint of train.py")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    args = parser.parse_args(argv)
    try:
        config = OmegaConf.create(load_checkpoint(args.checkpoint)["config"])
        split = build_splits(data_spec(config.dataset), config.seed)[args.split]
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    write_split_folder(split, args.out)
    print(f"{len(split)} images and {split.num_pairs} captions of {config.dataset.name}/{args.split} in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
