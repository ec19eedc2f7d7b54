"""The resolved run config printed as a tree at the start of a run (``print_config: true``)."""

from __future__ import annotations

import sys

import yaml
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax
from rich.tree import Tree

# The sections in the order a reader looks for them; any other section follows, then the top-level values.
SECTION_ORDER = ("dataset", "encoder", "alignment", "loss", "optim", "train", "eval", "hardware", "logger", "paths")


def config_tree(cfg: DictConfig) -> Tree:
    """A :class:`rich.tree.Tree` with one branch per config section (its YAML, interpolations
    resolved) and a last branch holding the top-level values (``seed``, ``resume``, ...)."""
    tree = Tree("config", style="bold", guide_style="dim")
    sections = [key for key in SECTION_ORDER if key in cfg]
    sections += [key for key in cfg if key not in sections and OmegaConf.is_dict(cfg[key])]
    for key in sections:
        _add_branch(tree, key, OmegaConf.to_container(cfg[key], resolve=True))
    values = {key: cfg[key] for key in cfg if not OmegaConf.is_dict(cfg[key])}
    if values:
        _add_branch(tree, "run", OmegaConf.to_container(OmegaConf.create(values), resolve=True))
    return tree


class _ShortListDumper(yaml.SafeDumper):
    """YAML in block style, except lists of plain values, which go on one line (``levels: [4, 10, 12]``)."""


def _represent_list(dumper: yaml.SafeDumper, items: list):
    flat = all(not isinstance(item, (dict, list)) for item in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flat)


_ShortListDumper.add_representer(list, _represent_list)


def _add_branch(tree: Tree, name: str, values: dict) -> None:
    """A branch ``name`` holding ``values`` as YAML."""
    text = yaml.dump(values, Dumper=_ShortListDumper, default_flow_style=False, sort_keys=False).rstrip()
    tree.add(f"[bold]{name}[/bold]").add(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))


def print_config_tree(cfg: DictConfig, file=None) -> None:
    """Print :func:`config_tree` to ``file`` (default: standard output), coloured on a terminal."""
    Console(file=file or sys.stdout, soft_wrap=True).print(config_tree(cfg))
