"""Evaluate saved weights or saved scores (``evaluate.py``; an :class:`EvalSpec` says which): rebuild
each model from its stored config, score a split, print the table and write the results."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hat.checks import ConfigError, to_plain
from hat.data.build import build_splits
from hat.data.datasets import CaptionCollator
from hat.data.records import CaptionedImages
from hat.data.spec import DataSpec, data_spec
from hat.engine.ensemble import check_fused_levels, check_same_split, report_rows
from hat.engine.eval_spec import EvalSpec
from hat.engine.eval_tracking import track_evaluation
from hat.engine.evaluation import protocol_tables, score_split
from hat.engine.score_file import FILE_NAME, ScoredSplit, read_scores, write_scores
from hat.engine.test_report import report_scores
from hat.models.export import export_model, model_card
from hat.models.loading import LoadedModel, rebuild, rebuild_config
from hat.models.spec import ModelSpec
from hat.models.weight_sources import WeightSource, open_weight_source
from hat.provenance import provenance
from hat.results import protocol_table_rows
from hat.runtime import resolve_runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Member:
    """One model to score: ``name`` says how it was given (``checkpoint=PATH``,
    ``checkpoints[1]=PATH``); ``cfg`` is the config it is rebuilt from, resolved to ``spec`` (the
    model) and ``data`` (its dataset)."""

    name: str
    source: WeightSource
    cfg: DictConfig
    spec: ModelSpec
    data: DataSpec


def evaluate_checkpoint(checkpoint: Path, run_dir: Path, hardware, **options) -> dict[str, float]:
    """:func:`evaluate` of the one model at ``checkpoint``; ``options`` are other :class:`EvalSpec` fields."""
    return evaluate(EvalSpec(run_dir, checkpoints=(Path(checkpoint),), hardware=hardware, **options))


def evaluate(spec: EvalSpec) -> dict[str, float]:
    """The recall table of ``spec``: its model scored on the split (each level alone and the fused
    score), its ensemble's members and their mean (:mod:`hat.engine.ensemble`), or a score file
    evaluated again. Prints the table and writes ``run_dir/results.json``; with ``save_scores``,
    first ``run_dir/scores.safetensors`` (as ``scores_dtype``), whose scores the table is then computed from;
    with ``export``, the model folder with a model card; with ``logger=wandb``, a W&B run.
    Returns the flat metrics (``test/rsum``, ``test/level1/i2t_r1``, ``test/model2/rsum``, ...).
    """
    scored, fused_levels, saved, loaded = _from_file(spec) if spec.scores is not None else _from_models(spec)
    title = _title(scored, spec, fused_levels)
    record = _record(scored, fused_levels) | ({"scores": saved} if saved else {})
    sims, fused, row = report_rows(scored.members, fused_levels)
    metrics, table = report_scores(
        sims, scored.split, scored.captions_per_image, scored.protocols, title, spec.run_dir / "results.json", fused,
        extra={**record, "provenance": provenance(_configs(scored))}, row=row,
    )
    if spec.export is not None:
        state, epoch = loaded.model.state_dict(), scored.epochs[0]
        card = model_card(scored.configs[0], state, spec.checkpoints[0], epoch,
                          f"Recall on {scored.dataset} {scored.split}", table)
        export_model(state, scored.configs[0], spec.export, loaded.tokenizer, card, epoch=epoch)
        log.info("exported the model to %s", spec.export)
    rows = protocol_table_rows(metrics, scored.split, len(sims), scored.protocols, fused, row)
    track_evaluation(spec, title, {**record, "checkpoint_config": _configs(scored)}, metrics, scored.split, rows)
    return metrics


def _from_file(spec: EvalSpec) -> tuple[ScoredSplit, list[int] | None, dict, None]:
    """The scores of ``spec``'s file, the levels to fuse, what ``results.json`` says of the file (and no model)."""
    scored = read_scores(spec.scores)
    if spec.split is not None and spec.split != scored.split:
        raise ConfigError(f"split={spec.split} but scores={spec.scores} holds the {scored.split} split: drop split=")
    count = len(scored.members)
    owners = [f"the levels saved in scores={spec.scores}" + (f" for model{m}" if count > 1 else "")
              for m in range(1, count + 1)]
    fused_levels = _check_levels(spec.levels, owners, scored.alignment_levels)
    return scored, fused_levels, {"path": str(spec.scores), "dtype": scored.stored_dtype}, None


