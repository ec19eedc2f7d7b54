"""Evaluate a saved checkpoint: rebuild its model from the stored config, score a split, write results."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import OmegaConf

from hat.config import ConfigError, to_plain, validate_model_config
from hat.data.build import build_splits, check_dataset_root
from hat.data.datasets import CaptionCollator
from hat.engine.checkpoint import load_checkpoint
from hat.engine.evaluation import evaluate_split
from hat.engine.runtime import resolve_runtime
from hat.models.hat import build_model
from hat.models.text_encoder import build_tokenizer
from hat.provenance import provenance
from hat.results import format_tables, write_results

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


def evaluate_checkpoint(
    checkpoint: Path, run_dir: Path, hardware, split: str = "test", dataset=None, batch_size: int = 128
) -> dict[str, float]:
    """Recall table of ``checkpoint`` on ``split`` of its own dataset, or of ``dataset`` when given.

    The model is rebuilt from the checkpoint's config with random weights (nothing is
    downloaded) and then loaded from the checkpoint. Prints the table and writes
    ``run_dir/results.json``. Returns the flat metrics (``test/rsum``, ``test/level1/i2t_r1``, ...).
    """
    if split not in SPLITS:
        raise ConfigError(f"split={split!r} is not one of {SPLITS}")
    state = load_checkpoint(Path(checkpoint))
    cfg = OmegaConf.create(state["config"])
    if dataset is not None:
        cfg.dataset = dataset
    cfg.encoder.pretrained = False
    try:
        validate_model_config(cfg)
        check_dataset_root(cfg.dataset)
    except (ValueError, FileNotFoundError) as error:
        raise ConfigError(str(error)) from error

    runtime = resolve_runtime(hardware)
    data = build_splits(cfg.dataset, cfg.seed)[split]
    collator = CaptionCollator(build_tokenizer(cfg.encoder.text), cfg.encoder.text.max_length)
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    model.to(runtime.device)
    log.info("evaluating %s (epoch %s) on %s/%s", checkpoint, state.get("epoch"), cfg.dataset.name, split)
    protocols = to_plain(cfg.dataset.get("test_protocols")) if split == "test" else None
    metrics = evaluate_split(
        model, data, collator, cfg.encoder.image.image_size, runtime, batch_size, split, protocols
    )
    print(f"\n{cfg.dataset.name} {split}, {checkpoint}:\n" + format_tables(metrics, split, model.num_levels, protocols))
    write_results(
        run_dir / "results.json",
        metrics,
        checkpoint=str(checkpoint),
        epoch=state.get("epoch"),
        provenance=provenance(OmegaConf.to_container(cfg, resolve=True)),
    )
    return metrics
