"""hat.engine.eval_spec: evaluate.py's config resolved once; exactly one of checkpoint, checkpoints, scores."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import compose_config
from hat.checks import ConfigError
from hat.engine.eval_spec import EvalSpec, eval_spec


def _spec(tmp_path, *overrides: str) -> EvalSpec:
    return eval_spec(compose_config("evaluate", list(overrides)), tmp_path, overrides)


def test_one_checkpoint_with_the_defaults(tmp_path):
    spec = _spec(tmp_path, "checkpoint=runs/a/best.pt")
    assert spec.checkpoints == (Path("runs/a/best.pt"),) and spec.scores is None and not spec.ensemble
    assert (spec.split, spec.levels, spec.save_scores, spec.export, spec.dataset) == (None, None, False, None, None)
    assert spec.logger.backend == "none" and spec.overrides == ("checkpoint=runs/a/best.pt",)


def test_an_ensemble_and_a_score_file(tmp_path):
    ensemble = _spec(tmp_path, "checkpoints=[a.pt,b.pt]", "eval.levels=[2,3]", "eval.save_scores=true")
    assert ensemble.checkpoints == (Path("a.pt"), Path("b.pt")) and ensemble.ensemble
    assert ensemble.levels == [2, 3] and ensemble.save_scores
    scores = _spec(tmp_path, "scores=runs/eval/scores.safetensors", "logger=wandb")
    assert scores.scores == Path("runs/eval/scores.safetensors") and scores.checkpoints == ()
    assert scores.logger.backend == "wandb" and scores.logger.project == "hat"


@pytest.mark.parametrize(
    "overrides, given",
    [([], "none of them"), (["checkpoint=a.pt", "scores=s.safetensors"], "checkpoint and scores"),
     (["checkpoint=a.pt", "checkpoints=[a.pt,b.pt]"], "checkpoint and checkpoints")],
)
def test_exactly_one_source(tmp_path, overrides, given):
    with pytest.raises(ConfigError, match=r"give exactly one of checkpoint=PATH \(a model\), checkpoints=\[PATH,PATH\] "
                                          r"\(an ensemble\) or scores=PATH .*; got " + given):
        _spec(tmp_path, *overrides)


@pytest.mark.parametrize(
    "overrides, problem",
    [
        (["checkpoints=a.pt"], r"checkpoints='a.pt' must be a non-empty list of paths"),
        (["checkpoints=[]"], r"checkpoints=\[\] must be a non-empty list of paths"),
        (["checkpoint=a.pt", "eval.save_scores=sometimes"], r"eval.save_scores='sometimes' must be true or false"),
        (["checkpoint=a.pt", "eval.scores_dtype=bfloat16"],
         r"eval.scores_dtype='bfloat16' is not one of \('float16', 'float32'\)"),
        (["checkpoint=a.pt", "split=dev"], r"split='dev' is not one of \('train', 'val', 'test'\)"),
        (["checkpoints=[a.pt,b.pt]", "export=out"], r"export=out writes one model: give it with checkpoint=PATH"),
        (["scores=s.safetensors", "export=out"], r"export=out writes one model"),
        (["scores=s.safetensors", "eval.save_scores=true"], r"scores=s.safetensors is .* drop eval.save_scores"),
        (["scores=s.safetensors", "dataset=shapes"], r"scores=s.safetensors is .* from the file alone: drop dataset"),
        (["checkpoint=a.pt", "logger=wandb", "logger.mode=sometimes"], r"logger.mode='sometimes' is not a W&B mode"),
        (["checkpoint=a.pt", "eval.batch_size=0"], r"eval.batch_size=0 must be an integer >= 1"),
    ],
)
def test_settings_that_cannot_work(tmp_path, overrides, problem):
    with pytest.raises(ConfigError, match=problem):
        _spec(tmp_path, *overrides)


def test_the_export_target_is_checked_before_the_evaluation(tmp_path):
    expected = "give a new or empty folder, or an earlier export to replace"
    (tmp_path / "model.bin").write_text("weights")
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "README.md").write_text("# someone's project")
    refused = {
        "model.bin": rf"export={tmp_path}/model.bin is an existing file: {expected}$",
        "project": rf"export={tmp_path}/project is a folder that holds other files \(README.md\), not an earlier "
                   rf"export: {expected}$",
        "model.bin/out": rf"export={tmp_path}/model.bin/out cannot be created: {tmp_path}/model.bin is a file, "
                         rf"not a folder; {expected}$",
    }
    for target, message in refused.items():
        with pytest.raises(ConfigError, match=message):
            _spec(tmp_path, "checkpoint=a.pt", f"export={tmp_path / target}")
    (tmp_path / "empty").mkdir()
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / "model.safetensors").write_bytes(b"")
    for target in ("new/deeper", "empty", "earlier"):
        assert _spec(tmp_path, "checkpoint=a.pt", f"export={tmp_path / target}").export == tmp_path / target
    assert (tmp_path / "project" / "README.md").read_text() == "# someone's project"


def test_an_export_target_on_a_read_only_disk_is_refused(tmp_path, small_disk):
    disk = small_disk("64k")
    small_disk.remount(disk, "ro")
    with pytest.raises(ConfigError, match=rf"export={disk}/out cannot be written: {disk} is not writable \(a read-only "
                                          rf"file system\); give a new or empty folder"):
        _spec(tmp_path, "checkpoint=a.pt", f"export={disk / 'out'}")
