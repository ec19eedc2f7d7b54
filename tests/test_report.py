"""python -m hat.report: one row per job of a multirun, seeds merged into mean ± std."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, TINY_RUN
from hat.report import METRICS, main, wandb_jobs
from wandb_offline import isolated_environment, offline_runs, read_offline_run


def _job(folder, overrides, rsum, seed_offset=0.0):
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    metrics = {f"test/{m}": 10.0 + seed_offset for m in METRICS if m != "rsum"}
    metrics["test/rsum"] = rsum
    metrics["test/level1/rsum"] = 1.0
    (folder / "results.json").write_text(json.dumps({"metrics": metrics}))


def test_rows_per_setting_with_seeds_merged(tmp_path, capsys):
    _job(tmp_path / "0", ["alignment.levels=[12]", "seed=0"], 100.0)
    _job(tmp_path / "1", ["alignment.levels=[12]", "seed=1"], 110.0, seed_offset=2.0)
    _job(tmp_path / "2", ["alignment.levels=[4,10,12]", "seed=0"], 200.0)
    assert main([str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "| alignment.levels | seeds | " + " | ".join(METRICS) + " |"
    assert lines[2].startswith("| [12] | 2 | 11.00 ± 1.41 |") and lines[2].endswith("| 105.00 ± 7.07 |")
    assert lines[3].startswith("| [4,10,12] | 1 | 10.00 |") and lines[3].endswith("| 200.00 |")


def test_csv_and_the_first_protocol_of_coco(tmp_path, capsys):
    (tmp_path / "job").mkdir()
    metrics = {f"test/{p}/{m}": v for p, v in (("coco1k", 1.0), ("coco5k", 5.0)) for m in METRICS}
    (tmp_path / "job" / "results.json").write_text(json.dumps({"metrics": metrics}))
    assert main([str(tmp_path), "--csv"]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()
    assert header == "seeds," + ",".join(METRICS) and row == "1," + ",".join(["1.00"] * len(METRICS))


def test_an_ensembles_row_is_the_ensemble_not_a_member(tmp_path, capsys):
    (tmp_path / "eval").mkdir()
    metrics = {f"test/{part}{m}": value for part, value in (("", 3.0), ("model1/", 1.0), ("model2/", 2.0))
               for m in METRICS}
    (tmp_path / "eval" / "results.json").write_text(json.dumps({"metrics": metrics}))
    assert main([str(tmp_path), "--csv"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[1] == "1," + ",".join(["3.00"] * len(METRICS))


def test_no_results_is_an_error(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert f"no readable results.json below {tmp_path}" in capsys.readouterr().err


class _FakeRun:
    """What wandb_jobs reads of a ``wandb.apis.public.Run``."""

    def __init__(self, run_id, state, tags, summary):
        self.id, self.name, self.state, self.tags, self.summary = run_id, f"run-{run_id}", state, tags, summary


class _FakeApi:
    def __init__(self, runs):
        self.runs_by_group = runs
        self.asked = []

    def runs(self, path, filters):
        self.asked.append((path, filters))
        return self.runs_by_group.get(filters["group"], [])


def test_rows_from_a_wandb_group():
    def summary(rsum):
        return {
            **{f"test/{m}": 1.0 for m in METRICS}, "test/rsum": rsum, "test/level1/rsum": 0.5, "_wandb": {"runtime": 3}
        }

    api = _FakeApi({"levels-2026-11-27-12-00-00": [
        _FakeRun("a", "finished", ["+sweeps=levels", "alignment.levels=[12]", "baseline"], summary(300.0)),
        _FakeRun("b", "finished", ["+sweeps=levels", "alignment.levels=[4,10,12]"], summary(400.0)),
        _FakeRun("c", "running", ["+sweeps=levels", "alignment.levels=[10,12]"], summary(0.0)),
        _FakeRun("d", "finished", ["+sweeps=levels", "alignment.levels=[3,6,9,12]"], {"val/rsum": 1.0}),  # no test
    ]})
    jobs = wandb_jobs("levels-2026-11-27-12-00-00", "hat", "lab", api=api)
    assert api.asked == [("lab/hat", {"group": "levels-2026-11-27-12-00-00"})]
    assert [(job.overrides, job.metrics["rsum"]) for job in jobs] == [
        ({"sweeps": "levels", "alignment.levels": "[12]"}, 300.0),
        ({"sweeps": "levels", "alignment.levels": "[4,10,12]"}, 400.0),
    ]


def test_wandb_report_without_a_reachable_server_is_an_error(tmp_path):
    env = isolated_environment(tmp_path, WANDB_BASE_URL="http://127.0.0.1:9", WANDB_API_KEY="a" * 40)
    report = subprocess.run(
        [sys.executable, "-m", "hat.report", "--wandb", "levels-2026-11-27-12-00-00"],
        env=env, capture_output=True, text=True, timeout=90,
    )
    assert report.returncode == 2, report.stderr  # the user's to fix, as every command's input errors
    assert "cannot read W&B group 'levels-2026-11-27-12-00-00' of project 'hat'" in report.stderr
    assert "no answer from the W&B server http://127.0.0.1:9" in report.stderr


@pytest.mark.slow
def test_report_of_a_real_two_job_multirun(tmp_path):
    """Both jobs get a row with their test/rsum, and their W&B runs share the sweep's group."""
    sweep_dir = tmp_path / "multirun" / "2026-11-27" / "12-00-00"
    sweep = subprocess.run(
        [sys.executable, "train.py", "-m", *TINY_RUN, "train.epochs=1", "alignment.levels=[12],[4,10,12]",
         f"hydra.sweep.dir={sweep_dir}", "logger.mode=offline"],
        cwd=ROOT, env=isolated_environment(tmp_path), capture_output=True, text=True, timeout=600,
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    report = subprocess.run([sys.executable, "-m", "hat.report", str(sweep_dir)], capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    rows = report.stdout.strip().splitlines()[2:]
    assert [row.split(" | ")[0] for row in rows] == ["| [12]", "| [4,10,12]"]
    for job, row in zip(("0", "1"), rows):
        rsum = json.loads((sweep_dir / job / "results.json").read_text())["metrics"]["test/rsum"]
        assert row.endswith(f"| {rsum:.2f} |")

    runs = [read_offline_run(path) for path in offline_runs(tmp_path)]
    assert [run.group for run in runs] == ["multirun-2026-11-27-12-00-00"] * 2
    assert sorted("alignment.levels=[12]" in run.tags for run in runs) == [False, True]
    assert all("train.epochs=1" in run.tags for run in runs)


@pytest.mark.slow
def test_report_after_a_refused_rerun_a_damaged_and_an_unfinished_job_keeps_true_overrides_and_names_the_rest(
        tmp_path):
    """A rerun into a finished job's folder is refused and leaves no trace there; a damaged
    results.json and a job that never finished are named with why, and the table goes on."""
    sweep_dir = tmp_path / "sweep"
    first = subprocess.run(
        [sys.executable, "train.py", "-m", *TINY_RUN, "train.epochs=1", "logger=none", "seed=0,1",
         f"hydra.sweep.dir={sweep_dir}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    rerun = subprocess.run(
        [sys.executable, "train.py", *TINY_RUN, "train.epochs=1", "logger=none", "alignment.levels=[12]",
         f"hydra.run.dir={sweep_dir / '0'}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 2 and "already holds checkpoints" in rerun.stderr, rerun.stderr[-3000:]
    (sweep_dir / "1" / "results.json").write_text('{"metrics": {"test/r1": ')  # cut short
    (sweep_dir / "2").mkdir()
    (sweep_dir / "2" / "train.log").write_text("[...][hat.engine.training_run][INFO] - device cpu\n")

    report = subprocess.run([sys.executable, "-m", "hat.report", str(sweep_dir)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    header, _, row = report.stdout.strip().splitlines()
    assert "alignment.levels" not in header and "seed" in header, "job 0's own overrides, not the refused rerun's"
    rsum = json.loads((sweep_dir / "0" / "results.json").read_text())["metrics"]["test/rsum"]
    assert row.endswith(f"| {rsum:.2f} |")
    left_out = report.stderr.strip().splitlines()
    assert left_out[0].startswith(f"left out: {sweep_dir / '1' / 'results.json'}: cannot be read (JSONDecodeError")
    assert left_out[1] == f"left out: {sweep_dir / '2'}: no results.json (the job has not finished: see its train.log)"
