"""Weights & Biases as a :class:`hat.tracking.Tracker`: a run that never stops the training.

The mode is ``logger.mode`` when set, else ``$WANDB_MODE``, else online when a W&B login exists
(``WANDB_API_KEY``, ``WANDB_IDENTITY_TOKEN_FILE`` or a netrc entry for the server) and offline
otherwise; nothing ever prompts for a login. An online run whose server does not answer, or that
cannot start within ``logger.init_timeout`` seconds, becomes an offline run, and a run that cannot
start at all leaves the training with its local files; both with a warning. Every later W&B call
that fails is reported once and skipped.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import torch

from hat.alignment import fuse_levels
from hat.data.records import CaptionedImages
from hat.metrics import RANK_KEYS, recall_curve, retrieval_ranks
from hat.retrieval_examples import retrieval_examples
from hat.tracking import Explain
from hat.wandb_server import base_url, check_server, has_login
from hat.wandb_tables import caption_query_table, image_query_table, recall_chart

log = logging.getLogger(__name__)

MODES = ("online", "offline", "disabled")
LEGACY_MODES = {"dryrun": "offline", "run": "online"}
STEP_METRIC = "trainer/step"
TAG_LENGTH = 64  # W&B's limit on one tag


def normalise_mode(mode: str, source: str) -> str:
    """``mode`` as one of :data:`MODES` (W&B's old names accepted); the error names ``source``."""
    mode = LEGACY_MODES.get(mode, mode)
    if mode not in MODES:
        raise ValueError(f"{source}={mode!r} is not a W&B mode; expected one of {MODES}")
    return mode


def resolve_mode(requested: str | None, environ: Mapping[str, str]) -> str:
    """The mode a run starts in: ``requested`` (``logger.mode``), else ``$WANDB_MODE``, else online
    with a login and offline without. Online without a login turns offline with a warning."""
    source = "logger.mode"
    mode = requested
    if not mode:
        source, mode = "WANDB_MODE", environ.get("WANDB_MODE")
    if not mode:
        return "online" if has_login(environ) else "offline"
    mode = normalise_mode(mode, source)
    if mode == "online" and not has_login(environ):
        log.warning(
            "%s=online but no W&B login was found (WANDB_API_KEY or `wandb login`): logging offline instead", source
        )
        return "offline"
    return mode


def override_tags(overrides: list[str], keep_end: Collection[str] = ()) -> list[str]:
    """Command-line overrides as W&B tags (``alignment.levels=[4,10,12]``), cut to W&B's tag length;
    the values of the keys in ``keep_end`` (paths) keep their end: ``checkpoint=…/3/checkpoints/best.pt``."""
    tags = []
    for item in overrides:
        key, _, value = item.partition("=")
        if len(item) <= TAG_LENGTH:
            tags.append(item)
        elif key.lstrip("+~") in keep_end:
            tags.append(f"{key}=…{value[len(key) + 2 - TAG_LENGTH:]}")
        else:
            tags.append(item[: TAG_LENGTH - 1] + "…")
    return tags


def sweep_group(sweep: str | None, sweep_dir: str) -> str:
    """The W&B group of every job of one multirun: the sweep's name (``+sweeps=NAME``, else
    ``multirun``) and its start time, taken from the last two parts of Hydra's sweep folder
    (``multirun/2026-11-27/11-42-21`` gives ``levels-2026-11-27-11-42-21``)."""
    started = "-".join(Path(sweep_dir).parts[-2:])
    return f"{sweep or 'multirun'}-{started}"


class WandbTracker:
    """One W&B run of a training: metrics against ``trainer/step``, example tables, summary, files.

    ``settings`` is the ``logger`` config (mode, project, entity, group, tags, name, dir,
    init_timeout, examples); ``config`` the resolved run config as a plain dict; ``resume_id`` the
    run to continue (``resume=auto``); ``job_type`` W&B's job type (``eval`` for evaluate.py). Files go
    to ``logger.dir``, else ``$WANDB_DIR``, else ``run_dir``.
    """

    def __init__(
        self, settings, run_dir: Path, config: dict, resume_id: str | None = None, job_type: str | None = None
    ) -> None:
        self.run = None
        self._failed: set[str] = set()
        self._defined: set[str] = set()
        self.examples = settings.examples  # queries, top_k, thumbnail, curve_max_k
        mode = resolve_mode(settings.get("mode"), os.environ)
        if mode == "disabled":
            return
        import wandb

        directory = Path(settings.get("dir") or os.environ.get("WANDB_DIR") or run_dir)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            log.warning("W&B cannot use the folder %s (%s): the run keeps only its local files", directory, error)
            return
        arguments = dict(
            project=settings.project,
            entity=settings.get("entity"),
            group=settings.get("group"),
            tags=list(settings.get("tags") or []),
            name=settings.get("name"),
            dir=str(directory),
            config=config,
            job_type=job_type,
            id=resume_id,
            resume="allow" if resume_id else None,
            settings=wandb.Settings(init_timeout=float(settings.init_timeout)),
        )
        try:
            if mode == "online":
                check_server(base_url(os.environ), timeout=float(settings.init_timeout))
            self.run = wandb.init(mode=mode, **arguments)
        except Exception as error:  # noqa: BLE001  (W&B must never stop a training)
            if mode != "online":
                log.warning("W&B could not start (%s): the run keeps only its local files", error)
                return
            log.warning("W&B could not start online (%s): logging to an offline run instead", error)
            try:
                self.run = wandb.init(mode="offline", **arguments)
            except Exception as offline_error:  # noqa: BLE001
                log.warning(
                    "W&B could not start offline either (%s): the run keeps only its local files", offline_error
                )
                return
        with self._guarded("setup"):
            self.run.define_metric(STEP_METRIC)
        if self.run.offline:
            log.info(
                "W&B offline run in %s; upload it later with `wandb sync %s`", self.run.dir, Path(self.run.dir).parent
            )

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    @contextlib.contextmanager
    def _guarded(self, what: str):
        """Run a W&B call; a failure is logged (once per kind of call) and the training goes on."""
        try:
            yield
        except Exception as error:  # noqa: BLE001
            if what not in self._failed:
                self._failed.add(what)
                log.warning("W&B %s failed (%s); the training goes on", what, error)

    def _define(self, names) -> None:
        """Plot every metric against ``trainer/step`` and keep the best and the last value of each
        validation metric in the summary (``val/rsum.max``; the minimum of ranks)."""
        for name in names:
            if name in self._defined:
                continue
            self._defined.add(name)
            summary = None
            if name.startswith("val/"):
                summary = "min,last" if name.endswith(RANK_KEYS) else "max,last"
            self.run.define_metric(name, step_metric=STEP_METRIC, summary=summary)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.run is None:
            return
        with self._guarded("log"):
            self._define(metrics)
            self.run.log({**metrics, STEP_METRIC: step})

    def log_examples(
        self, level_scores: Sequence[torch.Tensor], split: CaptionedImages, prefix: str, step: int,
        explain: Explain | None = None,
    ) -> None:
        """The recall@K curve (:meth:`log_recall_curve`) and, unless ``logger.examples.queries`` is
        0, two tables (image queries with their top captions; caption queries with thumbnails of
        their top images) under ``{prefix}/examples/...``; with ``logger.examples.attention`` and
        ``explain``, the attention figures of the first ``attention_pairs`` image queries with
        their image's first caption (``{prefix}/examples/attention``)."""
        if self.run is None:
            return
        if self.examples.queries == 0:
            self.log_recall_curve(level_scores, split.captions_per_image, prefix, step)
            return
        with self._guarded("example tables"):
            import wandb

            settings = self.examples
            examples = retrieval_examples(
                fuse_levels(level_scores), split, settings.queries, settings.top_k, settings.curve_max_k
            )
            entries = {
                f"{prefix}/examples/image_queries": image_query_table(wandb, examples, settings.thumbnail),
                f"{prefix}/examples/caption_queries": caption_query_table(wandb, examples, settings.thumbnail),
                f"{prefix}/recall_curve": recall_chart(wandb, examples.i2t_curve, examples.t2i_curve, prefix),
            }
            if explain is not None and settings.get("attention"):
                pairs = [(query.image, split.records[query.image].captions[0])
                         for query in examples.image_queries[: settings.attention_pairs]]
                entries[f"{prefix}/examples/attention"] = [
                    wandb.Image(explain(image, caption), caption=f"image {image}: {caption}")
                    for image, caption in pairs
                ]
            self._define(entries)
            self.run.log({**entries, STEP_METRIC: step})

    def log_recall_curve(
        self, level_scores: Sequence[torch.Tensor], captions_per_image: int, prefix: str, step: int
    ) -> None:
        """``{prefix}/recall_curve``: recall@K for K = 1 .. ``logger.examples.curve_max_k``, image to
        text and text to image, as a line chart (``wandb.plot.line_series``)."""
        if self.run is None:
            return
        with self._guarded("recall curve"):
            import wandb

            i2t_rank, t2i_rank = retrieval_ranks(fuse_levels(level_scores).float().cpu(), captions_per_image)
            max_k = self.examples.curve_max_k
            chart = recall_chart(wandb, recall_curve(i2t_rank, max_k), recall_curve(t2i_rank, max_k), prefix)
            self._define([f"{prefix}/recall_curve"])
            self.run.log({f"{prefix}/recall_curve": chart, STEP_METRIC: step})

    def log_summary(self, summary: dict[str, float]) -> None:
        if self.run is None:
            return
        with self._guarded("summary"):
            self.run.summary.update(summary)

    def log_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence]) -> None:
        """Log ``rows`` (one value per column) as a ``wandb.Table`` under ``key``."""
        if self.run is None:
            return
        with self._guarded("table"):
            import wandb

            self.run.log({key: wandb.Table(columns=list(columns), data=[list(row) for row in rows])})

    def log_file(self, path: Path) -> None:
        """Attach ``path`` to the run's files now (e.g. ``results.json``)."""
        if self.run is None:
            return
        with self._guarded("file upload"):
            self.run.save(str(path), base_path=str(path.parent), policy="now")

    def finish(self, exit_code: int = 0) -> None:
        if self.run is None:
            return
        with self._guarded("finish"):
            self.run.finish(exit_code=exit_code)
        self.run = None
