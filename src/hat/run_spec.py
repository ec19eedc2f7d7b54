"""What a checked training config resolves to, once: the typed specs its builders take."""

from __future__ import annotations

from dataclasses import dataclass

from hat.data.spec import DataSpec
from hat.losses import LossSpec
from hat.models.spec import ModelSpec


@dataclass(frozen=True)
class TrainSpec:
    """``train``: ``epochs``, ``max_steps`` (None: no limit), ``batch_size`` per process, GradCache
    chunks (``accumulate``), ``freeze_epochs`` (and whether the tapped stages' new norms freeze too:
    ``freeze_stage_norms``), ``log_every`` steps, the validation ``monitor``
    resolved into the metric names it sums and whether higher is better, and ``early_stop``: the
    validations without a better monitor after which training stops (None: never). Debugging aids:
    ``limit_batches`` per epoch (None: all), ``overfit_batches`` (train on that many batches of the
    first images, one caption each; 0: off), ``profile_steps`` traced by torch.profiler (0: off) and
    ``dropout`` (False: the model trains without dropout, attention dropout or drop path)."""

    epochs: int
    max_steps: int | None
    batch_size: int
    accumulate: int
    freeze_epochs: int
    log_every: int
    monitor: str
    monitor_names: tuple[str, ...]
    higher_is_better: bool
    early_stop: int | None = None
    limit_batches: int | None = None
    overfit_batches: int = 0
    profile_steps: int = 0
    dropout: bool = True
    freeze_stage_norms: bool = True


@dataclass(frozen=True)
class OptimSpec:
    """``optim``: the optimizer (``name``: adam | adamw), its base rate ``lr`` and ``weight_decay``;
    the schedule (``schedule`` after ``warmup_steps`` or ``warmup_epochs`` of warmup, ``step_size``
    and ``gamma`` of the step decay, ``min_lr_ratio`` of the cosine); the backbones' rate scales
    (``backbone_lr_scale``, ``layer_decay``) and the gradient norm clip (None: none)."""

    name: str
    lr: float
    weight_decay: float
    schedule: str
    warmup_steps: int
    warmup_epochs: float
    step_size: int
    gamma: float
    min_lr_ratio: float
    backbone_lr_scale: float
    layer_decay: float
    grad_clip: float | None


@dataclass(frozen=True)
class RunSpec:
    """A training's resolved settings: the model, the dataset (its layout on disk found), the
    training loop, the optimisation and the loss (the hardware is resolved by
    :func:`hat.runtime.resolve_runtime` in each process)."""

    model: ModelSpec
    data: DataSpec
    train: TrainSpec
    optim: OptimSpec
    loss: LossSpec
