"""Ablation report: ``python -m hat.report MULTIRUN_DIR [--csv]`` or ``python -m hat.report --wandb GROUP``.

Reads the ``results.json`` of every job below a folder (at any depth), takes each job's
overrides from what the run recorded there (older runs: Hydra's ``.hydra/overrides.yaml``), names
every job it leaves out and why (a damaged ``results.json``, a job without one), and prints one row per job with its
overrides as columns and R@1/5/10 both ways and rsum of the fused test score. Jobs that differ
only in ``seed`` are merged into one row of mean +- standard deviation. With ``--wandb GROUP``
the jobs are the finished runs of a W&B group (a sweep's group, see train.py), their overrides
the ``key=value`` tags train.py gives them and their metrics the run summaries. Exit status 1
when no results are found or W&B cannot be read.
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

from hat.command_line import EXIT_USER_ERROR
from hat.metrics import RECALL_KEYS
from hat.wandb_server import check_server

METRICS = RECALL_KEYS
SEED_KEYS = ("seed",)


@dataclass
class Job:
    """One finished run: where it is (a folder or a W&B run), its overrides (``key -> value``)
    and its fused test metrics."""

    source: str
    overrides: dict[str, str]
    metrics: dict[str, float]


def parse_overrides(items) -> dict[str, str]:
    """``key=value`` command-line overrides as a dict; Hydra's own settings and items without ``=`` are left out."""
    overrides = {}
    for item in items:
        key, equals, value = str(item).partition("=")
        key = key.lstrip("+~")
        if equals and not key.startswith("hydra"):
            overrides[key] = value
    return overrides


def fused_test_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The fused test metrics of a results file: ``test/<metric>``, or the first protocol's
    (``test/coco1k/<metric>``) when the dataset reports several."""
    protocols = {k.rsplit("/", 1)[0] + "/" for k in metrics if k.count("/") == 2 and "/level" not in k}
    prefixes = ["test/"] + sorted(protocols)
    for prefix in prefixes:
        if all(prefix + m in metrics for m in METRICS):
            return {m: metrics[prefix + m] for m in METRICS}
    raise ValueError(f"no fused test metrics ({', '.join('test/' + m for m in METRICS)})")


JOB_MARKS = (".hydra", "train.log", "checkpoints")  # what a job folder holds once it started


def find_jobs(root: Path) -> tuple[list[Job], list[str]]:
    """Every job below ``root`` with its results: ``(jobs, skipped)``. A job's overrides are those
    its run recorded in ``results.json`` (older runs: Hydra's ``.hydra/overrides.yaml`` beside it).
    ``skipped``: one line per job folder left out and why: a ``results.json`` that cannot be read,
    or a job that started (it has ``.hydra/``, ``train.log`` or ``checkpoints/``) but holds none."""
    jobs, skipped = [], []
    for results in sorted(root.rglob("results.json")):
        try:
            record = json.loads(results.read_text())
            metrics = fused_test_metrics(record["metrics"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            skipped.append(f"{results}: cannot be read ({type(error).__name__}: {error})")
            continue
        items = record.get("overrides")
        if items is None:
            overrides_file = results.parent / ".hydra" / "overrides.yaml"
            items = (yaml.safe_load(overrides_file.read_text()) or []) if overrides_file.is_file() else []
        jobs.append(Job(str(results.parent), parse_overrides(items), metrics))
    started = {mark.parent for name in JOB_MARKS for mark in root.rglob(name)}
    skipped += [f"{folder}: no results.json (the job has not finished: see its train.log)"
                for folder in sorted(started) if not (folder / "results.json").is_file()]
    return jobs, skipped


def wandb_jobs(group: str, project: str, entity: str | None = None, api=None) -> list[Job]:
    """The finished runs of W&B group ``group`` in ``entity/project`` that hold test metrics.

    ``api`` is a ``wandb.Api``; when not given, one is made here, with a short timeout, after
    ``check_server`` has found the configured W&B server answering.
    """
    if api is None:
        import wandb
        from wandb.sdk import wandb_setup

        check_server(wandb_setup.singleton().settings.base_url)
        api = wandb.Api(timeout=10)
    jobs = []
    for run in api.runs(f"{entity}/{project}" if entity else project, filters={"group": group}):
        if run.state != "finished":
            continue
        summary = {key: value for key, value in run.summary.items() if isinstance(value, (int, float))}
        try:
            metrics = fused_test_metrics(summary)
        except ValueError:
            continue  # a run that stopped before its test
        jobs.append(Job(f"wandb run {run.id} ({run.name})", parse_overrides(run.tags), metrics))
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
    parser.add_argument("path", type=Path, nargs="?", help="a multirun (or any) folder holding results.json files")
    parser.add_argument("--wandb", metavar="GROUP", help="read the finished runs of this W&B group instead")
    parser.add_argument("--project", default="hat", help="W&B project of --wandb (default: hat)")
    parser.add_argument("--entity", help="W&B entity of --wandb (default: your default entity)")
    parser.add_argument("--csv", action="store_true", help="CSV instead of Markdown")
    args = parser.parse_args(argv)
    if (args.path is None) == (args.wandb is None):
        parser.error("give either PATH or --wandb GROUP")
    if args.wandb is not None:
        where = f"W&B group {args.wandb!r} of project {args.project!r}"
        try:
            jobs = wandb_jobs(args.wandb, args.project, args.entity)
        except Exception as error:  # noqa: BLE001  (no login, no server, no such project: all end here)
            print(f"cannot read {where}: {error}", file=sys.stderr)
            return EXIT_USER_ERROR
        missing = f"no finished run with test metrics in {where}"
    else:
        jobs, skipped = find_jobs(args.path)
        for line in skipped:
            print(f"left out: {line}", file=sys.stderr)
        missing = f"no readable results.json below {args.path}"
    if not jobs:
        print(missing, file=sys.stderr)
        return EXIT_USER_ERROR
    header, rows = table_rows(jobs)
    print(csv_text(header, rows) if args.csv else markdown(header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
