"""Throughput accounting for the training loop: samples/s, data-wait share, step time, peak GPU memory."""

from __future__ import annotations

import time

import torch


class ThroughputMeter:
    """Splits wall time into waiting for batches and computing steps, over a window of steps.

    Call :meth:`batch_arrived` when the loader hands over a batch and :meth:`step_done` after the
    optimizer step; :meth:`read_and_reset` returns the window's numbers as ``train/*`` metrics.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._reset()

    def _reset(self) -> None:
        self._mark = time.perf_counter()
        self._wait = 0.0
        self._compute = 0.0
        self._samples = 0
        self._steps = 0
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def batch_arrived(self) -> None:
        now = time.perf_counter()
        self._wait += now - self._mark
        self._mark = now

    def step_done(self, samples: int) -> None:
        now = time.perf_counter()
        self._compute += now - self._mark
        self._mark = now
        self._samples += samples
        self._steps += 1

    def read_and_reset(self) -> dict[str, float]:
        """``train/samples_per_s``, ``train/data_wait_share``, ``train/step_time_s`` (and
        ``train/peak_mem_gb`` on a GPU) since the last call."""
        total = max(self._wait + self._compute, 1e-9)
        metrics = {
            "train/samples_per_s": self._samples / total,
            "train/data_wait_share": self._wait / total,
            "train/step_time_s": total / max(self._steps, 1),
        }
        if self.device.type == "cuda":
            metrics["train/peak_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        self._reset()
        return metrics


def progress_line(epoch: int, step: int, total_steps: int, loss: float, rates: dict[str, float]) -> str:
    """One plain progress line for a log without a progress bar (no terminal: SLURM, nohup, a file):
    epoch, step of ``total_steps``, loss, samples/s, data-wait share, time per step and the time
    left at that pace (``rates``: :meth:`ThroughputMeter.read_and_reset`)."""
    step_time = rates["train/step_time_s"]
    left = int(max(total_steps - step, 0) * step_time)
    return (f"epoch {epoch} step {step}/{total_steps}: loss {loss:.4f}, {rates['train/samples_per_s']:.1f} samples/s, "
            f"data wait {100 * rates['train/data_wait_share']:.0f}%, {step_time:.3f} s/step, "
            f"{left // 3600}:{left % 3600 // 60:02d}:{left % 60:02d} left")
