"""``hardware=slurm`` without the ``slurm`` extra: one line that names the extra to install.

``conf/hardware/slurm.yaml`` picks ``hydra/launcher: submitit_slurm``, a config that the
hydra-submitit-launcher package registers. Hydra imports every module under ``hydra_plugins``
before it composes a config; where that package is missing, this one registers a launcher of
the same name that stops a multirun before it starts, with the install command (a single run
uses no launcher, and a job of several SLURM tasks stops in :mod:`hat.engine.distributed`).
"""

from __future__ import annotations

import importlib.util

from hydra.core.config_store import ConfigStore
from hydra.plugins.launcher import Launcher
from omegaconf import OmegaConf


def _not_installed() -> ImportError:
    from hat.extras import install_hint

    return ImportError(
        f"hardware=slurm launches its jobs with Hydra's submitit launcher (hydra-submitit-launcher), "
        f"which is not installed: {install_hint('slurm')}"
    )


class MissingSubmititLauncher(Launcher):
    """Stands for Hydra's submitit launcher where it is not installed: every call raises the
    ImportError that names the extra to install (Hydra fails at the first, the construction)."""

    def __init__(self, **settings) -> None:
        raise _not_installed()

    def setup(self, *, hydra_context, task_function, config) -> None:
        raise _not_installed()

    def launch(self, job_overrides, initial_job_idx):
        raise _not_installed()


if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
    _node = OmegaConf.create({"_target_": f"{__name__}.{MissingSubmititLauncher.__name__}"})
    OmegaConf.set_struct(_node, False)  # hydra.launcher.partition=... and the like still compose
    ConfigStore.instance().store(group="hydra/launcher", name="submitit_slurm", node=_node, provider="hat")
