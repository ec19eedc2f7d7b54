"""``python -m hat.dashboard --project P [--group G]``: hat's W&B workspace and sweep reports as code.

:mod:`~hat.dashboard.panels` lists the panels once; :mod:`~hat.dashboard.wandb_objects` turns them
into a W&B workspace and report, :mod:`~hat.dashboard.publish` saves those, and
:mod:`~hat.dashboard.preview` draws the same plots for one local run with PIL, naming the panels
the run leaves empty (:mod:`~hat.dashboard.coverage`). :mod:`~hat.dashboard.sweeps` finds what a
group's sweep or Optuna study varies; :mod:`~hat.dashboard.cli` is the command.
"""


class DashboardError(Exception):
    """A failure the command reports as one line on stderr, with exit status 2."""