def _from_models(spec: EvalSpec) -> tuple[ScoredSplit, list[int] | None, dict | None, LoadedModel]:
    """The scores of ``spec``'s models (saved first with ``save_scores``: then as saved), the levels
    to fuse, what ``results.json`` says of the score file (None: not saved), the last model loaded."""
    members = [_open(path, _member_name(spec, index), spec) for index, path in enumerate(spec.checkpoints)]
    fused_levels = _check_levels(spec.levels, [f"the trained levels of {m.name}" for m in members],
                                 [list(m.cfg.alignment.levels) for m in members])
    scored, loaded = _score(members, spec)
    saved = None
    if spec.save_scores:
        scored, saved = _save(scored, spec.run_dir / FILE_NAME, fused_levels, spec.scores_dtype)
    return scored, fused_levels, saved, loaded


def _member_name(spec: EvalSpec, index: int) -> str:
    path = spec.checkpoints[index]
    return f"checkpoints[{index}]={path}" if spec.ensemble else f"checkpoint={path}"


def _open(path: Path, name: str, spec: EvalSpec) -> Member:
    """The model at ``path`` with the config it is rebuilt from (:mod:`hat.models.loading`): its
    own, with ``spec.dataset`` when given; a release's architecture is ``spec.release_model``."""
    source = open_weight_source(path)
    if source.kind == "release" and (spec.dataset is None or spec.release_model is None):
        raise ConfigError(
            f"{name} is one of HAT's released checkpoints, which carry no dataset config of ours: "
            f"pass dataset=f30k|coco dataset.root=PATH"
        )
    cfg, model = rebuild_config(source, spec.release_model, spec.dataset)
    try:
        data = data_spec(cfg.dataset)
    except (ValueError, FileNotFoundError) as error:
        raise ConfigError(str(error)) from error
    return Member(name, source, cfg, model, data)


def _check_levels(levels, owners: list[str], trained: list[list[int]]) -> list[int] | None:
    """``eval.levels`` checked against each model's levels (``owners`` name them in errors)."""
    fused = None
    for owner, trained_levels in zip(owners, trained):
        fused = check_fused_levels(levels, trained_levels, owner)
    return fused


def _score(members: list[Member], spec: EvalSpec) -> tuple[ScoredSplit, LoadedModel]:
    """Score the split (``spec.split``, default test) with each member, one model built at a
    time; returns the scores and the last model loaded (the only one, unless an ensemble)."""
    split = spec.split or "test"
    data = _common_split(members, split)
    runtime = resolve_runtime(spec.hardware, kernel=spec.kernel)
    scores = []
    for member in members:
        loaded = rebuild(member.source, member.cfg, member.spec)
        epoch = "epoch not recorded" if member.source.epoch is None else f"epoch {member.source.epoch}"
        log.info("evaluating %s (%s, %s) on %s/%s", member.source.path, member.source.kind, epoch,
                 member.data.name, split)
        collator = CaptionCollator(loaded.tokenizer, member.spec.text.max_length)
        scores.append(score_split(loaded.model.to(runtime.device), data, collator, member.spec.image.image_size,
                                  runtime, spec.batch_size))
    scored = ScoredSplit(
        members=scores,
        split=split,
        dataset=members[0].data.name,
        captions_per_image=data.captions_per_image,
        protocols=members[0].data.test_protocols if split == "test" else None,
        checkpoints=[str(m.source.path) for m in members],
        epochs=[m.source.epoch for m in members],
        alignment_levels=[list(m.cfg.alignment.levels) for m in members],
        configs=[OmegaConf.to_container(m.cfg, resolve=True) for m in members],
    )
    return scored, loaded


