"""Shared pieces of the benchmarks: timing (median after warm-up), peak memory, tables, JSON.

Timings synchronise the GPU around each call. Peak memory is ``torch.cuda.max_memory_allocated``
on a GPU; on the CPU it is the peak resident set size above the level before the call, sampled
every millisecond from ``/proc/self/statm`` (Linux), which counts every allocation torch makes.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE_SIZE


class _PeakResident:
    """Samples the resident set size in a thread while the ``with`` block runs."""

    def __enter__(self):
        self.base = self.peak = _resident_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _resident_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _resident_bytes())


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], device: torch.device, repeats: int = 5, warmup: int = 1) -> dict:
    """``{"median_s", "min_s", "peak_bytes"}`` of ``fn()`` over ``repeats`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    with _PeakResident() as resident:
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            synchronize(device)
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) - base if device.type == "cuda" else resident.peak - resident.base
    return {"median_s": statistics.median(times), "min_s": min(times), "peak_bytes": peak}


def pick_device(name: str) -> torch.device:
    """``auto``: the GPU when there is one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def machine(device: torch.device) -> str:
    """One line naming the hardware a table was measured on."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"CPU {platform.processor() or platform.machine()} x {os.cpu_count()} cores, {torch.get_num_threads()} threads, torch {torch.__version__}"


def table(columns: list[str], rows: list[list]) -> str:
    """A Markdown table; floats with 4 significant digits."""
    def cell(value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def report(name: str, device: torch.device, settings: dict, columns: list[str], rows: list[list], out: Path | None) -> None:
    """Print the table under a heading that names the machine; write it as JSON to ``out``."""
    print(f"\n{name} on {machine(device)}\n{json.dumps(settings)}\n\n{table(columns, rows)}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"benchmark": name, "machine": machine(device), "settings": settings,
                   "columns": columns, "rows": rows}
        out.write_text(json.dumps(payload, indent=2))


def mib(num_bytes: int) -> float:
    return num_bytes / 2**20
