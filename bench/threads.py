"""CPU threads: seconds per quickstart training step with torch's default thread count and with
``hardware.threads=auto``, on a quiet machine and beside a second training.

    python bench/threads.py --out bench/results/threads-cpu.json
    python bench/threads.py --steps 3 --warmup 1 --budget 40     # a quick check that it runs

Every measurement is ``python train.py experiment=quickstart hardware=cpu`` (its 2 loader workers,
logger=none, validation and test on 10 images) stopped after ``--warmup`` + ``--steps`` optimizer
steps. The step time is ``train/step_time_s`` of ``metrics.jsonl``, logged every step (the wait
for the loader included); rows give its median and maximum over the steps after the warm-up.
Settings: ``default`` is ``hardware.threads=<os.cpu_count()>`` with ``OMP_NUM_THREADS`` unset, the
count torch starts with; ``auto`` is the rule of ``hat.threads``. ``beside a second training``: the
same command with the same setting runs from before the measured run starts (it has logged a
step) until it ends, as two users of one machine would. A measurement that has not finished its
steps after ``--budget`` seconds stops there, and its row counts the steps it saw. Each run gets a
fresh temporary folder; both processes are stopped (SIGKILL to their own process group) at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from common import pick_device, report  # noqa: E402

NEIGHBOUR_STEPS = 100_000  # the second training runs until it is stopped
READY_TIMEOUT_S = 180      # how long the second training may take to log its first step


def train_command(threads: str, run_dir: Path, max_steps: int) -> list[str]:
    return [
        sys.executable, str(ROOT / "train.py"), "experiment=quickstart", "hardware=cpu", f"hardware.threads={threads}",
        "logger=none", "print_config=false", f"train.max_steps={max_steps}", "train.log_every=1",
        "dataset.val_images=10", "dataset.test_images=10", f"hydra.run.dir={run_dir}",
    ]


def environment() -> dict[str, str]:
    """This environment without ``OMP_NUM_THREADS``, so that each setting decides the count."""
    return {name: value for name, value in os.environ.items() if name != "OMP_NUM_THREADS"}


def start(threads: str, run_dir: Path, max_steps: int) -> subprocess.Popen:
    """A training in its own process group (so that stopping it stops its loader workers too)."""
    run_dir.mkdir(parents=True)
    with open(run_dir.parent / f"{run_dir.name}.out", "w") as output:
        return subprocess.Popen(train_command(threads, run_dir, max_steps), cwd=ROOT, env=environment(),
                                stdout=output, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen | None) -> None:
    if process is not None and process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    if process is not None:
        process.wait()


def step_times(run_dir: Path) -> list[float]:
    """``train/step_time_s`` of every step logged so far."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["train/step_time_s"] for r in records if "train/step_time_s" in r]


def output_of(run_dir: Path) -> str:
    return (run_dir.parent / f"{run_dir.name}.out").read_text()


def chosen_threads(run_dir: Path) -> int | None:
    """The count the run's ``hat.threads`` log line reports."""
    found = re.search(r"compute threads: (\d+)", output_of(run_dir))
    return int(found.group(1)) if found else None


def wait_for(process: subprocess.Popen, run_dir: Path, count: int, deadline: float) -> list[float]:
    """The step times once ``count`` steps are logged, the process has ended, or ``deadline`` passed."""
    while True:
        times = step_times(run_dir)
        if len(times) >= count or process.poll() is not None or time.monotonic() > deadline:
            return times
        time.sleep(0.25)


def failed(run_dir: Path, what: str) -> RuntimeError:
    tail = "\n".join(output_of(run_dir).splitlines()[-20:])
    return RuntimeError(f"the {what} training ended before logging its steps:\n{tail}")


def measure(threads: str, busy: bool, steps: int, warmup: int, budget_s: float) -> dict:
    """One quickstart training's step times with ``hardware.threads=threads``, beside a second one if ``busy``."""
    with tempfile.TemporaryDirectory(prefix="bench-threads-") as folder:
        neighbour = run = None
        try:
            if busy:
                neighbour_dir = Path(folder) / "neighbour"
                neighbour = start(threads, neighbour_dir, NEIGHBOUR_STEPS)
                if not wait_for(neighbour, neighbour_dir, 1, time.monotonic() + READY_TIMEOUT_S):
                    raise failed(neighbour_dir, "second")
            run_dir = Path(folder) / "measured"
            run = start(threads, run_dir, warmup + steps)
            times = wait_for(run, run_dir, warmup + steps, time.monotonic() + budget_s)
            if neighbour is not None and neighbour.poll() is not None:
                raise failed(neighbour_dir, "second")
            if run.poll() not in (None, 0):
                raise failed(run_dir, "measured")
            return {"threads": chosen_threads(run_dir), "times": times[warmup:warmup + steps]}
        finally:
            stop(run)
            stop(neighbour)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="steps before them, not timed")
    parser.add_argument("--budget", type=float, default=75.0, help="seconds a measured run may take")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    settings = {"default": str(os.cpu_count()), "auto": "auto"}
    rows, medians = [], {}
    for busy in (False, True):
        machine = "beside a second training" if busy else "quiet"
        for name, threads in settings.items():
            result = measure(threads, busy, args.steps, args.warmup, args.budget)
            times = result["times"]
            median = statistics.median(times) if times else float("nan")
            medians[name, busy] = median
            speedup = medians["default", busy] / median if name == "auto" else 1.0
            rows.append([f"{name} (hardware.threads={threads})", result["threads"], machine, len(times), median,
                         max(times, default=float("nan")), speedup])
            print(f"{name}, {machine}: {len(times)} steps, median {median:.3g} s", flush=True)
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    command = ["python", "train.py", *train_command("T", Path("DIR"), args.warmup + args.steps)[2:]]
    run_settings = {"command": " ".join(command),
                    "steps": args.steps, "warmup": args.warmup, "budget_s": args.budget,
                    "cpu_count": os.cpu_count(), "affinity": affinity}
    columns = ["setting", "threads", "machine", "steps", "median s/step", "max s/step", "x faster than default"]
    report("threads", pick_device("cpu"), run_settings, columns, rows, args.out)


if __name__ == "__main__":
    main()
