"""What a checked training config resolves to, once: the typed specs its builders take."""

from __future__ import annotations

from dataclasses import dataclass

from hat.models.spec import ModelSpec


@dataclass(frozen=True)
class TrainSpec:
    """``train``: ``epochs``, ``max_steps`` (None: no limit), ``batch_size`` per process, GradCache
    chunks (``accumulate``), ``freeze_epochs``, ``log_every`` steps, and the validation ``monitor``
    resolved into the metric names it sums and whether higher is better."""

    epochs: int
    max_steps: int | None
    batch_size: int
    accumulate: int
    freeze_epochs: int
    log_every: int
    monitor: str
    monitor_names: tuple[str, ...]
    higher_is_better: bool


@dataclass(frozen=True)
class RunSpec:
    """A training's resolved settings: the model and the training schedule (the data and the
    hardware are resolved by :func:`hat.data.build.build_splits` and :func:`hat.runtime.resolve_runtime`)."""

    model: ModelSpec
    train: TrainSpec
