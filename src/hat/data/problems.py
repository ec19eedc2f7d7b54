"""The one error a dataset on disk fails with: every problem found, each naming its file.

Start-up checks collect problems instead of stopping at the first, so one run tells the user
everything to fix in their copy of the data.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_LISTED = 20


class DatasetError(ValueError):
    """Problems found in a dataset's files; ``problems`` holds them all, the message the first 20 and the count."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(format_problems(self.problems))

    def __reduce__(self):
        """Pickle by the problems (submitit and Hydra ship the error to a sweep's client); the default
        would rebuild it from its message, one problem per character."""
        return type(self), (self.problems,)


def format_problems(problems: Sequence[str]) -> str:
    """``"N problem(s) found in the dataset:"`` then one indented line per problem, at most ``MAX_LISTED``."""
    lines = [f"{len(problems)} problem(s) found in the dataset:", *problems[:MAX_LISTED]]
    if len(problems) > MAX_LISTED:
        lines.append(f"... and {len(problems) - MAX_LISTED} more")
    return "\n  ".join(lines)
