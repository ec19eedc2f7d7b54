"""Coloured console logs: on a terminal or when forced, never with NO_COLOR, and the record stays plain."""

from __future__ import annotations

import logging

from hat.log_format import ColourFormatter, wants_colour

PATTERN = "[%(name)s][%(levelname)s] - %(message)s"


def record(level=logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord("hat.engine", level, __file__, 1, "resumed at step %d", (7,), None)


def test_forced_colour_marks_the_level_and_leaves_the_record_for_other_handlers(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("FORCE_COLOR", "1")
    line = record()
    coloured = ColourFormatter(PATTERN).format(line)
    assert "\033[33mWARNING\033[0m" in coloured and coloured.endswith("resumed at step 7")
    assert logging.Formatter(PATTERN).format(line) == "[hat.engine][WARNING] - resumed at step 7"  # the file's line


def test_no_color_wins_and_a_pipe_gets_plain_text(monkeypatch, tmp_path):
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert ColourFormatter(PATTERN).format(record(logging.INFO)) == "[hat.engine][INFO] - resumed at step 7"
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.delenv("FORCE_COLOR")
    with open(tmp_path / "log.txt", "w") as not_a_terminal:
        assert not wants_colour(not_a_terminal)
