"""``python -m hat.dashboard --project P [--entity E] [--group G] [--by KEY ...] [--dry-run]``, or
``python -m hat.dashboard --preview PNG --run RUN_DIR``: hat's W&B workspace and sweep reports.

Without ``--group`` it creates or updates the workspace ``--name`` (default ``hat``) of project P;
with ``--group G`` also a report on that W&B group (a sweep or an Optuna study): parallel
coordinates over the config keys it varies, the runs table, and for a sweep ``test/rsum`` per value
of each key (``--by``, else read from ``sweeps/{sweep}.yaml`` or ``conf/hparams_search/{sweep}.yaml``
under the current directory). ``--dry-run`` prints the objects as JSON and reaches no server.
``--preview`` draws the plots for one local run folder instead and names the panels it leaves
empty. Failures are one line on stderr, with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hat.dashboard import DashboardError
from hat.dashboard.coverage import Coverage
from hat.dashboard.panels import sections
from hat.dashboard.preview import draw_preview
from hat.dashboard.publish import publish
from hat.dashboard.sweeps import find_sweep
from hat.dashboard.wandb_objects import describe, report, workspace

PLACEHOLDER_ENTITY = "<your-entity>"


def positive(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    description = __doc__.split("\n\n")[1].replace("``", "")
    result = argparse.ArgumentParser(prog="python -m hat.dashboard", description=description)
    result.add_argument("--project", help="W&B project (required unless --preview)")
    result.add_argument("--entity", help="W&B entity (default: the login's; with --dry-run: a placeholder)")
    result.add_argument("--name", default="hat", help="workspace name (default: hat)")
    result.add_argument("--group", help="also write a report on this W&B group, e.g. levels-2026-11-27-10-00-00")
    result.add_argument("--by", action="append", metavar="KEY", help="config key the group varies (repeatable)")
    result.add_argument("--levels", type=positive, default=3, help="alignment levels to plot (default: 3)")
    result.add_argument("--dry-run", action="store_true", help="print the objects as JSON; reach no server")
    result.add_argument("--timeout", type=positive, default=10, help="seconds per W&B request (default: 10)")
    result.add_argument("--preview", type=Path, metavar="PNG", help="draw the plots for --run into PNG, and stop")
    result.add_argument("--run", type=Path, metavar="RUN_DIR", help="run folder for --preview (metrics.jsonl)")
    return result


def coverage_lines(found: Coverage) -> str:
    """What ``--preview`` says of the panels the run leaves without data: the empty ones (``none``
    when every panel has data), then those only some runs fill, then those it could not check."""
    lines = [f"empty panels: {', '.join(panel.name for panel in found.empty) or 'none'}"]
    if found.not_logged:
        lines.append("not logged by this run: " + ", ".join(f"{panel.name} ({panel.only} only)"
                                                             for panel in found.not_logged))
    if found.unchecked:
        lines.append("not checked, no W&B run folder in RUN_DIR/wandb: "
                     + ", ".join(panel.name for panel in found.unchecked))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status (2 after a one-line error on stderr)."""
    arguments = parser()
    args = arguments.parse_args(argv)
    if (args.preview is None) != (args.run is None):
        arguments.error("--preview and --run go together")
    if args.preview is None and not args.project:
        arguments.error("--project is required (except with --preview)")
    layout = sections(args.levels)
    try:
        if args.preview is not None:
            found = draw_preview(args.run, args.preview, layout)
            print(f"{args.preview}\n{coverage_lines(found)}")
            return 0
        sweep = find_sweep(args.group, Path.cwd(), args.by) if args.group else None
        if args.dry_run:
            entity = args.entity or PLACEHOLDER_ENTITY
            spec = {"workspace": describe(workspace(entity, args.project, args.name, layout))}
            if args.group:
                spec["report"] = describe(report(entity, args.project, args.group, sweep, layout))
            print(json.dumps(spec, indent=2, ensure_ascii=False))
            return 0
        for url in publish(args.entity, args.project, args.name, args.group, sweep, layout, args.timeout):
            print(url)
    except DashboardError as error:
        print(f"hat.dashboard: {error}", file=sys.stderr)
        return 2
    return 0