def _common_split(members: list[Member], split: str) -> CaptionedImages:
    """The ``split`` every member scores: built once per distinct dataset config and seed, each
    member's checked against the first's (:func:`check_same_split`)."""
    built: dict[str, CaptionedImages] = {}
    for member in members:
        key = json.dumps([to_plain(member.cfg.dataset), member.cfg.get("seed")], sort_keys=True, default=str)
        if key in built:
            continue
        built[key] = build_splits(member.data, member.cfg.seed)[split]
        if len(built) > 1:
            check_same_split(built[next(iter(built))], built[key], members[0].name, member.name)
    return next(iter(built.values()))


def _save(scored: ScoredSplit, path: Path, fused_levels, dtype: str) -> tuple[ScoredSplit, dict]:
    """Write ``scored`` to ``path`` as ``dtype`` (:mod:`hat.engine.score_file`); returns the scores as
    saved and what ``results.json`` says of them, with how many metrics the rounding changed."""
    saved = write_scores(path, scored, dtype)
    exact, rounded = (_metrics(s, fused_levels) for s in (scored, saved))
    changed = sorted(name for name in exact if exact[name] != rounded[name])
    if changed:
        worst = max(changed, key=lambda name: abs(exact[name] - rounded[name]))
        log.warning("saved %s: the %s scores change %d of %d metrics against float32 (most: %s, %.4f -> %.4f); "
                    "eval.scores_dtype=float32 keeps them exact", path, dtype, len(changed), len(exact), worst,
                    exact[worst], rounded[worst])
    else:
        log.info("saved %s: the %s scores give every metric float32 gives", path, dtype)
    return saved, {"path": str(path), "dtype": dtype, "metrics_changed_by_rounding": len(changed)}


def _metrics(scored: ScoredSplit, fused_levels) -> dict[str, float]:
    sims, fused, row = report_rows(scored.members, fused_levels)
    return protocol_tables(sims, scored.split, scored.captions_per_image, scored.protocols, fused, row)


def _title(scored: ScoredSplit, spec: EvalSpec, fused_levels) -> str:
    """``{dataset} {split}, CHECKPOINT`` (or the ensemble's members, or the score file)."""
    if len(scored.checkpoints) == 1:
        which = scored.checkpoints[0]
    else:
        levels = f", each fusing levels {'+'.join(map(str, fused_levels))}" if fused_levels else ""
        which = "ensemble of " + ", ".join(f"model{m} = {path}" for m, path in enumerate(scored.checkpoints, 1))
        which += levels
    source = f" (scores={spec.scores})" if spec.scores is not None else ""
    return f"{scored.dataset} {scored.split}, {which}{source}"


def _record(scored: ScoredSplit, fused_levels) -> dict:
    """What was evaluated, for ``results.json`` and the W&B run's config: the checkpoint and its
    epoch (an ensemble: lists of both), the split, the dataset and the fused levels."""
    fused = [fused_levels or list(range(1, len(levels) + 1)) for levels in scored.alignment_levels]
    if len(scored.checkpoints) == 1:
        which = {"checkpoint": scored.checkpoints[0], "epoch": scored.epochs[0], "fused_levels": fused[0]}
    else:
        which = {"checkpoints": scored.checkpoints, "epochs": scored.epochs, "fused_levels": fused}
    return {**which, "split": scored.split, "dataset": scored.dataset}


def _configs(scored: ScoredSplit) -> dict | list[dict]:
    """The config the model was rebuilt from (an ensemble: one per member)."""
    return scored.configs[0] if len(scored.configs) == 1 else scored.configs
