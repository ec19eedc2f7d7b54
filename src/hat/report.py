"""Ablation report: ``python -m hat.report MULTIRUN_DIR [--csv]``.

Reads the ``results.json`` of every job below a folder (at any depth), takes each job's
overrides from Hydra's ``.hydra/overrides.yaml`` beside it, and prints one row per job with its
overrides as columns and R@1/5/10 both ways and rsum of the fused test score. Jobs that differ
only in ``seed`` are merged into one row of mean +- standard deviation. Exit status 1 when no
results are found.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

METRICS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")
SEED_KEYS = ("seed",)


@dataclass
class Job:
    """One finished run: where it is, its overrides (``key -> value``) and its fused test metrics."""

    path: Path
    overrides: dict[str, str]
    metrics: dict[str, float]


def fused_test_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The fused test metrics of a results file: ``test/<metric>``, or the first protocol's
    (``test/coco1k/<metric>``) when the dataset reports several."""
    prefixes = ["test/"] + sorted({k.rsplit("/", 1)[0] + "/" for k in metrics if k.count("/") == 2 and "/level" not in k})
    for prefix in prefixes:
        if all(prefix + m in metrics for m in METRICS):
            return {m: metrics[prefix + m] for m in METRICS}
    raise ValueError(f"no fused test metrics ({', '.join('test/' + m for m in METRICS)})")


def find_jobs(root: Path) -> list[Job]:
    """Every ``results.json`` below ``root`` with the overrides of its Hydra job (none if absent)."""
    jobs = []
    for results in sorted(root.rglob("results.json")):
        overrides_file = results.parent / ".hydra" / "overrides.yaml"
        overrides = {}
        if overrides_file.is_file():
            for item in yaml.safe_load(overrides_file.read_text()) or []:
                key, _, value = str(item).partition("=")
                if not key.lstrip("+~").startswith("hydra"):
                    overrides[key.lstrip("+~")] = value
        metrics = json.loads(results.read_text())["metrics"]
        jobs.append(Job(results.parent, overrides, fused_test_metrics(metrics)))
    return jobs


def table_rows(jobs: list[Job]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: override columns (those that vary, or all if one job), ``seeds``, metrics."""
    keys = sorted({k for job in jobs for k in job.overrides if k not in SEED_KEYS})
    varying = [k for k in keys if len({job.overrides.get(k, "") for job in jobs}) > 1] or keys
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        groups.setdefault(tuple(job.overrides.get(k, "") for k in varying), []).append(job)
    rows = []
    for settings, members in groups.items():
        cells = []
        for metric in METRICS:
            values = [job.metrics[metric] for job in members]
            mean = statistics.fmean(values)
            cells.append(f"{mean:.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f}")
        rows.append([*settings, str(len(members)), *cells])
    return [*varying, "seeds", *METRICS], rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def csv_text(header: list[str], rows: list[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hat.report", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="a multirun (or any) folder holding results.json files")
    parser.add_argument("--csv", action="store_true", help="CSV instead of Markdown")
    args = parser.parse_args(argv)
    jobs = find_jobs(args.path)
    if not jobs:
        print(f"no results.json below {args.path}", file=sys.stderr)
        return 1
    header, rows = table_rows(jobs)
    print(csv_text(header, rows) if args.csv else markdown(header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
