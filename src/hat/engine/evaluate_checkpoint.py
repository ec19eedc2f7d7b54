"""Evaluate saved weights: rebuild the model from the stored config, score a split, write results."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hat.config import ConfigError, to_plain, validate_model_config
from hat.data.build import build_splits, check_dataset_root
from hat.data.datasets import CaptionCollator
from hat.engine.evaluation import protocol_tables, score_split
from hat.engine.runtime import resolve_runtime
from hat.models.export import export_model
from hat.models.hat import build_model
from hat.models.text_encoder import build_tokenizer
from hat.models.weight_sources import WeightSource, load_weights, open_weight_source
from hat.provenance import provenance
from hat.results import format_tables, write_results

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
# timm.create_model arguments that name files or settings for timm to read, even with random weights.
TIMM_READING_KWARGS = ("checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


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
    required. The model is rebuilt with random weights (nothing is downloaded) and then loaded: the
    model locations of a stored config (weight files, hub names, folders) are never read, and it may
    not pick code to import (see :func:`_check_rebuild_config`); only the tokenizer is loaded from
    ``encoder.text.tokenizer`` (or ``.name``), without running code shipped with it.
    ``levels`` (``eval.levels``): 1-based positions among the trained levels whose scores are fused
    for the ``{split}/...`` metrics (all of them for ``None``); each level alone is reported as well.
    Prints the table, writes ``run_dir/results.json`` and, with ``export``, the converted model.
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
    cfg = _rebuild_config(source, dataset, release_model)
    collator = CaptionCollator(build_tokenizer(cfg.encoder.text), cfg.encoder.text.max_length)
    model = build_model(cfg)
    fused_levels = _check_fused_levels(levels, cfg.alignment.levels)
    load_weights(source, model)
    config = OmegaConf.to_container(cfg, resolve=True)
    if export is not None:
        export_model(model.state_dict(), config, Path(export))
        log.info("exported the model to %s", export)
    runtime = resolve_runtime(hardware)
    model.to(runtime.device)
    data = build_splits(cfg.dataset, cfg.seed)[split]
    log.info("evaluating %s (%s, epoch %s) on %s/%s", checkpoint, source.kind, source.epoch, cfg.dataset.name, split)
    protocols = to_plain(cfg.dataset.get("test_protocols")) if split == "test" else None
    sims = score_split(model, data, collator, cfg.encoder.image.image_size, runtime, batch_size)
    metrics = protocol_tables(sims, split, data.captions_per_image, protocols, fused_levels)
    table = format_tables(metrics, split, model.num_levels, protocols, fused_levels)
    print(f"\n{cfg.dataset.name} {split}, {checkpoint}:\n" + table)
    write_results(
        run_dir / "results.json",
        metrics,
        checkpoint=str(checkpoint),
        epoch=source.epoch,
        fused_levels=fused_levels or list(range(1, model.num_levels + 1)),
        provenance=provenance(config),
    )
    return metrics


def _rebuild_config(source: WeightSource, dataset, release_model):
    """The config the model is rebuilt from: ``source``'s own (``release_model`` for a release), with
    ``dataset`` when given and random initial weights, checked (see :func:`_check_rebuild_config`)."""
    try:
        cfg = OmegaConf.create({"seed": 0, **to_plain(release_model)} if source.kind == "release" else source.config)
        if dataset is not None:
            cfg.dataset = dataset
        cfg.encoder.pretrained = False
        _check_rebuild_config(cfg)
        validate_model_config(cfg)
        check_dataset_root(cfg.dataset)
    except OmegaConfBaseException as error:  # a stored config without the settings of a model
        first_line = str(error).splitlines()[0]
        raise ConfigError(f"the config of {source.path} does not describe a model: {first_line}") from error
    except (ValueError, FileNotFoundError) as error:
        raise ConfigError(str(error)) from error
    return cfg


def _check_rebuild_config(cfg) -> None:
    """A model rebuilt with random weights reads no files and imports nothing its config names.

    ``encoder.image.name`` must be a timm architecture (``hf-hub:`` and ``local-dir:`` names make
    timm read a config there even without weights), and ``encoder.image.kwargs`` may not hold
    :data:`TIMM_READING_KWARGS`. (``pkg:`` names and the text encoder's settings are checked where
    they are used, see :func:`hat.models.weights.resolve_model_location`.)
    """
    image = cfg.encoder.image
    if not re.fullmatch(r"[\w.-]+", str(image.name)):
        raise ConfigError(
            f"encoder.image.name={image.name!r} is not a timm architecture name (e.g. swin_base_patch4_window7_224): "
            f"the model is rebuilt from saved weights, so it is never read from a hub repo or folder"
        )
    reading = [key for key in TIMM_READING_KWARGS if key in (image.get("kwargs") or {})]
    if reading:
        raise ConfigError(
            f"encoder.image.kwargs.{reading[0]}={image.kwargs[reading[0]]!r}: the model is rebuilt from saved "
            f"weights and reads nothing else; remove {reading}"
        )


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
