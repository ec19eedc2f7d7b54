"""The path options of the entry points, made absolute as soon as a command has its config.

A path on the command line means what it means where the command was run: ``~`` is the user's
home and a relative path starts at that folder (the process's working folder: Hydra runs with
``hydra.job.chdir=false``). :func:`absolute_paths` writes each path option of a config that way,
so the checkpoints of a training store paths that still work from another folder. Hydra creates
its run folder before any task code runs, so ``~`` in ``hydra.run.dir=`` and ``hydra.sweep.dir=``
is expanded in the command line itself (:func:`expand_home`), as it is in the path options there,
since Hydra reads an unquoted ``~`` as a syntax error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

# The model locations of the text encoder: a hub name (bert-base-uncased), pkg:MODULE or a folder.
_TEXT_MODELS = ("encoder.text.name", "encoder.text.tokenizer")
_RELEASE_MODELS = tuple(f"release.{key}" for key in (*_TEXT_MODELS, "encoder.image.weights"))

# Each entry point's path options (dotted keys of its config), in the order they are written: the
# data roots under paths.* come before dataset.root, which reads them through ${paths.NAME}.
PATH_OPTIONS: dict[str, tuple[str, ...]] = {
    "train": ("resume", "init_weights", "paths.f30k", "paths.coco", "dataset.root", "encoder.image.weights",
              *_TEXT_MODELS, "logger.dir"),
    "evaluate": ("checkpoint", "checkpoints", "scores", "export", "paths.f30k", "paths.coco", "dataset.root",
                 "logger.dir", *_RELEASE_MODELS),
    "search": ("checkpoint", "images", "captions", "image", "cache_dir", *_RELEASE_MODELS),
    "explain": ("checkpoint", "image", *_RELEASE_MODELS),
}

# Options whose value may also be a hub name: a path only when written as one (~, /, ./, ../) or
# when that folder exists, as transformers decides between a local folder and the hub.
HUB_OR_PATH = frozenset((*_TEXT_MODELS, *(f"release.{key}" for key in _TEXT_MODELS)))

KEYWORDS = frozenset({"auto"})  # resume=auto: not a file
NAME_SCHEMES = ("pkg:", "hf-hub:", "hf:")  # pkg:MODULE (hat.models.weights), hub names: not local paths
HYDRA_DIRS = ("hydra.run.dir", "hydra.sweep.dir")
_HOME = re.compile(r"""(^['"]?|[\[,]\s*['"]?)(~[^/,\]'"]*)""")  # ~ or ~USER starting a value or a list item


def absolute_path(value: str, cwd: Path | None = None, hub_name: bool = False) -> str:
    """``value`` with ``~`` expanded and made absolute from ``cwd`` (default: the working folder);
    ``auto``, an empty string, names of :data:`NAME_SCHEMES` and URLs as given. With ``hub_name``,
    a bare relative name (``bert-base-uncased``, ``org/model``) stays as given unless that folder exists."""
    if not value or value in KEYWORDS or value.startswith(NAME_SCHEMES) or "://" in value:
        return value
    expanded = os.path.expanduser(value)
    base = Path.cwd() if cwd is None else Path(cwd)
    written_as_path = expanded != value or os.path.isabs(value) or value.split("/")[0] in (".", "..")
    if hub_name and not written_as_path and not (base / expanded).is_dir():
        return value
    return os.path.abspath(base / expanded)


def absolute_paths(cfg: DictConfig, keys: Iterable[str], cwd: Path | None = None) -> None:
    """Write each of ``keys`` (dotted) of ``cfg`` in place as :func:`absolute_path` of its value: a
    string, or each string of a list. Keys that are absent, None or not strings are left alone (the
    config's checks report them), and so is an interpolation whose value does not change (a
    ``dataset.root: ${paths.f30k}`` once ``paths.f30k`` is absolute)."""
    for key in keys:
        value = OmegaConf.select(cfg, key, default=None)
        hub_name = key in HUB_OR_PATH
        if isinstance(value, str):
            new = absolute_path(value, cwd, hub_name)
        elif isinstance(value, ListConfig):
            new = [absolute_path(item, cwd, hub_name) if isinstance(item, str) else item for item in value]
        else:
            continue
        if new != (list(value) if isinstance(value, ListConfig) else value):
            OmegaConf.update(cfg, key, new, merge=False)


def expand_home(argv: Sequence[str], keys: Iterable[str]) -> list[str]:
    """The command line ``argv`` with ``~`` expanded where it starts the value of
    ``hydra.run.dir=``, ``hydra.sweep.dir=`` or one of ``keys`` (also ``+KEY=``, a quoted value,
    each item of a list). Hydra makes its folders as written before the task runs, and it reads an
    unquoted ``~`` as a syntax error: the command line must name the home folder itself. Relative
    folders Hydra already takes from the working folder."""
    wanted = {*HYDRA_DIRS, *keys}
    expanded = [*argv[:1]]
    for item in argv[1:]:
        key, sep, value = item.partition("=")
        if sep and key.lstrip("+") in wanted:
            item = key + sep + _HOME.sub(lambda m: m[1] + os.path.expanduser(m[2]), value)
        expanded.append(item)
    return expanded
