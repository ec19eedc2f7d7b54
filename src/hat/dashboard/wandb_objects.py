"""``python -m hat.dashboard``: the W&B workspace and sweep report, built from :func:`hat.dashboard.panels.sections`.

Building these objects (always with an explicit entity) reaches no server; :func:`describe` turns
them into JSON for ``--dry-run``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import wandb_workspaces.reports.v2 as wr
import wandb_workspaces.workspaces as ws
from wandb_workspaces import expr

from hat.dashboard.panels import WILDCARD, Panel, Section
from hat.dashboard.sweeps import Sweep
from hat.wandb_tracker import STEP_METRIC

# wandb.plot.line_series logs its table under `{key}_table` and draws it with this Vega spec and fields.
LINE_SERIES_SPEC = "wandb/lineseries/v0"
LINE_SERIES_FIELDS = {"step": "step", "lineKey": "lineKey", "lineVal": "lineVal"}
SWEEP_METRIC = "test/rsum"
MONITOR = "best/monitor"  # the summary's best validation train.monitor: what an Optuna study optimises
FINAL_METRICS = (MONITOR, "best/epoch", SWEEP_METRIC, "test/i2t_r1", "test/t2i_r1")


def wandb_panel(panel: Panel):
    """The W&B panel for ``panel``, titled with its name; a wildcard key (``train/lr/*``) becomes the
    line plot's metric regex."""
    if panel.kind == "line":
        wildcards = [key for key in panel.keys if key.endswith(WILDCARD)]
        if wildcards:
            return wr.LinePlot(title=panel.name, x=STEP_METRIC, metric_regex="|".join(
                re.escape(key.removesuffix(WILDCARD)) + "/.*" for key in wildcards))
        return wr.LinePlot(title=panel.name, x=STEP_METRIC, y=list(panel.keys))
    if panel.kind == "bar":
        return wr.BarPlot(title=panel.name, metrics=list(panel.keys), orientation="v")
    [key] = panel.keys
    if panel.kind == "chart":
        return wr.CustomChart(
            query={"summaryTable": {"tableKey": f"{key}_table"}},
            chart_name=LINE_SERIES_SPEC,
            chart_fields=dict(LINE_SERIES_FIELDS),
            chart_strings={"title": key, "xname": "K"},
        )
    if panel.kind == "media":
        return wr.MediaBrowser(title=key, media_keys=[key])
    return wr.WeavePanelSummaryTable(table_name=key)


def workspace(entity: str, project: str, name: str, sections: tuple[Section, ...]) -> ws.Workspace:
    """A workspace of ``sections`` for every run of ``entity/project``, plotted against ``trainer/step``."""
    return ws.Workspace(
        entity=entity,
        project=project,
        name=name,
        sections=[
            ws.Section(
                name=section.name,
                panels=[wandb_panel(panel) for panel in section.panels],
                is_open=True,
                panel_settings=ws.SectionPanelSettings(x_axis=STEP_METRIC),
            )
            for section in sections
        ],
        settings=ws.WorkspaceSettings(x_axis=STEP_METRIC),
    )


def sweep_bars(keys: tuple[str, ...]) -> list[wr.BarPlot]:
    """One bar chart of ``test/rsum`` per config key in ``keys`` (nested keys dotted, e.g.
    ``alignment.levels``): a bar per value of the key, the mean over its runs (the seeds), and
    their standard deviation as the error bar."""
    return [
        wr.BarPlot(
            title=f"{SWEEP_METRIC} per {key}: mean ± std over its runs",
            metrics=[SWEEP_METRIC],
            orientation="v",
            groupby=wr.Config(key),
            groupby_aggfunc="mean",
            groupby_rangefunc="stddev",
        )
        for key in keys
    ]


def parallel_coordinates(keys: tuple[str, ...]) -> wr.ParallelCoordinatesPlot:
    """One axis per swept config key, then the validation monitor that picked each run's best
    checkpoint (what a study optimises) and ``test/rsum``: a line per run."""
    columns = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(key), display_name=key) for key in keys]
    columns += [wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(name), display_name=name)
                for name in (MONITOR, SWEEP_METRIC)]
    return wr.ParallelCoordinatesPlot(title=f"{', '.join(keys)} -> {MONITOR}, {SWEEP_METRIC}", columns=columns)


def config_column(key: str) -> str:
    """The runs table's column of config key ``key`` (dotted): W&B keeps a nested config under the
    top key's ``value`` (``loss.margin`` is ``config:loss.value.margin``)."""
    top, *rest = key.split(".")
    return ".".join([f"config:{top}.value", *rest])


def runs_table_columns(keys: tuple[str, ...]) -> list[str]:
    """The columns pinned in a group's runs table: each run's name and tags (train.py tags a run with
    its command-line overrides), the swept keys, then its final metrics."""
    return ["run:displayName", "tags:__ALL__", *(config_column(key) for key in keys),
            *(f"summary:{name}" for name in FINAL_METRICS)]


def report(entity: str, project: str, group: str, sweep: Sweep, sections: tuple[Section, ...]) -> wr.Report:
    """A report on the runs of W&B group ``group``: the sweep's parallel coordinates
    (:func:`parallel_coordinates`) and, for a grid sweep, :func:`sweep_bars`, above the group's runs
    table (:func:`runs_table_columns` pinned); then every section of the workspace, each panel grid
    showing only that group's runs."""
    def grid(panels, columns: list[str] | None = None) -> wr.PanelGrid:
        runs = wr.Runset(entity=entity, project=project, name=group, filters=[expr.Metric("Group") == group],
                         pinned_columns=columns or [])
        return wr.PanelGrid(runsets=[runs], panels=panels)

    keys = ", ".join(sweep.keys)
    what = "Optuna study" if sweep.study else "sweep"
    sweep_panels = [parallel_coordinates(sweep.keys), *([] if sweep.study else sweep_bars(sweep.keys))]
    blocks = [wr.H1(text=f"{what} over {keys}"), grid(sweep_panels, runs_table_columns(sweep.keys))]
    for section in sections:
        blocks += [wr.H2(text=section.name), grid([wandb_panel(panel) for panel in section.panels])]
    return wr.Report(
        entity=entity,
        project=project,
        title=report_title(group),
        description=f"Runs of the W&B group {group}, a {what} over {keys}.",
        blocks=blocks,
    )


def report_title(group: str) -> str:
    """The title of the report on ``group``; saving again updates the report of that title."""
    return f"hat sweep {group}"


def describe(value: Any) -> Any:
    """``value`` as JSON data. A wandb_workspaces object becomes ``{"type": its class name, field:
    value, ...}`` with its public fields, less those that are None or empty (left to W&B's
    defaults); ids and state loaded from a server are private fields and left out."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        described = {"type": type(value).__name__}
        for field in dataclasses.fields(value):
            item = getattr(value, field.name)
            if not field.name.startswith("_") and not _empty(item):
                described[field.name] = describe(item)
        return described
    if isinstance(value, dict):
        return {str(key): describe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [describe(item) for item in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _empty(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(item is None for item in value)
    return value is None or (isinstance(value, (str, dict)) and not value)
