"""``python -m hat.dashboard``: the dry-run specs, the sweep keys of a group, one-line failures without
a server, saving over what is already saved, and the PIL preview of a run folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import wandb
import wandb_workspaces.reports.v2 as wr
import wandb_workspaces.workspaces as ws
from PIL import Image, ImageStat

from hat.dashboard import publish
from hat.dashboard.cli import main
from hat.dashboard.panels import sections
from hat.dashboard.preview import colours, plan
from hat.dashboard.wandb_objects import report, report_title, workspace

ROOT = Path(__file__).resolve().parents[1]
GROUP = "levels-2026-11-27-10-00-00"
LEVELS_SWEEP = """# @package _global_
# python train.py -m +sweeps=levels
hydra:
  sweeper:
    params:
      alignment.levels: "[12],[10,12],[4,10,12],[3,6,9,12]"
"""


@pytest.fixture
def no_server(monkeypatch):
    """Any use of W&B's API fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a dry run asked for the W&B API")

    monkeypatch.setattr(wandb, "Api", refuse)


def dry_run(capsys, *args: str) -> dict:
    assert main(["--project", "hat", "--dry-run", *args]) == 0
    return json.loads(capsys.readouterr().out)


def by_section(spec: dict) -> dict[str, list[dict]]:
    return {section["name"]: section["panels"] for section in spec["sections"]}


def find(node, type_name: str) -> list[dict]:
    """Every described object of ``type_name`` inside ``node``."""
    found = []
    if isinstance(node, dict):
        if node.get("type") == type_name:
            found.append(node)
        for value in node.values():
            found += find(value, type_name)
    elif isinstance(node, list):
        for value in node:
            found += find(value, type_name)
    return found


def one_line_error(capsys, argv: list[str], needle: str) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and needle in captured.err, captured.err


def test_dry_run_workspace_holds_every_panel(capsys, no_server):
    spec = dry_run(capsys)
    assert set(spec) == {"workspace"}
    space = spec["workspace"]
    assert (space["entity"], space["project"], space["name"]) == ("<your-entity>", "hat", "hat")
    assert space["settings"]["x_axis"] == "trainer/step"
    panels = by_section(space)
    assert list(panels) == ["Validation", "Test", "Recall@K curves", "Training", "Examples"]
    lines = {panel["y"][0]: panel for panel in panels["Validation"]}
    assert len(lines) == 12 and {"val/rsum", "val/i2t_r1", "val/t2i_r1", "val/level3/rsum"} <= set(lines)
    panel = lines["val/level2/t2i_r1"]
    assert (panel["type"], panel["x"], panel["title"]) == ("LinePlot", "trainer/step", "val/level2/t2i_r1")
    assert {panel["metrics"][0] for panel in panels["Test"]} == {key.replace("val/", "test/") for key in lines}
    assert {panel["type"] for panel in panels["Test"]} == {"BarPlot"}
    assert [panel["y"] for panel in panels["Training"]] == [
        ["train/loss"], ["train/lr"], ["train/samples_per_s"], ["train/data_wait_share"], ["train/peak_mem_gb"]]
    curves = panels["Recall@K curves"]
    assert [panel["query"]["summaryTable"]["tableKey"] for panel in curves] == [
        "val/recall_curve_table", "test/recall_curve_table"]  # where wandb.plot.line_series puts its table
    assert {panel["chart_name"] for panel in curves} == {"wandb/lineseries/v0"}
    assert [(panel["type"], panel.get("table_name") or panel["media_keys"]) for panel in panels["Examples"]] == [
        ("WeavePanelSummaryTable", "val/examples/image_queries"),
        ("WeavePanelSummaryTable", "val/examples/caption_queries"),
        ("MediaBrowser", ["val/examples/attention"]),  # a list of wandb.Image figures
    ]
    fewer = by_section(dry_run(capsys, "--levels", "2", "--entity", "team", "--name", "mine")["workspace"])
    assert {panel["y"][0] for panel in fewer["Validation"]} == {key for key in lines if "level3" not in key}


