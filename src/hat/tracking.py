"""Where metrics go: a small interface that local files and W&B (:mod:`hat.wandb_tracker`) implement."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

from hat.atomic import atomic_write
from hat.data.records import CaptionedImages

if TYPE_CHECKING:
    from PIL import Image

Explain = Callable[[int, str], "Image.Image"]  # (image index in the split, caption) -> attention figure


class Tracker(Protocol):
    """Receives a run's metrics, example tables, summary and files (the config comes at construction).

    ``run_id`` names the remote run a resumed training continues (``None`` when there is none).
    ``finish`` is called once, also on errors, with the exit status the process will have.
    """

    run_id: str | None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_examples(
        self, level_scores: Sequence[torch.Tensor], split: CaptionedImages, prefix: str, step: int,
        explain: Explain | None = None,
    ) -> None:
        """``level_scores``: the ``(N, K * N)`` scores of ``split`` per level; a tracker that shows
        retrieval examples fuses them and derives the examples (:mod:`hat.retrieval_examples`),
        the others ignore the call (and so pay nothing). ``explain(image index, caption)`` draws
        the attention figure of a pair of ``split``, for trackers that show them."""

    def log_recall_curve(
        self, level_scores: Sequence[torch.Tensor], captions_per_image: int, prefix: str, step: int
    ) -> None:
        """The recall@K curve of the fused ``level_scores`` (``(N, K * N)`` per level), both ways,
        as ``{prefix}/recall_curve``, for trackers that chart it; the others ignore the call."""

    def log_summary(self, summary: dict[str, float]) -> None: ...

    def log_file(self, path: Path) -> None: ...

    def finish(self, exit_code: int = 0) -> None: ...


class NullTracker:
    """Records nothing: the trackers of ranks other than 0, and the base of the others."""

    run_id: str | None = None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_examples(
        self, level_scores: Sequence[torch.Tensor], split: CaptionedImages, prefix: str, step: int,
        explain: Explain | None = None,
    ) -> None:
        pass

    def log_recall_curve(
        self, level_scores: Sequence[torch.Tensor], captions_per_image: int, prefix: str, step: int
    ) -> None:
        pass

    def log_summary(self, summary: dict[str, float]) -> None:
        pass

    def log_file(self, path: Path) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


class JsonlTracker(NullTracker):
    """Appends one JSON line per :meth:`log_metrics` call to ``<run dir>/metrics.jsonl``; the run
    directory already holds the config (``.hydra/``), the final numbers and files (``results.json``).

    Lines past ``keep_until_step`` (the step a run starts or resumes at) are dropped first: they
    were logged by an earlier attempt after its last checkpoint, and the resumed run logs those
    steps again.
    """

    def __init__(self, path: Path, keep_until_step: int = 0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        _drop_lines_after(path, keep_until_step)
        self._handle = path.open("a", encoding="utf-8")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
        self._handle.write(json.dumps({"step": step, **clean}) + "\n")
        self._handle.flush()

    def finish(self, exit_code: int = 0) -> None:
        self._handle.close()


def _drop_lines_after(path: Path, step: int) -> None:
    """Rewrite ``path`` (atomically) without the lines whose ``step`` is past ``step``, or that a
    killed writer left unfinished."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if (logged := _step_of(line)) is not None and logged <= step]
    if len(kept) != len(lines):
        atomic_write(path, lambda handle: handle.write("".join(kept).encode("utf-8")))


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


class MultiTracker:
    """Forwards every call to several trackers; ``run_id`` is the first one that has one."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = trackers

    @property
    def run_id(self) -> str | None:
        return next((t.run_id for t in self.trackers if t.run_id is not None), None)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for tracker in self.trackers:
            tracker.log_metrics(metrics, step)

    def log_examples(
        self, level_scores: Sequence[torch.Tensor], split: CaptionedImages, prefix: str, step: int,
        explain: Explain | None = None,
    ) -> None:
        for tracker in self.trackers:
            tracker.log_examples(level_scores, split, prefix, step, explain)

    def log_recall_curve(
        self, level_scores: Sequence[torch.Tensor], captions_per_image: int, prefix: str, step: int
    ) -> None:
        for tracker in self.trackers:
            tracker.log_recall_curve(level_scores, captions_per_image, prefix, step)

    def log_summary(self, summary: dict[str, float]) -> None:
        for tracker in self.trackers:
            tracker.log_summary(summary)

    def log_file(self, path: Path) -> None:
        for tracker in self.trackers:
            tracker.log_file(path)

    def finish(self, exit_code: int = 0) -> None:
        for tracker in self.trackers:
            tracker.finish(exit_code)


LOGGERS = ("none", "wandb")  # values of logger.backend
