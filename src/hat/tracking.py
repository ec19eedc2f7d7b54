"""Where metrics go: a small interface that local files (and later W&B) implement."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Protocol


class Tracker(Protocol):
    """Receives a run's config, metrics and summary. ``finish`` is called once, also on errors."""

    def log_config(self, config: dict) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_summary(self, summary: dict[str, float]) -> None: ...

    def finish(self) -> None: ...


class JsonlTracker:
    """Appends one JSON line per :meth:`log_metrics` call to ``<run dir>/metrics.jsonl``."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._handle = path.open("a", encoding="utf-8")

    def log_config(self, config: dict) -> None:
        pass  # the run directory already holds the config (.hydra/config.yaml, results.json)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
        self._handle.write(json.dumps({"step": step, **clean}) + "\n")
        self._handle.flush()

    def log_summary(self, summary: dict[str, float]) -> None:
        pass  # results.json holds the final numbers

    def finish(self) -> None:
        self._handle.close()


class NullTracker:
    """Records nothing (the trackers of ranks other than 0)."""

    def log_config(self, config: dict) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_summary(self, summary: dict[str, float]) -> None:
        pass

    def finish(self) -> None:
        pass


class MultiTracker:
    """Forwards every call to several trackers."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = trackers

    def log_config(self, config: dict) -> None:
        for tracker in self.trackers:
            tracker.log_config(config)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for tracker in self.trackers:
            tracker.log_metrics(metrics, step)

    def log_summary(self, summary: dict[str, float]) -> None:
        for tracker in self.trackers:
            tracker.log_summary(summary)

    def finish(self) -> None:
        for tracker in self.trackers:
            tracker.finish()


LOGGERS = ("none",)


def build_tracker(cfg, run_dir: Path) -> Tracker:
    """Local ``metrics.jsonl`` always, plus the tracker named by ``logger.name``."""
    if cfg.name not in LOGGERS:
        raise ValueError(f"logger.name must be one of {LOGGERS}, got {cfg.name!r}")
    return MultiTracker([JsonlTracker(run_dir / "metrics.jsonl")])
