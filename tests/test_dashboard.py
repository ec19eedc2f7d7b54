"""``python -m hat.dashboard``: the dry-run specs, the sweep keys of a group, one-line failures without
a server, saving over what is already saved, and the PIL preview of a run folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import wandb
import wandb_workspaces.reports.v2 as wr
import wandb_workspaces.workspaces as ws
from PIL import Image, ImageStat

from conftest import TINY_RUN
from hat.dashboard import publish
from hat.dashboard.cli import main
from hat.dashboard.coverage import coverage, read_run
from hat.dashboard.panels import ATTENTION, EXAMPLE_TABLES, sections
from hat.dashboard.preview import PALETTE, colours, plan
from hat.dashboard.sweeps import Sweep, find_sweep
from hat.dashboard.wandb_objects import report, report_title, workspace
from wandb_offline import OfflineRun, isolated_environment, read_offline_run

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
    levels, *singles = panels["Validation"]
    assert levels["y"] == ["val/level1/rsum", "val/level2/rsum", "val/level3/rsum", "val/rsum"]  # one plot
    lines = {panel["y"][0]: panel for panel in singles}
    assert len(lines) == 12 and {"val/rsum", "val/i2t_r1", "val/t2i_r1", "val/level3/rsum"} <= set(lines)
    panel = lines["val/level2/t2i_r1"]
    assert (panel["type"], panel["x"], panel["title"]) == ("LinePlot", "trainer/step", "val/level2/t2i_r1")
    test_levels, *test_bars = panels["Test"]
    assert test_levels["metrics"] == [key.replace("val/", "test/") for key in levels["y"]]
    assert {panel["metrics"][0] for panel in test_bars} == {key.replace("val/", "test/") for key in lines}
    assert {panel["type"] for panel in panels["Test"]} == {"BarPlot"}
    training = panels["Training"]
    assert [panel.get("y") for panel in training] == [
        ["train/loss"], ["train/lr"], None, ["train/grad_norm"], ["train/clipped_share"], ["train/temperature"],
        ["train/samples_per_s"], ["train/data_wait_share"], ["train/peak_mem_gb"]]
    assert training[2]["metric_regex"] == "train/lr/.*"  # one line per parameter group, whatever their names
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
    assert {panel["y"][0] for panel in fewer["Validation"][1:]} == {key for key in lines if "level3" not in key}
    assert fewer["Validation"][0]["y"] == ["val/level1/rsum", "val/level2/rsum", "val/rsum"]


def sweep_grid(document: dict) -> tuple[dict, list[dict]]:
    """The first panel grid of a report (the sweep's) and its runs table's pinned columns."""
    grid = find(document, "PanelGrid")[0]
    [runs] = grid["runsets"]
    return grid, runs["pinned_columns"]


def test_dry_run_group_report_shows_the_sweep_in_parallel_coordinates_a_runs_table_and_bars(
        capsys, tmp_path, monkeypatch, no_server):
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "levels.yaml").write_text(LEVELS_SWEEP)
    monkeypatch.chdir(tmp_path)
    spec = dry_run(capsys, "--group", GROUP, "--entity", "team")
    assert set(spec) == {"workspace", "report"}
    document = spec["report"]
    assert (document["entity"], document["project"], document["title"]) == ("team", "hat", report_title(GROUP))
    grids = find(document, "PanelGrid")
    assert len(grids) == 1 + 5  # the sweep's panels, then the workspace's sections
    for grid in grids:
        [runs] = grid["runsets"]
        assert (runs["entity"], runs["project"]) == ("team", "hat")
        assert runs["filters"] == f"Metric(\"Group\") == '{GROUP}'"
    grid, columns = sweep_grid(document)
    coordinates, bars = grid["panels"]
    assert coordinates["type"] == "ParallelCoordinatesPlot"
    assert [column["metric"] for column in coordinates["columns"]] == [
        {"type": "Config", "name": "alignment.levels"}, {"type": "SummaryMetric", "name": "best/monitor"},
        {"type": "SummaryMetric", "name": "test/rsum"}]
    assert columns == ["run:displayName", "tags:__ALL__", "config:alignment.value.levels", "summary:best/monitor",
                       "summary:best/epoch", "summary:test/rsum", "summary:test/i2t_r1", "summary:test/t2i_r1"]
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
    assert "config:encoder.value.name" in sweep_grid(grouped)[1]


def test_dry_run_report_on_an_optuna_study_has_its_tuned_keys_in_parallel_coordinates(capsys, monkeypatch, no_server):
    monkeypatch.chdir(ROOT)  # conf/hparams_search/optuna.yaml
    group = "optuna-2026-11-27-10-00-00"  # hparams_search=optuna's multirun group
    assert find_sweep(group, ROOT) == Sweep(("loss.margin", "alignment.smooth", "optim.lr", "optim.warmup_epochs"),
                                            study=True)
    document = dry_run(capsys, "--group", group)["report"]
    grid, columns = sweep_grid(document)
    [coordinates] = grid["panels"]  # no bars: every trial draws its own values
    assert [column["display_name"] for column in coordinates["columns"]] == [
        "loss.margin", "alignment.smooth", "optim.lr", "optim.warmup_epochs", "best/monitor", "test/rsum"]
    assert columns[2:6] == ["config:loss.value.margin", "config:alignment.value.smooth", "config:optim.value.lr",
                            "config:optim.value.warmup_epochs"]
    assert document["blocks"][0]["text"].startswith("Optuna study over loss.margin")


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
    document = report("team", "hat", GROUP, Sweep(("alignment.levels",)), sections(3))
    assert publish.save_report(Reports(), document) == f"report-url id-{report_title(GROUP)}"
    assert saved[-1] is document


def write_run(folder: Path) -> Path:
    folder.mkdir()
    lines = [
        {"step": 10, "train/loss": 5.0, "train/lr": 1e-3, "train/lr/decay": 1e-3, "train/lr/no_decay": 1e-3},
        {"step": 20, "train/loss": 3.5, "train/lr": 1e-3, "val/rsum": 40.0, "val/level1/rsum": None,
         "val/level2/rsum": 30.0},
        {"step": 30, "train/loss": 2.0, "train/lr": 1e-4, "train/lr/decay": 1e-4, "train/lr/no_decay": 2e-4},
        {"step": 40, "train/loss": 1.5, "val/rsum": 55.0, "val/i2t_r1": 6.0, "val/level2/rsum": 45.0},
    ]
    text = "".join(json.dumps(line) + "\n" for line in lines) + '{"step": 50, "train/lo'  # a killed writer's line
    (folder / "metrics.jsonl").write_text(text)
    (folder / "results.json").write_text(json.dumps({"metrics": {"test/rsum": 52.5, "test/i2t_r1": 7.0}}))
    return folder


def tile(image: Image.Image, layout, name: str) -> Image.Image:
    [box] = [box for panel, box in layout.tiles if panel.name == name]
    return image.crop(box)


def has_colour(image: Image.Image, colour) -> bool:
    return any(pixel == colour for _, pixel in image.getcolors(maxcolors=1 << 16))


def said(output: str, start: str) -> list[str]:
    """The panel names of the preview's output line that begins with ``start``."""
    [line] = [line for line in output.splitlines() if line.startswith(start)]
    return line.removeprefix(start).split(", ")


def test_preview_draws_the_workspace_plots_of_a_run_and_names_the_panels_it_leaves_empty(capsys, tmp_path):
    out = tmp_path / "pictures" / "dashboard.png"
    run = write_run(tmp_path / "run")
    assert main(["--preview", str(out), "--run", str(run)]) == 0
    output = capsys.readouterr().out
    assert output.splitlines()[0] == str(out)
    empty = said(output, "empty panels: ")
    assert {"val/level1/rsum", "test/level2/rsum", "train/grad_norm (before clipping)", "train/samples_per_s"} <= set(
        empty)
    assert not {"val/rsum", "val/level2/rsum", "test/rsum", "val/rsum per level and fused", "train/loss",
                "train/lr per parameter group"} & set(empty)
    assert said(output, "not logged by this run: ") == [
        "train/temperature (learnable-temperature InfoNCE runs only)", "train/peak_mem_gb (GPU runs only)"]
    assert said(output, "not checked, no W&B run folder in RUN_DIR/wandb: ") == [
        "val/recall_curve", "test/recall_curve", *EXAMPLE_TABLES, ATTENTION]

    image = Image.open(out).convert("RGB")
    layout, palette = plan(sections(3)), colours(sections(3))
    assert image.size == layout.size
    assert len(image.getcolors(maxcolors=1 << 16)) > 20 and max(ImageStat.Stat(image).stddev) > 20
    drawn, gpu_only = tile(image, layout, "val/rsum"), tile(image, layout, "train/peak_mem_gb")
    assert has_colour(drawn, palette["rsum"]) and not any(has_colour(gpu_only, c) for c in palette.values())
    assert drawn.tobytes() != gpu_only.tobytes()
    assert has_colour(tile(image, layout, "test/rsum"), palette["rsum"])  # from results.json, same colour
    assert not has_colour(tile(image, layout, "val/level1/rsum"), palette["rsum"])  # only a null was logged
    assert has_colour(tile(image, layout, "train/loss"), palette["loss"])
    for name in ("val/rsum per level and fused", "train/lr per parameter group"):  # two lines, two colours
        assert has_colour(tile(image, layout, name), PALETTE[0]) and has_colour(tile(image, layout, name), PALETTE[1])

    one_line_error(capsys, ["--preview", str(out), "--run", str(tmp_path)], "neither metrics.jsonl nor results.json")


def test_the_w_and_b_only_panels_are_found_among_the_media_files_of_the_runs_w_and_b_folder(tmp_path):
    run = write_run(tmp_path / "run")
    media = run / "wandb" / "offline-run-20261127_100000-abc123" / "files" / "media"
    for name in ("table/val/recall_curve_table_9_4eb606a55e3a73a23d6b.table.json",
                 "table/val/examples/image_queries_9_2277caf2aa3682d73ff5.table.json",
                 "images/val/examples/attention_4_ec5da7df5845d3e561d0.png"):
        (media / name).parent.mkdir(parents=True, exist_ok=True)
        (media / name).write_text("{}")
    (run / "wandb" / "offline-run-20261127_110000-abc123" / "files").mkdir(parents=True)  # resumed: no media yet
    data = read_run(run)
    assert data.media == {"val/recall_curve_table", "val/examples/image_queries", "val/examples/attention"}
    found = coverage(sections(3), data)
    assert not found.unchecked
    assert [panel.name for panel in found.empty if panel.kind not in ("line", "bar")] == [
        "test/recall_curve", "val/examples/caption_queries"]
    assert read_run(write_run(tmp_path / "no-wandb")).media is None


SWEEP_GROUP = "loss-2026-11-27-12-00-00"  # +sweeps=loss started at that time


@pytest.fixture(scope="module")
def loss_sweep(tmp_path_factory) -> list[tuple[Path, OfflineRun]]:
    """A two-job tiny multirun of sweeps/loss.yaml (the hardest-negative hinge, then InfoNCE with its
    learnable temperature), logged offline by W&B into each job's folder (its default place):
    ``(job folder, its W&B run read back)`` per job."""
    tmp_path = tmp_path_factory.mktemp("sweep")
    sweep_dir = tmp_path / "multirun" / "2026-11-27" / "12-00-00"
    env = isolated_environment(tmp_path)
    del env["WANDB_DIR"]  # each job's W&B run goes to its own folder, where --preview looks
    done = subprocess.run(  # timeout: a hang guard only, not a speed bound
        [sys.executable, "train.py", "-m", "+sweeps=loss", "hydra.sweeper.params.loss='hinge_hardest,infonce'",
         *TINY_RUN, "train.epochs=1", "logger.mode=offline", f"hydra.sweep.dir={sweep_dir}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = [sweep_dir / "0", sweep_dir / "1"]
    return [(job, read_offline_run(next((job / "wandb").glob("offline-run-*")))) for job in jobs]


def logged_keys(run: OfflineRun) -> set[str]:
    return {key for row in run.history for key in row} | set(run.summary)


def config_value(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


@pytest.mark.slow
def test_every_key_a_panel_shows_is_logged_by_a_real_run(loss_sweep):
    for job, run in loss_sweep:
        keys = logged_keys(run)
        infonce = run.config["loss"]["name"] == "infonce"
        for section in sections(3):
            for panel in section.panels:
                if panel.only == "GPU runs" and not torch.cuda.is_available():
                    assert not set(panel.keys) & keys
                    continue
                if panel.keys == ("train/temperature",):
                    assert ("train/temperature" in keys) == infonce, job
                    continue
                for key in panel.keys:
                    if key.endswith("/*"):
                        assert any(k.startswith(key[:-1]) for k in keys), (job, key)
                    else:
                        assert (f"{key}_table" if panel.kind == "chart" else key) in keys, (job, key)


@pytest.mark.slow
def test_the_sweep_panels_find_their_keys_in_each_job_of_a_real_multirun(loss_sweep):
    sweep, study = find_sweep(SWEEP_GROUP, ROOT), find_sweep("optuna-2026-11-27-12-00-00", ROOT)
    assert sweep == Sweep(("loss.name",))
    names = []
    for _, run in loss_sweep:
        assert run.group == SWEEP_GROUP
        names.append(config_value(run.config, "loss.name"))
        assert f"loss={names[-1]}" in run.tags  # the runs table's tags column shows the job's overrides
        if names[-1] == "hinge_hardest":  # the default training, which hparams_search=optuna tunes
            for key in study.keys:
                assert isinstance(config_value(run.config, key), (int, float)), key
        for name in ("best/monitor", "best/epoch", "test/rsum", "test/i2t_r1", "test/t2i_r1"):
            assert name in run.summary, name
    assert names == ["hinge_hardest", "infonce"]


@pytest.mark.slow
def test_the_preview_of_a_real_run_leaves_no_panel_empty(loss_sweep, tmp_path, capsys):
    for job, run in loss_sweep:
        assert main(["--preview", str(tmp_path / "preview.png"), "--run", str(job)]) == 0
        output = capsys.readouterr().out.splitlines()
        assert output[1] == "empty panels: none", output
        assert not [line for line in output if line.startswith("not checked")]  # W&B's files were found
        not_logged = "train/peak_mem_gb (GPU runs only)"
        if run.config["loss"]["name"] != "infonce":
            not_logged = f"train/temperature (learnable-temperature InfoNCE runs only), {not_logged}"
        assert output[2:] == [f"not logged by this run: {not_logged}"]
