"""``python -m hat.dashboard --group G``: what the sweep or Optuna study behind a W&B group varies."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from hat.dashboard import DashboardError

# hat.wandb_tracker.sweep_group names a multirun's group `{sweep}-{YYYY-MM-DD-HH-MM-SS}`, the sweep
# being `+sweeps=NAME` (sweeps/NAME.yaml) or `hparams_search=NAME` (conf/hparams_search/NAME.yaml).
GROUP = re.compile(r"(?P<sweep>.+)-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}")


@dataclass(frozen=True)
class Sweep:
    """The W&B config ``keys`` a group's runs vary (dotted, e.g. ``alignment.levels``), and whether
    it is a ``study`` (an Optuna search, whose trials draw their own values, rather than a grid)."""

    keys: tuple[str, ...]
    study: bool = False


def find_sweep(group: str, root: Path, by: list[str] | None = None) -> Sweep:
    """The sweep of W&B group ``group``: its keys are ``by`` when given, else the keys of
    ``hydra.sweeper.params`` in ``root/sweeps/{sweep}.yaml`` or, for a study,
    ``root/conf/hparams_search/{sweep}.yaml`` (``seed`` left out). A key that picks a config group
    (a folder ``root/conf/{key}``, e.g. ``encoder``) becomes ``{key}.name``, since the run config
    holds the chosen options rather than the choice.

    Raises:
        DashboardError: naming ``--by`` when the group, the file or its keys give no answer.
    """
    match = GROUP.fullmatch(group)
    study_file = root / "conf" / "hparams_search" / f"{match['sweep']}.yaml" if match else None
    study = study_file is not None and study_file.is_file()
    if by:
        return Sweep(tuple(by), study)
    if match is None:
        raise _ask_for_by(group, "not named {sweep}-{YYYY-MM-DD-HH-MM-SS}")
    path = study_file if study else root / "sweeps" / f"{match['sweep']}.yaml"
    try:
        node = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError:
        raise _ask_for_by(group, f"no sweep file {path}") from None
    except yaml.YAMLError:
        raise _ask_for_by(group, f"{path} is not YAML") from None
    for name in ("hydra", "sweeper", "params"):
        node = node.get(name) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        raise _ask_for_by(group, f"{path} has no hydra.sweeper.params")
    keys = [str(key).lstrip("+") for key in node if str(key).lstrip("+") != "seed"]
    if not keys:
        raise _ask_for_by(group, f"{path} varies only the seed")
    return Sweep(tuple(f"{key}.name" if (root / "conf" / key).is_dir() else key for key in keys), study)


def _ask_for_by(group: str, reason: str) -> DashboardError:
    return DashboardError(f"cannot tell which config key group {group!r} varies ({reason}): pass --by KEY")
