"""The name hat is published under and its extras: the command that installs an optional part."""

from __future__ import annotations

DISTRIBUTION = "hat-retrieval"  # "hat" on PyPI is another project; the import name stays ``hat``


def install_hint(extra: str) -> str:
    """The command that installs the extra ``extra`` (see ``[project.optional-dependencies]``)."""
    return f"pip install '{DISTRIBUTION}[{extra}]' (in a checkout: pip install -e '.[{extra}]')"
