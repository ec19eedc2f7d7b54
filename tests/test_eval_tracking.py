"""evaluate.py logger=wandb: an eval run beside the training runs, read back from its offline files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT
from hat.engine.eval_tracking import evaluation_tags
from hat.report import wandb_jobs
from hat.results import TABLE_COLUMNS
from wandb_offline import isolated_environment, offline_runs, read_offline_run


def test_tags_are_what_was_evaluated():
    long = "checkpoint=/shared/runs/2026-11-27/12-00-00/" + "x" * 40 + "/3/checkpoints/best.pt"
    tags = evaluation_tags([long, "eval.levels=[2,3]", "logger=wandb", "logger.group=levels-1", "+logger.mode=offline"])
    assert tags == ["eval", "checkpoint=…" + long[-52:], "eval.levels=[2,3]"]
    assert len(tags[1]) == 64 and tags[1].endswith("/3/checkpoints/best.pt")  # the end tells checkpoints apart


class _Api:
    """What hat.report's wandb_jobs reads of ``wandb.Api``: the runs of a group."""

    def __init__(self, runs):
        self._runs = runs

    def runs(self, path, filters):
        return [run for run in self._runs if run.group == filters["group"]]


class _Run:
    def __init__(self, offline, state="finished"):
        self.id, self.name, self.state = offline.run_id, offline.run_id, state
        self.group, self.tags, self.summary = offline.group, offline.tags, offline.summary


@pytest.mark.slow
def test_an_offline_eval_run_holds_the_metrics_the_table_and_the_checkpoint(retrieving_run, tmp_path):
    best = retrieving_run / "checkpoints" / "best.pt"
    run_dir = tmp_path / "eval"
    result = subprocess.run(
        [sys.executable, "evaluate.py", f"checkpoint={best}", "hardware=cpu", "eval.levels=[2,3]", "logger=wandb",
         "logger.mode=offline", "logger.group=levels-2026-11-27-12-00-00", f"hydra.run.dir={run_dir}"],
        cwd=ROOT, env=isolated_environment(tmp_path), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    (folder,) = offline_runs(tmp_path)
    run = read_offline_run(folder)
    assert (run.job_type, run.group, run.exit_code) == ("eval", "levels-2026-11-27-12-00-00", 0)
    checkpoint_tag = evaluation_tags([f"checkpoint={best}"])[1]  # cut to W&B's 64 characters when longer
    assert checkpoint_tag.endswith("/checkpoints/best.pt")
    assert run.tags == ["eval", checkpoint_tag, "hardware=cpu", "eval.levels=[2,3]"]
    assert run.config["checkpoint"] == str(best) and run.config["split"] == "test"
    assert run.config["fused_levels"] == [2, 3] and run.config["dataset"] == "shapes"
    assert run.config["checkpoint_config"]["alignment"]["levels"] == [4, 10, 12]
    assert {name: run.summary[name] for name in results["metrics"]} == results["metrics"]
    table = run.table("test/table")
    assert table["columns"] == list(TABLE_COLUMNS)
    assert [row[1] for row in table["data"]] == ["level1", "level2", "level3", "fused level2+level3"]
    assert table["data"][-1][-1] == results["metrics"]["test/rsum"]
    assert json.loads((folder / "files" / "results.json").read_text())["metrics"] == results["metrics"]

    # python -m hat.report --wandb GROUP: a row named by the checkpoint, with the fused test metrics
    (job,) = wandb_jobs("levels-2026-11-27-12-00-00", "hat", api=_Api([_Run(run)]))
    assert job.overrides == {"checkpoint": checkpoint_tag.partition("=")[2], "hardware": "cpu", "eval.levels": "[2,3]"}
    assert job.metrics["rsum"] == results["metrics"]["test/rsum"]
