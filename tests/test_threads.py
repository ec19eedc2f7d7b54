"""Compute threads from the CPUs a process may use (src/hat/threads.py): affinity, SLURM, torchrun,
loader workers, the ``hardware.threads`` override and ``OMP_NUM_THREADS``."""

from __future__ import annotations

import logging
import os

import pytest
import torch
from omegaconf import OmegaConf

from conftest import TINY_RUN, compose_config
from hat.checks import ConfigError
from hat.config import _check_hardware, validate_train_config
from hat.runtime import resolve_runtime
from hat.threads import apply_threads, check_threads_setting, choose_threads, usable_cpus

ENV = ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No variable of the rule leaks in from the machine or the CI job running the tests."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def keep_torch_threads():
    """Tests that set torch's thread count put back the one the session had."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def cpus(monkeypatch, own: int, parent: int | None = None) -> None:
    """This process may run on ``own`` CPUs and its parent on ``parent`` (default: the same ones)."""
    parent = own if parent is None else parent

    def affinity(pid):
        return set(range(own)) if pid == 0 else set(range(parent))

    monkeypatch.setattr(os, "sched_getaffinity", affinity)


def test_auto_uses_the_affinity_less_one_cpu_per_loader_worker(monkeypatch):
    cpus(monkeypatch, 8)
    assert usable_cpus().cpus == 8
    assert choose_threads("auto", 0).threads == 8
    assert choose_threads("auto", 2).threads == 6


def test_auto_keeps_one_thread_when_the_workers_take_every_cpu(monkeypatch):
    cpus(monkeypatch, 2)
    choice = choose_threads("auto", 2)
    assert choice.threads == 1
    assert choice.message() == "compute threads: 1 (2 CPUs usable by this process (affinity: 2 of " \
                               f"{os.cpu_count()} CPUs), 2 loader workers)"
    assert choose_threads("auto", 8).threads == 1


def test_without_affinity_the_cpu_count_is_used(monkeypatch):
    def unsupported(pid):
        raise AttributeError("sched_getaffinity")

    monkeypatch.setattr(os, "sched_getaffinity", unsupported)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    share = usable_cpus()
    assert share.cpus == 6
    assert "affinity unknown" in share.describe()


def test_slurm_cpus_per_task_caps_the_affinity(monkeypatch):
    cpus(monkeypatch, 64)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "8")
    assert usable_cpus().cpus == 8
    choice = choose_threads("auto", 2)
    assert choice.threads == 6
    assert "SLURM_CPUS_PER_TASK=8" in choice.message()


def test_slurm_cpus_per_task_above_the_affinity_changes_nothing(monkeypatch):
    cpus(monkeypatch, 4)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "16")
    assert usable_cpus().cpus == 4


@pytest.mark.parametrize("value", ["abc", "0", "-2", "2.5"])
def test_a_bad_slurm_cpus_per_task_names_the_variable(monkeypatch, value):
    cpus(monkeypatch, 4)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", value)
    with pytest.raises(ConfigError, match=rf"SLURM_CPUS_PER_TASK='{value}' in the environment must be a positive"):
        choose_threads("auto", 0)


def test_torchrun_processes_share_the_affinity_they_all_have(monkeypatch):
    cpus(monkeypatch, 16)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "run")
    assert usable_cpus().cpus == 4
    choice = choose_threads("auto", 2)
    assert choice.threads == 2
    assert "LOCAL_WORLD_SIZE=4" in choice.message()


def test_processes_whose_affinity_was_narrowed_keep_their_own_cpus(monkeypatch):
    cpus(monkeypatch, 4, parent=16)  # bound per process (srun's CPU binding, torchrun's NUMA binding)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert usable_cpus().cpus == 4


def test_torchrun_processes_share_their_slurm_task(monkeypatch):
    cpus(monkeypatch, 64)  # the node's CPUs: the job's CPUs are not bound
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "16")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "run")
    assert usable_cpus().cpus == 4


def test_slurm_tasks_of_their_own_each_keep_their_quota(monkeypatch):
    # hardware=slurm: submitit exports LOCAL_WORLD_SIZE, but every process is a SLURM task of 16 CPUs
    cpus(monkeypatch, 64)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "16")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert usable_cpus().cpus == 16


def test_a_node_of_fewer_cpus_than_processes_still_gives_each_one(monkeypatch):
    cpus(monkeypatch, 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert usable_cpus().cpus == 1
    assert choose_threads("auto", 2).threads == 1


def test_an_integer_is_taken_as_it_is(monkeypatch):
    cpus(monkeypatch, 2)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "not read")
    choice = choose_threads(12, 2)
    assert choice.threads == 12
    assert choice.message() == "compute threads: 12 (hardware.threads=12)"


def test_auto_follows_omp_num_threads_set_by_the_user(monkeypatch):
    cpus(monkeypatch, 8)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    choice = choose_threads("auto", 2)
    assert choice.threads == 3
    assert choice.message().startswith("compute threads: 3 (OMP_NUM_THREADS=3 set in the environment; the rule "
                                       "would give 6")
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")  # OpenMP's nested levels: the first is torch's
    assert choose_threads("auto", 2).threads == 4


def test_torchruns_own_omp_num_threads_of_one_does_not_stop_the_rule(monkeypatch):
    cpus(monkeypatch, 16)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # torchrun sets it for several processes a node when unset
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "run")
    choice = choose_threads("auto", 2)
    assert choice.threads == 6
    assert "OMP_NUM_THREADS=1 taken for torchrun's default" in choice.message()
    monkeypatch.delenv("TORCHELASTIC_RUN_ID")  # outside torchrun a 1 is the user's
    assert choose_threads("auto", 2).threads == 1


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_omp_num_threads_counts_as_unset(monkeypatch, value):
    cpus(monkeypatch, 4)
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert choose_threads("auto", 1).threads == 3


def test_a_bad_omp_num_threads_names_the_variable(monkeypatch):
    cpus(monkeypatch, 4)
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    with pytest.raises(ConfigError, match=r"OMP_NUM_THREADS='many' in the environment must be a positive integer"):
        choose_threads("auto", 0)


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "four", "4", None, [2]])
def test_a_bad_setting_names_hardware_threads_its_value_and_what_is_allowed(value):
    with pytest.raises(ConfigError, match=r"hardware\.threads=.* must be 'auto' or an integer >= 1"):
        check_threads_setting(value)
    with pytest.raises(ConfigError, match=r"hardware\.threads="):
        choose_threads(value, 0)


def test_the_message_shows_the_value_as_the_command_line_writes_it():
    with pytest.raises(ConfigError, match=r"^hardware\.threads='four' must be"):
        check_threads_setting("four")
    with pytest.raises(ConfigError, match=r"^hardware\.threads=true must be"):
        check_threads_setting(True)


def test_apply_sets_torch_and_logs_one_line(monkeypatch, caplog, keep_torch_threads):
    cpus(monkeypatch, 2)
    with caplog.at_level(logging.INFO, logger="hat.threads"):
        choice = apply_threads("auto", 1)
    assert torch.get_num_threads() == choice.threads == 1
    assert [r.getMessage() for r in caplog.records if r.name == "hat.threads"] == [choice.message()]


def hardware(**values):
    base = {"device": "cpu", "precision": "auto", "num_workers": 1, "pin_memory": "auto", "compile": False}
    return OmegaConf.create({**base, **values})


def test_resolve_runtime_applies_the_setting(monkeypatch, keep_torch_threads):
    cpus(monkeypatch, 4)
    runtime = resolve_runtime(hardware(threads="auto"))
    assert runtime.threads == torch.get_num_threads() == 3


def test_resolve_runtime_leaves_torch_alone_without_the_key(keep_torch_threads):
    torch.set_num_threads(1)
    assert resolve_runtime(hardware()).threads is None
    assert torch.get_num_threads() == 1


def test_the_config_check_rejects_a_bad_setting_before_the_run():
    cfg = hardware(threads=0, dist_timeout=60, image_decode="cpu")
    with pytest.raises(ConfigError, match=r"hardware\.threads=0 must be 'auto' or an integer >= 1"):
        _check_hardware(cfg)
    _check_hardware(hardware(threads="auto", dist_timeout=60, image_decode="cpu"))


def test_train_and_evaluate_configs_choose_automatically_and_check_the_setting():
    assert compose_config("evaluate", ["checkpoint=x.pt"]).hardware.threads == "auto"
    assert compose_config("train", TINY_RUN).hardware.threads == "auto"
    with pytest.raises(ConfigError, match=r"hardware\.threads='many' must be 'auto' or an integer >= 1"):
        validate_train_config(compose_config("train", [*TINY_RUN, "hardware.threads=many"]))
