"""``python -m hat.dashboard --group G``: the config keys that the sweep behind a W&B group varies."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from hat.dashboard import DashboardError

# hat.wandb_tracker.sweep_group names a multirun's group `{sweep}-{YYYY-MM-DD-HH-MM-SS}`.
GROUP = re.compile(r"(?P<sweep>.+)-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}")


def sweep_keys(group: str, root: Path) -> list[str]:
    """The W&B config keys that the sweep of ``group`` varies, ``seed`` left out: the keys of
    ``hydra.sweeper.params`` in ``root/sweeps/{sweep}.yaml``. A key that picks a config group (a
    folder ``root/conf/{key}``, e.g. ``encoder``) becomes ``{key}.name``, since the run config holds
    the chosen options rather than the choice.

    Raises:
        DashboardError: naming ``--by`` when the group, the file or its keys give no answer.
    """
    match = GROUP.fullmatch(group)
    if match is None:
        raise _ask_for_by(group, "not named {sweep}-{YYYY-MM-DD-HH-MM-SS}")
    path = root / "sweeps" / f"{match['sweep']}.yaml"
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
    return [f"{key}.name" if (root / "conf" / key).is_dir() else key for key in keys]


def _ask_for_by(group: str, reason: str) -> DashboardError:
    return DashboardError(f"cannot tell which config key group {group!r} varies ({reason}): pass --by KEY")
