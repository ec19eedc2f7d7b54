"""The README's commands, read as a newcomer runs them from the project root: what they write lands
in folders git ignores (runs/, multirun/, outputs/), never beside the code."""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest

from conftest import ROOT

# The arguments through which a command names what it writes.
WRITTEN_BY = {
    "export": re.compile(r"^export=(.+)$"),
    "run folder": re.compile(r"^hydra\.(?:run|sweep)\.dir=(.+)$"),
    "optuna study": re.compile(r"^hydra\.sweeper\.storage=sqlite:///(.+)$"),
}


def readme_commands() -> list[list[str]]:
    """Every command line of the README's ``bash`` blocks (continuations joined), split as a shell does."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [shlex.split(line, comments=True) for line in lines if line.strip() and not line.startswith("#")]


def written_paths(words: list[str]) -> list[str]:
    """The paths ``words`` (one command) writes to, by the conventions of this project's commands."""
    paths = [m[1] for word in words for pattern in WRITTEN_BY.values() if (m := pattern.match(word))]
    paths += [words[i + 1] for i, word in enumerate(words[:-1]) if word in (">", "--preview", "--out")]
    if words[:3] == ["python", "-m", "hat.data.split_folder"]:
        paths.append(words[3])
    return paths


def ignored_by_git(path: str) -> bool:
    check = subprocess.run(["git", "check-ignore", "--no-index", "-q", path], cwd=ROOT)
    return check.returncode == 0


def test_the_readme_names_what_its_commands_write():
    """The parser sees the README's writing commands (so the test below checks something)."""
    written = [path for words in readme_commands() for path in written_paths(words)]
    assert {"runs/qs", "runs/shapes_test", "runs/weights/hat_coco", "runs/levels.csv", "runs/dashboard.png",
            "runs/f30k.db"} <= set(written)


@pytest.mark.parametrize("words", readme_commands(), ids=lambda words: " ".join(words)[:70])
def test_a_readme_command_writes_only_into_ignored_folders(words):
    for path in written_paths(words):
        if path.startswith(("/", "~")):  # the user's own places
            continue
        assert ignored_by_git(path), f"{' '.join(words)} writes {path}, which git does not ignore"
