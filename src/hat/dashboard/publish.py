"""``python -m hat.dashboard --project P`` without ``--dry-run``: save the workspace and report to W&B.

Saving is idempotent: a saved workspace of the same name in the project, or a report of the same
title, is updated rather than duplicated. The login is checked first, then that the server answers
at all (asked once, here, so that an unreachable server fails at once rather than after wandb's
retries), and every request gives up after ``timeout`` seconds; any failure becomes one
:class:`~hat.dashboard.DashboardError`.
"""

from __future__ import annotations

import contextlib
import os

import wandb
import wandb_workspaces.reports.v2 as wr
import wandb_workspaces.workspaces as ws
from wandb_workspaces._graphql import execute_graphql, get_app_url

from hat.dashboard import DashboardError
from hat.dashboard.panels import Section
from hat.dashboard.sweeps import Sweep
from hat.dashboard.wandb_objects import report, workspace
from hat.wandb_server import base_url, check_server, has_login

# The project's saved workspaces ("views"): the lookup Workspace.from_url needs, by display name.
SAVED_VIEWS = """
query SavedViews($entityName: String, $projectName: String) {
  project(name: $projectName, entityName: $entityName) {
    allViews(viewType: "project-view") { edges { node { id name displayName } } }
  }
}
"""


def connect(timeout: int) -> wandb.Api:
    """A logged-in W&B API whose requests give up after ``timeout`` seconds; never prompts."""
    if not has_login(os.environ):
        raise DashboardError("no W&B login found: set WANDB_API_KEY or run `wandb login` (or use --dry-run)")
    try:
        check_server(base_url(os.environ), timeout)
    except ConnectionError as error:
        raise DashboardError(str(error)) from None
    with reported("logging in"):
        return wandb.Api(timeout=timeout)


@contextlib.contextmanager
def reported(what: str):
    """Turn any failure inside into one :class:`DashboardError` naming ``what`` and the server."""
    try:
        yield
    except DashboardError:
        raise
    except Exception as error:  # noqa: BLE001  (whatever W&B raises is one line for the user)
        raise DashboardError(f"{what} at {base_url(os.environ)} failed: {first_line(error)}") from None


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message, or its type when it has none."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def default_entity(api: wandb.Api) -> str:
    """The logged-in user's default entity (team or user name)."""
    entity = api.default_entity
    if not entity:
        raise DashboardError("W&B reports no default entity for this login: pass --entity")
    return entity


def save_workspace(api: wandb.Api, space: ws.Workspace) -> str:
    """Save ``space``, over the saved workspace of the same name in its project if there is one
    (which keeps its own run filters); returns its URL."""
    view = _saved_view(api, space.entity, space.project, space.name)
    if view is not None:
        query = view["name"].removeprefix("nw-").removesuffix("-v")
        saved = ws.Workspace.from_url(f"{get_app_url(api)}/{space.entity}/{space.project}?nw={query}")
        saved.sections = space.sections
        saved.settings = space.settings
        space = saved
    space.save()
    return space.url


def _saved_view(api: wandb.Api, entity: str, project: str, name: str) -> dict | None:
    """The first saved workspace named ``name`` in ``entity/project`` (personal workspaces,
    which the workspaces API cannot load, left out), or None."""
    response = execute_graphql(api, SAVED_VIEWS, {"entityName": entity, "projectName": project})
    edges = ((response.get("project") or {}).get("allViews") or {}).get("edges") or []
    for edge in edges:
        node = edge["node"]
        if node.get("displayName") == name and not node["name"].startswith("nwuser"):
            return node
    return None


def save_report(api: wandb.Api, document: wr.Report) -> str:
    """Save ``document``, over the report of the same title in its project if there is one; returns its URL."""
    for existing in api.reports(f"{document.entity}/{document.project}"):
        if existing.display_name == document.title:
            document.id = existing.id
            break
    document.save()
    return document.url


def publish(
    entity: str | None,
    project: str,
    name: str,
    group: str | None,
    sweep: Sweep | None,
    sections: tuple[Section, ...],
    timeout: int,
) -> list[str]:
    """Save the workspace ``name`` of ``entity/project`` (the login's entity when None) and, with a
    ``group``, the report on it and its ``sweep``; returns their URLs."""
    api = connect(timeout)
    with reported("asking for the default entity"):
        entity = entity or default_entity(api)
    with reported(f"saving workspace {name!r}"):
        urls = [save_workspace(api, workspace(entity, project, name, sections))]
    if group:
        with reported(f"saving the report on {group}"):
            urls.append(save_report(api, report(entity, project, group, sweep, sections)))
    return urls
