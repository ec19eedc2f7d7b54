"""The quickstart as a health check: its test/rsum over several seeds, and their spread.

    python bench/quickstart_seeds.py --out bench/results/quickstart-seeds.json           # seeds 0-4
    python bench/quickstart_seeds.py --seeds 0,1 loss.warmup_epochs=3                     # a candidate preset

Each row is one ``python train.py experiment=quickstart seed=S logger=none`` run to the end, in a
fresh temporary folder, with the overrides given; its test/rsum (the fused score) and
each level's are read from the run's ``results.json``. The last rows give the smallest, the median
and the largest of each column over the seeds, and the mean with the standard deviation: the
README's "healthy" threshold for the quickstart comes from them. The seed moves both the model's
initial weights and the generated shapes data (training, validation and test images).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from common import pick_device, report  # noqa: E402


def train_command(seed: int, run_dir: Path, overrides: list[str]) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), "experiment=quickstart", f"seed={seed}", "logger=none",
            "print_config=false", *overrides, f"hydra.run.dir={run_dir}"]


def run_seed(seed: int, overrides: list[str]) -> tuple[dict[str, float], float]:
    """The test metrics of one quickstart run and its wall-clock seconds; a failed run raises with its log's end."""
    with tempfile.TemporaryDirectory(prefix="bench-quickstart-") as folder:
        run_dir = Path(folder) / "run"
        start = time.perf_counter()
        done = subprocess.run(train_command(seed, run_dir, overrides), cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
            raise RuntimeError(f"the quickstart with seed={seed} failed (exit {done.returncode}):\n{tail}")
        return json.loads((run_dir / "results.json").read_text())["metrics"], seconds


def rsum_columns(metrics: dict[str, float]) -> list[str]:
    """``test/rsum`` first, then each level's rsum in order."""
    levels = sorted(key for key in metrics if key.startswith("test/level") and key.endswith("/rsum"))
    return ["test/rsum", *levels]


def summary_rows(values: list[list[float]]) -> list[list]:
    """min, median, max and mean ± standard deviation of each column of ``values`` (one row per seed)."""
    columns = list(zip(*values))
    rows = [[name, *(function(column) for column in columns)]
            for name, function in (("min", min), ("median", statistics.median), ("max", max))]
    spread = [statistics.stdev(column) if len(column) > 1 else 0.0 for column in columns]
    rows.append(["mean ± sd", *(f"{statistics.fmean(c):.1f} ± {s:.1f}" for c, s in zip(columns, spread))])
    return rows


def seed_list(text: str) -> list[int]:
    """An argparse type: comma-separated integers (``0,1,2``)."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seed_list, default=[0, 1, 2, 3, 4], help="seeds to run: 0,1,2 (default 0-4)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("overrides", nargs="*", help="train.py overrides for every run")
    args = parser.parse_intermixed_args(argv)
    rows, values, names = [], [], None
    for seed in args.seeds:
        metrics, seconds = run_seed(seed, args.overrides)
        names = names or rsum_columns(metrics)
        values.append([metrics[name] for name in names])
        rows.append([f"seed={seed}", *values[-1], seconds])
        print(f"seed {seed}: test/rsum {metrics['test/rsum']:.1f} in {seconds:.0f} s", flush=True)
    rows += [[*row, ""] for row in summary_rows(values)]
    command = " ".join(["python", "train.py", *train_command(0, Path("DIR"), args.overrides)[2:]])
    settings = {"command": command.replace("seed=0", "seed=S"), "seeds": args.seeds}
    report("quickstart_seeds", pick_device("cpu"), settings, ["run", *names, "seconds"], rows, args.out)


if __name__ == "__main__":
    main()
