"""Where a result came from: code version and package versions."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

from hat.extras import DISTRIBUTION

# the name each version is recorded under: the distribution it is read from
PACKAGES = {
    "hat": DISTRIBUTION,
    "torch": "torch",
    "torchvision": "torchvision",
    "timm": "timm",
    "transformers": "transformers",
    "numpy": "numpy",
    "hydra-core": "hydra-core",
    "omegaconf": "omegaconf",
}


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the repository holding ``path`` (this package by default), ``-dirty`` when it
    has uncommitted changes; ``None`` outside a git checkout."""
    where = path or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name, distribution in PACKAGES.items():
        try:
            versions[name] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def provenance(config: dict) -> dict:
    """``{"git_commit", "versions", "config"}`` for a results file."""
    return {"git_commit": git_commit(), "versions": package_versions(), "config": config}
