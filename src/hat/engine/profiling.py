"""A torch.profiler trace of a few training steps (``train.profile_steps``; ``debug=profiler``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

log = logging.getLogger(__name__)

SKIPPED_STEPS = 1  # the first step (allocations, lazy initialisation) is not traced
WARMUP_STEPS = 1  # the profiler runs but discards this one


class StepProfiler:
    """Traces ``steps`` optimizer steps after :data:`SKIPPED_STEPS` + :data:`WARMUP_STEPS`, writing a
    Chrome/Perfetto trace (``*.pt.trace.json``) into ``folder`` and logging the top operators.

    Call :meth:`step` after every optimizer step and :meth:`close` when training ends; with
    ``steps == 0`` both do nothing.
    """

    def __init__(self, steps: int, folder: Path, device: torch.device) -> None:
        self.folder = folder
        self._left = SKIPPED_STEPS + WARMUP_STEPS + steps  # profiler steps until it stops
        self._profile = None
        if steps:
            if not torch.cuda.is_available():  # kineto's probe for GPUs logs an ERROR there; nothing is wrong
                os.environ.setdefault("KINETO_LOG_LEVEL", "5")
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
            self._profile = profile(
                activities=activities, record_shapes=True,
                schedule=schedule(wait=SKIPPED_STEPS, warmup=WARMUP_STEPS, active=steps, repeat=1),
                on_trace_ready=self._written,
            )
            self._profile.start()
            self._sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"

    def step(self) -> None:
        if self._profile is None:
            return
        self._profile.step()
        self._left -= 1
        if self._left == 0:
            self.close()

    def close(self) -> None:
        """Stop the profiler (writing the trace if the traced steps started)."""
        if self._profile is not None:
            profile_, self._profile = self._profile, None
            profile_.stop()

    def _written(self, profile_) -> None:
        tensorboard_trace_handler(str(self.folder))(profile_)
        table = profile_.key_averages().table(sort_by=self._sort, row_limit=15)
        log.info("profiler trace written to %s (open it in https://ui.perfetto.dev)\n%s", self.folder, table)
