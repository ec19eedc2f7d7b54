"""Hydra plugins of an extra that is not installed: one line that names the extra to install.

``hardware=slurm`` picks ``hydra/launcher: submitit_slurm`` (the ``slurm`` extra's
hydra-submitit-launcher registers it) and ``hparams_search=optuna`` picks ``hydra/sweeper: optuna``
(the ``tune`` extra's hydra-optuna-sweeper). Hydra imports
every module under ``hydra_plugins`` before it composes a config; where a plugin's package is
missing, this one registers a stand-in of the same name, so the config still composes and the
multirun stops before it starts, with the install command. (A single run uses no launcher or
sweeper; a job of several SLURM tasks without submitit stops in :mod:`hat.engine.distributed`.)
"""

from __future__ import annotations

import importlib.util

from hydra.core.config_store import ConfigStore
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf


class _StandIn:
    """A plugin whose package is missing: building it raises the ImportError naming ``EXTRA``."""

    OPTION = PLUGIN = EXTRA = ""

    def __init__(self, **settings) -> None:
        raise self.missing()

    @classmethod
    def missing(cls) -> ImportError:
        from hat.extras import install_hint

        return ImportError(f"{cls.OPTION} needs Hydra's plugin {cls.PLUGIN}, which is not installed: "
                           f"{install_hint(cls.EXTRA)}")


class MissingSubmititLauncher(_StandIn, Launcher):
    """Stands for Hydra's submitit launcher (Hydra fails at the first call, the construction)."""

    OPTION, PLUGIN, EXTRA = "hardware=slurm", "hydra-submitit-launcher", "slurm"

    def setup(self, *, hydra_context, task_function, config) -> None:
        raise self.missing()

    def launch(self, job_overrides, initial_job_idx):
        raise self.missing()


class MissingOptunaSweeper(_StandIn, Sweeper):
    """Stands for Hydra's Optuna sweeper."""

    OPTION, PLUGIN, EXTRA = "hparams_search=optuna", "hydra-optuna-sweeper", "tune"

    def setup(self, *, hydra_context, task_function, config) -> None:
        raise self.missing()

    def sweep(self, arguments):
        raise self.missing()


def _stand_in(group: str, name: str, target: type) -> None:
    """Register config ``group/name``: an open node (any settings compose) that builds ``target``."""
    node = OmegaConf.create({"_target_": f"{__name__}.{target.__name__}"})
    OmegaConf.set_struct(node, False)
    ConfigStore.instance().store(group=group, name=name, node=node, provider="hat")


if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
    _stand_in("hydra/launcher", "submitit_slurm", MissingSubmititLauncher)
if importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None:
    _stand_in("hydra/sweeper", "optuna", MissingOptunaSweeper)
