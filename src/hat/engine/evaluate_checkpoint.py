"""Evaluate saved weights: rebuild the model from the stored config, score a split, write results."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import OmegaConf

from hat.checks import ConfigError, to_plain
from hat.data.build import build_splits, check_dataset_root
from hat.data.datasets import CaptionCollator
from hat.engine.evaluation import score_split
from hat.engine.test_report import report_scores
from hat.models.export import export_model, model_card
from hat.models.loading import rebuild, rebuild_config
from hat.models.weight_sources import open_weight_source
from hat.provenance import provenance
from hat.runtime import resolve_runtime

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


def evaluate_checkpoint(
    checkpoint: Path,
    run_dir: Path,
    hardware,
    split: str = "test",
    dataset=None,
    batch_size: int = 128,
    release_model=None,
    export: Path | None = None,
    levels=None,
) -> dict[str, float]:
    """Recall table of the weights at ``checkpoint`` on ``split`` of their dataset, or of ``dataset``.

    ``checkpoint`` is a training checkpoint, an exported folder or one of HAT's released ``.ckpt``
    files (see :mod:`hat.models.weight_sources`); a release carries no config of ours, so its
    architecture is ``release_model`` (``encoder`` and ``alignment`` config) and ``dataset`` is
    required. The model is rebuilt as :mod:`hat.models.loading` describes (nothing is downloaded).
    ``levels`` (``eval.levels``): 1-based positions among the trained levels whose scores are fused
    for the ``{split}/...`` metrics (all of them for ``None``); each level alone is reported as well.
    Prints the table, writes ``run_dir/results.json`` and, with ``export``, the model folder with
    its tokenizer and a model card holding this table.
    Returns the flat metrics (``test/rsum``, ``test/level1/i2t_r1``, ...).
    """
    if split not in SPLITS:
        raise ConfigError(f"split={split!r} is not one of {SPLITS}")
    source = open_weight_source(Path(checkpoint))
    if source.kind == "release" and (dataset is None or release_model is None):
        raise ConfigError(
            f"checkpoint={checkpoint} is one of HAT's released checkpoints, which carry no dataset "
            f"config of ours: pass dataset=f30k|coco dataset.root=PATH"
        )
    cfg, spec = rebuild_config(source, release_model, dataset)
    try:
        check_dataset_root(cfg.dataset)
    except (ValueError, FileNotFoundError) as error:
        raise ConfigError(str(error)) from error
    fused_levels = _check_fused_levels(levels, cfg.alignment.levels)
    loaded = rebuild(source, cfg, spec)
    model = loaded.model
    collator = CaptionCollator(loaded.tokenizer, cfg.encoder.text.max_length)
    config = OmegaConf.to_container(cfg, resolve=True)
    runtime = resolve_runtime(hardware)
    model.to(runtime.device)
    data = build_splits(cfg.dataset, cfg.seed)[split]
    log.info("evaluating %s (%s, epoch %s) on %s/%s", checkpoint, source.kind, source.epoch, cfg.dataset.name, split)
    protocols = to_plain(cfg.dataset.get("test_protocols")) if split == "test" else None
    sims = score_split(model, data, collator, cfg.encoder.image.image_size, runtime, batch_size)
    title = f"{cfg.dataset.name} {split}"
    metrics, table = report_scores(
        sims, split, data.captions_per_image, protocols, f"{title}, {checkpoint}", run_dir / "results.json",
        fused_levels, extra={"checkpoint": str(checkpoint), "epoch": source.epoch, "provenance": provenance(config),
                             "fused_levels": fused_levels or list(range(1, model.num_levels + 1))},
    )
    if export is not None:
        card = model_card(config, Path(checkpoint), f"Recall on {title}", table)
        export_model(model.state_dict(), config, Path(export), loaded.tokenizer, card)
        log.info("exported the model to %s", export)
    return metrics


def _check_fused_levels(levels, trained_levels) -> list[int] | None:
    """``eval.levels`` as a list of distinct 1-based positions among ``trained_levels`` (None: all)."""
    if levels is None:
        return None
    levels = list(levels)
    count = len(trained_levels)
    if not levels or len(set(levels)) != len(levels) or any(not 1 <= k <= count for k in levels):
        raise ConfigError(
            f"eval.levels={levels} must list distinct positions 1..{count} of the trained levels "
            f"(alignment.levels={list(trained_levels)}), e.g. eval.levels=[2,3]"
        )
    return sorted(levels)
