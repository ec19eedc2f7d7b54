"""Build the train/val/test splits named by ``dataset`` config, and check its root before any work."""

from __future__ import annotations

from pathlib import Path

from hat.data.karpathy import EXPECTED_LAYOUT, annotation_path, read_karpathy_splits
from hat.data.records import CaptionedImages
from hat.data.shapes import build_shapes_splits

DATASETS = ("shapes", "f30k", "coco")


def check_dataset_root(cfg) -> None:
    """Raise ``FileNotFoundError`` naming the path and the expected layout when the data is not there."""
    if cfg.name not in DATASETS:
        raise ValueError(f"dataset.name must be one of {DATASETS}, got {cfg.name!r}")
    if cfg.name == "shapes":
        return
    root = Path(str(cfg.root)).expanduser()
    layout = EXPECTED_LAYOUT[cfg.name]
    if not root.is_dir():
        raise FileNotFoundError(
            f"dataset.root={root} does not exist (dataset={cfg.name}). Expected layout: {layout}. "
            f"Download the dataset and pass dataset.root=PATH"
        )
    annotations = annotation_path(cfg.name, root)
    if not annotations.is_file():
        raise FileNotFoundError(
            f"dataset.root={root} has no {annotations.name} (dataset={cfg.name}). Expected layout: {layout}"
        )


def build_splits(cfg, seed: int) -> dict[str, CaptionedImages]:
    """``{"train", "val", "test"}`` splits; ``val`` keeps the first ``dataset.val_images`` images."""
    check_dataset_root(cfg)
    if cfg.name == "shapes":
        splits = build_shapes_splits(
            seed=seed,
            num_train=cfg.num_train,
            num_val=cfg.num_val,
            num_test=cfg.num_test,
            image_size=cfg.render_size,
            captions_per_image=cfg.captions_per_image,
        )
    else:
        splits = read_karpathy_splits(
            cfg.name,
            Path(str(cfg.root)).expanduser(),
            cfg.captions_per_image,
            extra_captions=cfg.extra_captions,
            use_restval=cfg.get("use_restval", False),
        )
    splits["val"] = splits["val"].subset(cfg.get("val_images"))
    return splits