def test_dry_run_group_report_bars_test_rsum_per_sweep_key(capsys, tmp_path, monkeypatch, no_server):
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "levels.yaml").write_text(LEVELS_SWEEP)
    monkeypatch.chdir(tmp_path)
    spec = dry_run(capsys, "--group", GROUP, "--entity", "team")
    assert set(spec) == {"workspace", "report"}
    document = spec["report"]
    assert (document["entity"], document["project"], document["title"]) == ("team", "hat", report_title(GROUP))
    grids = find(document, "PanelGrid")
    assert len(grids) == 1 + 5  # the sweep's bars, then the workspace's sections
    for grid in grids:
        [runs] = grid["runsets"]
        assert (runs["entity"], runs["project"]) == ("team", "hat")
        assert runs["filters"] == f"Metric(\"Group\") == '{GROUP}'"
    [bars] = grids[0]["panels"]
    assert bars["type"] == "BarPlot" and bars["metrics"] == ["test/rsum"]
    assert bars["groupby"] == {"type": "Config", "name": "alignment.levels"}
    assert (bars["groupby_aggfunc"], bars["groupby_rangefunc"]) == ("mean", "stddev")
    assert "val/level2/t2i_r1" in json.dumps(grids[1:]) and "val/examples/attention" in json.dumps(grids[1:])

    chosen = dry_run(capsys, "--group", "seeds-2026-11-27-10-00-00", "--by", "seed", "--by", "loss.name")["report"]
    assert [bar["groupby"]["name"] for bar in find(chosen, "BarPlot") if "groupby" in bar] == ["seed", "loss.name"]

    (tmp_path / "conf" / "encoder").mkdir(parents=True)
    sweep = "hydra:\n  sweeper:\n    params:\n      encoder: hat,vit\n      seed: 0,1\n"
    (tmp_path / "sweeps" / "encoder.yaml").write_text(sweep)
    grouped = dry_run(capsys, "--group", "encoder-2026-11-27-10-00-00")["report"]
    assert [bar["groupby"]["name"] for bar in find(grouped, "BarPlot") if "groupby" in bar] == ["encoder.name"]


def test_group_without_sweep_file_or_by_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_error(capsys, ["--project", "hat", "--dry-run", "--group", GROUP], "--by")
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "seeds.yaml").write_text("hydra:\n  sweeper:\n    params:\n      seed: 0,1,2\n")
    one_line_error(capsys, ["--project", "hat", "--dry-run", "--group", "seeds-2026-11-27-10-00-00"], "--by")
    one_line_error(capsys, ["--project", "hat", "--dry-run", "--group", "no-date"], "--by")


