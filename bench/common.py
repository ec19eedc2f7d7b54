"""Shared pieces of the benchmarks: timing (median after warm-up), peak memory, tables, JSON.

Timings synchronise the GPU around each call. Peak memory is ``torch.cuda.max_memory_allocated``
on a GPU; on the CPU it is the growth of the resident set size during the first call, sampled
every millisecond (Linux), which counts every allocation torch makes; memory freed earlier and
kept by the C allocator hides from it, so benchmarks that compare methods run each case in a
fresh process.
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

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    """The process's resident set size now (Linux)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE_SIZE


class PeakResident:
    """The largest resident set size seen while the ``with`` block runs, sampled every millisecond."""

    def __enter__(self):
        self.peak = resident_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, resident_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, resident_bytes())


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], device: torch.device, repeats: int = 5) -> dict:
    """``{"median_s", "min_s", "peak_bytes"}`` of ``fn()``: the first call is the warm-up and gives
    the peak memory above what was allocated before it (on the CPU: the growth of the peak
    resident set, so run one case per fresh process); then ``repeats`` timed calls."""
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = resident_bytes()
    with PeakResident() as resident:
        fn()
        synchronize(device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = resident.peak - base
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
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
    cpu = platform.processor() or platform.machine()
    return f"CPU {cpu} x {os.cpu_count()} cores, {torch.get_num_threads()} threads, torch {torch.__version__}"


def table(columns: list[str], rows: list[list]) -> str:
    """A Markdown table; floats with 4 significant digits."""
    def cell(value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def report(
    name: str, device: torch.device, settings: dict, columns: list[str], rows: list[list], out: Path | None
) -> None:
    """Print the table under a heading that names the machine; write it as JSON to ``out``."""
    print(f"\n{name} on {machine(device)}\n{json.dumps(settings)}\n\n{table(columns, rows)}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"benchmark": name, "machine": machine(device), "settings": settings,
                   "columns": columns, "rows": rows}
        out.write_text(json.dumps(payload, indent=2))


def mib(num_bytes: int) -> float:
    return num_bytes / 2**20
