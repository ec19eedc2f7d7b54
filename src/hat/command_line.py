"""How the project's commands end on a mistake in their input: one ``error:`` message and exit status 2.

The commands (train.py, evaluate.py, search.py, explain.py) catch their own input errors, a
required value left out included (:func:`refuse_missing`). A command line Hydra cannot compose (a
misspelt option or group choice, bad override syntax) is Hydra's to find: :func:`run_command`
turns it into the same one line and status, the choices there are named; anything else (a bug)
keeps Python's traceback and status 1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf

from hat.checks import ConfigError

EXIT_USER_ERROR = 2
FULL_ERROR = "HYDRA_FULL_ERROR"


def refuse_missing(cfg: DictConfig, usage: str) -> None:
    """Raise a :class:`ConfigError` naming every value of ``cfg`` left at ``???``, with the command's
    ``usage`` (``python explain.py checkpoint=PATH ...``)."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{', '.join(key + '=' for key in missing)} not given: {usage}")


def run_command(main: Callable[[], object]) -> None:
    """Call the Hydra entry point ``main``. Hydra is told to raise what it would report, so that its
    command-line errors can be told from a failure of the job; they end as one ``error:`` line
    (:func:`one_line`) with status 2. A user who set ``HYDRA_FULL_ERROR=1`` gets Hydra's own report."""
    if os.environ.get(FULL_ERROR) == "1":
        main()
        return
    os.environ[FULL_ERROR] = "1"
    try:
        main()
    except Exception as error:
        if not is_command_line_error(error):
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def one_line(error: BaseException) -> str:
    """Hydra's message for a command-line error on one line: a missing group choice lists the
    options there are; otherwise the message and its cause, less the indented details (the config
    search path, OmegaConf's ``full_key``/``object_type``)."""
    options = getattr(error, "options", None)
    if options:
        group, _, choice = str(getattr(error, "missing_cfg_file", "")).rpartition("/")
        return f"{group}={choice} is not an option of {group}: choose one of {', '.join(sorted(options))}"
    text = str(error)
    if error.__cause__ is not None and str(error.__cause__) not in text:
        text += "\n" + str(error.__cause__)
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line[:1].isspace()]
    return " ".join(line for line in lines if not line.startswith("Config search path"))


def is_command_line_error(error: BaseException) -> bool:
    """Whether Hydra raised ``error`` about the command line (its ``CompactHydraException`` family:
    composition, a missing config choice, override syntax). Matched by name: the library does not
    import Hydra."""
    return any(cls.__name__ == "CompactHydraException" and cls.__module__.startswith("hydra")
               for cls in type(error).__mro__)