@pytest.mark.parametrize("api_key", [None, "x" * 40], ids=["no-login", "login"])
def test_saving_without_a_login_or_a_reachable_server_stops_at_its_own_check_in_one_line(tmp_path, api_key):
    env = {key: value for key, value in os.environ.items() if not key.startswith("WANDB_")}
    env.update(WANDB_BASE_URL="http://127.0.0.1:9", WANDB_MODE="disabled", WANDB_CONFIG_DIR=str(tmp_path),
               NETRC=str(tmp_path / "no-netrc"), PYTHONPATH=str(ROOT / "src"))
    if api_key:
        env["WANDB_API_KEY"] = api_key
    done = subprocess.run(  # timeout: a hang guard only, not a speed bound
        [sys.executable, "-m", "hat.dashboard", "--project", "hat", "--entity", "team", "--timeout", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    # The login check, or the command's own single probe of the server, stopped it: wandb's client
    # (which retries an unreachable server for minutes) was never asked to log in.
    expected = "no W&B login found" if api_key is None else "no answer from the W&B server http://127.0.0.1:9 "
    assert done.stderr.startswith(f"hat.dashboard: {expected}"), done.stderr
    assert "logging in at" not in done.stderr and "Traceback" not in done.stderr


def test_saving_updates_what_is_already_saved(monkeypatch):
    saved, loaded_from = [], []
    ours = workspace("team", "hat", "hat", sections(3))
    earlier = workspace("team", "hat", "hat", sections(1))  # stands for the one loaded from the server
    views = [{"id": "V1", "name": "nw-other-v", "displayName": "other"},
             {"id": "V2", "name": "nw-abc123-v", "displayName": "hat"}]

    def listing(api, query, variables):
        assert variables == {"entityName": "team", "projectName": "hat"}
        return {"project": {"allViews": {"edges": [{"node": view} for view in views]}}}

    monkeypatch.setattr(publish, "execute_graphql", listing)
    monkeypatch.setattr(publish, "get_app_url", lambda api: "https://wandb.example")
    monkeypatch.setattr(ws.Workspace, "from_url", classmethod(lambda cls, url: loaded_from.append(url) or earlier))
    monkeypatch.setattr(ws.Workspace, "save", lambda self: saved.append(self))
    monkeypatch.setattr(ws.Workspace, "url", property(lambda self: "workspace-url"))
    assert publish.save_workspace(None, ours) == "workspace-url"
    assert loaded_from == ["https://wandb.example/team/hat?nw=abc123"] and len(saved) == 1 and saved[0] is earlier
    assert earlier.sections == ours.sections and earlier.settings.x_axis == "trainer/step"
    views.pop()
    publish.save_workspace(None, ours)
    assert saved[-1] is ours and len(loaded_from) == 1

    class Reports:
        def reports(self, path):
            assert path == "team/hat"
            titles = ("another report", report_title(GROUP))
            return [type("Saved", (), {"display_name": title, "id": f"id-{title}"}) for title in titles]

    monkeypatch.setattr(wr.Report, "save", lambda self: saved.append(self))
    monkeypatch.setattr(wr.Report, "url", property(lambda self: f"report-url {self.id}"))
    document = report("team", "hat", GROUP, ["alignment.levels"], sections(3))
    assert publish.save_report(Reports(), document) == f"report-url id-{report_title(GROUP)}"
    assert saved[-1] is document


def write_run(folder: Path) -> Path:
    folder.mkdir()
    lines = [
        {"step": 10, "train/loss": 5.0, "train/lr": 1e-3},
        {"step": 20, "train/loss": 3.5, "train/lr": 1e-3, "val/rsum": 40.0, "val/level1/rsum": None},
        {"step": 30, "train/loss": 2.0, "train/lr": 1e-4},
        {"step": 40, "train/loss": 1.5, "val/rsum": 55.0, "val/i2t_r1": 6.0},
    ]
    text = "".join(json.dumps(line) + "\n" for line in lines) + '{"step": 50, "train/lo'  # a killed writer's line
    (folder / "metrics.jsonl").write_text(text)
    (folder / "results.json").write_text(json.dumps({"metrics": {"test/rsum": 52.5, "test/i2t_r1": 7.0}}))
    return folder


def tile(image: Image.Image, layout, key: str) -> Image.Image:
    [box] = [box for panel, box in layout.tiles if panel.key == key]
    return image.crop(box)


def has_colour(image: Image.Image, colour) -> bool:
    return any(pixel == colour for _, pixel in image.getcolors(maxcolors=1 << 16))


def test_preview_draws_the_workspace_plots_of_a_run(capsys, tmp_path):
    out = tmp_path / "pictures" / "dashboard.png"
    assert main(["--preview", str(out), "--run", str(write_run(tmp_path / "run"))]) == 0
    assert capsys.readouterr().out == f"{out}\n"
    image = Image.open(out).convert("RGB")
    layout, palette = plan(sections(3)), colours(sections(3))
    assert image.size == layout.size
    assert len(image.getcolors(maxcolors=1 << 16)) > 20 and max(ImageStat.Stat(image).stddev) > 20
    assert {panel.key for panel, _ in layout.tiles} >= {"val/rsum", "test/rsum", "train/peak_mem_gb"}
    drawn, empty = tile(image, layout, "val/rsum"), tile(image, layout, "train/peak_mem_gb")
    assert has_colour(drawn, palette["rsum"]) and not any(has_colour(empty, colour) for colour in palette.values())
    assert drawn.tobytes() != empty.tobytes()
    assert has_colour(tile(image, layout, "test/rsum"), palette["rsum"])  # from results.json, same colour
    assert not has_colour(tile(image, layout, "val/level1/rsum"), palette["rsum"])  # only a null was logged
    assert has_colour(tile(image, layout, "train/loss"), palette["loss"])

    one_line_error(capsys, ["--preview", str(out), "--run", str(tmp_path)], "neither metrics.jsonl nor results.json")
