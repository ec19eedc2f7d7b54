"""Coloured console logs: the level and the logger's name stand out when the console is a terminal.

Used by conf/hydra/job_logging/main_process.yaml for the console only (the log file stays plain).
Colour is on when standard output is a terminal, and can be forced with ``FORCE_COLOR=1`` or
turned off with ``NO_COLOR=1`` (https://no-color.org).
"""

from __future__ import annotations

import logging
import os
import sys

RESET = "\033[0m"
DIM = "\033[2m"
LEVEL_COLOURS = {
    logging.DEBUG: "\033[36m",  # cyan
    logging.INFO: "\033[32m",  # green
    logging.WARNING: "\033[33m",  # yellow
    logging.ERROR: "\033[31m",  # red
    logging.CRITICAL: "\033[1;31m",  # bold red
}


def wants_colour(stream=None) -> bool:
    """Whether to colour what goes to ``stream`` (default: standard output): ``NO_COLOR`` wins,
    then ``FORCE_COLOR``, then whether the stream is a terminal."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    stream = stream or sys.stdout
    return hasattr(stream, "isatty") and stream.isatty()


class ColourFormatter(logging.Formatter):
    """A :class:`logging.Formatter` of ``format`` that colours the level name and dims the logger name
    when :func:`wants_colour` says so (decided once, when the formatter is made)."""

    def __init__(self, format: str, datefmt: str | None = None) -> None:
        """``format`` and ``datefmt`` as logging's dict config names them (``logging.config.dictConfig``)."""
        super().__init__(format, datefmt)
        self.colour = wants_colour()

    def format(self, record: logging.LogRecord) -> str:
        if not self.colour:
            return super().format(record)
        plain_level, plain_name = record.levelname, record.name
        record.levelname = f"{LEVEL_COLOURS.get(record.levelno, '')}{plain_level}{RESET}"
        record.name = f"{DIM}{plain_name}{RESET}"
        try:
            return super().format(record)
        finally:
            record.levelname, record.name = plain_level, plain_name
