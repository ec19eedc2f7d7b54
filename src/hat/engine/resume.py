"""Where a resumed run continues from, and what it carries over or cannot change.

A resumed run takes its model, optimizer, schedule, counters and random state from the
checkpoint. Settings that those states fix (the learning rate and schedule live in the
optimizer's and scheduler's state) are not applied when they differ on the command line: the
run says so with a warning, naming each one, instead of keeping the old value silently.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from hat.atomic import atomic_write

log = logging.getLogger(__name__)

# Settings a resumed run takes from the checkpoint's state whatever the config says.
KEPT_FROM_CHECKPOINT = {
    "optim.lr": "the optimizer's state holds the learning rate",
    "optim.weight_decay": "the optimizer's state holds the weight decay",
    "optim.step_size": "the scheduler's state holds its step size",
    "optim.gamma": "the scheduler's state holds its decay factor",
    "seed": "the random state is restored from the checkpoint",
}


def resume_path(resume, checkpoints: Path) -> Path | None:
    """``auto``: ``<run dir>/checkpoints/last.pt`` when it exists; a path: that file; null: none."""
    if resume is None:
        return None
    if resume == "auto":
        last = checkpoints / "last.pt"
        if last.is_file():
            return last
        log.info("resume=auto: no checkpoint at %s, starting fresh", last)
        return None
    return Path(str(resume))


def settings_not_applied(saved: dict, current: dict) -> list[str]:
    """One line per setting of :data:`KEPT_FROM_CHECKPOINT` whose value in ``current`` differs from
    ``saved`` (both resolved run configs as plain dicts)."""
    lines = []
    for key, why in KEPT_FROM_CHECKPOINT.items():
        old, new = _lookup(saved, key), _lookup(current, key)
        if old != new:
            lines.append(f"{key}={new} is not applied, the run continues with {old}: {why}")
    return lines


def _lookup(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def carry_best(resume: Path, checkpoints: Path) -> bool:
    """Copy ``best.pt`` beside ``resume`` (a checkpoint of another run folder) into ``checkpoints``
    unless this run already has one; True when this run has a ``best.pt`` afterwards."""
    own = checkpoints / "best.pt"
    if own.is_file():
        return True
    source = resume.parent / "best.pt"
    if not source.is_file():
        return False
    with source.open("rb") as reader:
        atomic_write(own, lambda handle: shutil.copyfileobj(reader, handle))
    log.info("copied %s to %s: the best checkpoint so far comes along with the resumed run", source, own)
    return True
