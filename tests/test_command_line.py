"""Every command's mistakes in its input end the same way: one ``error:`` line, exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from conftest import ROOT, compose_config
from hat.command_line import EXIT_USER_ERROR, is_command_line_error, one_line, refuse_missing, run_command
from hat.config import ConfigError


def command(tmp_path, *argv: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(  # timeout: a hang guard only
        [sys.executable, *argv, f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, **env},
    )


@pytest.mark.parametrize(("argv", "message"), [
    (["explain.py"], "error: caption=, checkpoint=, image= not given: python explain.py checkpoint=PATH"),
    (["train.py", "train.epoch=3"], "error: Could not override 'train.epoch'."),
], ids=["a-value-left-out", "an-unknown-key"])
def test_a_mistake_on_the_command_line_is_one_error_line_with_status_2(tmp_path, argv, message):
    """One case of each path: a command's own check, and Hydra's composition (a misspelt group
    choice: tests/test_config.py). The other commands share both (hat.command_line)."""
    result = command(tmp_path, *argv)
    assert result.returncode == EXIT_USER_ERROR, result.stderr[-3000:]
    assert result.stderr.startswith(message), result.stderr[-3000:]
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_hydra_full_error_set_by_the_user_still_gives_hydras_own_report(monkeypatch):
    from hydra.errors import ConfigCompositionException

    def refused():
        raise ConfigCompositionException("Could not override 'train.epoch'.")

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigCompositionException):
        run_command(refused)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    with pytest.raises(SystemExit) as stopped:
        run_command(refused)
    assert stopped.value.code == EXIT_USER_ERROR


def test_refuse_missing_names_every_value_left_out_with_the_usage():
    cfg = OmegaConf.create({"checkpoint": "???", "query": "x", "inner": {"images": "???"}})
    with pytest.raises(ConfigError, match=r"^checkpoint=, inner.images= not given: python x.py a=B$"):
        refuse_missing(cfg, "python x.py a=B")
    refuse_missing(OmegaConf.create({"checkpoint": "a.pt"}), "unused")


def test_a_missing_group_option_lists_the_groups_options():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException) as caught:
        compose_config("train", ["experiment=quickstar"])
    assert is_command_line_error(caught.value)
    assert one_line(caught.value) == ("experiment=quickstar is not an option of experiment: "
                                      "choose one of hat_coco, hat_f30k, quickstart")


def test_a_failure_that_is_not_the_command_lines_keeps_its_traceback(monkeypatch):
    """A bug inside a run is not the user's to fix: it propagates as it is (status 1, traceback)."""
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")  # run_command sets it; the undo removes it again

    def broken():
        raise RuntimeError("a bug")

    assert not is_command_line_error(RuntimeError("a bug"))
    with pytest.raises(RuntimeError, match="a bug"):
        run_command(broken)
