"""Which of the workspace's panels a run folder fills, for ``python -m hat.dashboard --preview``.

A run's numbers are in ``metrics.jsonl`` (the history, against ``step``) and ``results.json``
(the test metrics). What only W&B shows (charts, tables, images) is found among the media files
its W&B runs wrote under ``RUN_DIR/wandb/`` (where they go unless ``logger.dir`` or
``$WANDB_DIR`` say otherwise): W&B names each ``files/media/{type}/{key}_{step}_{hash}.{ext}``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from hat.dashboard import DashboardError
from hat.dashboard.panels import WILDCARD, Panel, Section

MEDIA_FILE = re.compile(r"(?P<key>.+)_\d+_[0-9a-f]+(\.\w+)+")


@dataclass
class RunData:
    """A run folder's ``history`` (``{key: [(step, value), ...]}`` in logged order), ``final``
    metrics (``results.json``'s) and ``media``: the keys of what its W&B runs logged as charts,
    tables or images (None when the folder holds no W&B run)."""

    history: dict[str, list[tuple[float, float]]]
    final: dict[str, float]
    media: set[str] | None = None


@dataclass
class Coverage:
    """The panels of a workspace that a run leaves ``empty`` though every training fills them,
    those ``not_logged`` by this run that only some runs fill (:attr:`Panel.only`), and the W&B-only
    panels left ``unchecked`` for want of a W&B run folder."""

    empty: list[Panel] = field(default_factory=list)
    not_logged: list[Panel] = field(default_factory=list)
    unchecked: list[Panel] = field(default_factory=list)


def read_run(run_dir: Path) -> RunData:
    """What ``run_dir`` logged. Lines of ``metrics.jsonl`` that do not parse and values that are
    null, not numbers or not finite are skipped.

    Raises:
        DashboardError: when the folder holds neither ``metrics.jsonl`` nor ``results.json``, or
            ``results.json`` is not JSON.
    """
    metrics, results = run_dir / "metrics.jsonl", run_dir / "results.json"
    if not metrics.is_file() and not results.is_file():
        raise DashboardError(f"{run_dir} holds neither metrics.jsonl nor results.json")
    history: dict[str, list[tuple[float, float]]] = {}
    for line in metrics.read_text(encoding="utf-8").splitlines() if metrics.is_file() else []:
        try:
            record = json.loads(line)
            step = float(record["step"])
        except (ValueError, KeyError, TypeError):
            continue
        for key, value in record.items():
            if key != "step" and finite(value):
                history.setdefault(key, []).append((step, float(value)))
    final: dict[str, float] = {}
    if results.is_file():
        try:
            logged = json.loads(results.read_text(encoding="utf-8")).get("metrics") or {}
        except (ValueError, AttributeError):
            raise DashboardError(f"{results} is not a JSON object") from None
        final = {key: float(value) for key, value in logged.items() if finite(value)}
    return RunData(history, final, media_keys(run_dir / "wandb"))


def media_keys(wandb_dir: Path) -> set[str] | None:
    """The keys of the media files of every W&B run folder (``run-*``, ``offline-run-*``) in
    ``wandb_dir``; None when there is none."""
    runs = sorted(wandb_dir.glob("*run-*/files"))
    if not runs:
        return None
    keys = set()
    for files in runs:
        media = files / "media"
        for path in media.rglob("*") if media.is_dir() else []:
            match = MEDIA_FILE.fullmatch("/".join(path.relative_to(media).parts[1:]))
            if match and path.is_file():
                keys.add(match["key"])
    return keys


def expand(panel: Panel, history: dict) -> list[str]:
    """``panel``'s keys, a wildcard key (``train/lr/*``) replaced by the logged keys below it."""
    keys = []
    for key in panel.keys:
        if key.endswith(WILDCARD):
            prefix = key.removesuffix("*")
            keys += sorted(logged for logged in history if logged.startswith(prefix))
        else:
            keys.append(key)
    return keys


def has_data(panel: Panel, run: RunData) -> bool | None:
    """Whether ``run`` logged anything ``panel`` shows; None when that cannot be told (a W&B-only
    panel, and no W&B run folder)."""
    if panel.kind == "line":
        return any(key in run.history for key in expand(panel, run.history))
    if panel.kind == "bar":
        return any(key in run.final or key in run.history for key in panel.keys)
    if run.media is None:
        return None
    suffix = "_table" if panel.kind == "chart" else ""  # wandb.plot.line_series logs its table as KEY_table
    return any(f"{key}{suffix}" in run.media for key in panel.keys)


def coverage(sections: tuple[Section, ...], run: RunData) -> Coverage:
    """Which panels of ``sections`` ``run`` leaves without data (see :class:`Coverage`)."""
    result = Coverage()
    for section in sections:
        for panel in section.panels:
            filled = has_data(panel, run)
            if filled is None:
                result.unchecked.append(panel)
            elif not filled:
                (result.not_logged if panel.only else result.empty).append(panel)
    return result


def finite(value) -> bool:
    """A number (not a bool) that is finite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
