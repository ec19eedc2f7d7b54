"""Stop at a step boundary when the scheduler asks (SIGTERM, or SIGUSR1 as SLURM sends before a time limit).

The training loop checks :attr:`PreemptionSignals.requested` after every optimizer step; when it
is set the loop writes ``last`` and raises :class:`Preempted`, which the entry point turns into
exit status :data:`EXIT_PREEMPTED` (75, EX_TEMPFAIL: "try again") so that a wrapper can tell a
preemption from a crash and requeue the run with ``resume=auto``.
"""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)

EXIT_PREEMPTED = 75
SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name))


class Preempted(Exception):
    """The run stopped on a signal after writing ``last`` at optimizer step ``step``."""

    def __init__(self, signal_name: str, step: int) -> None:
        super().__init__(f"interrupted by {signal_name} at step {step}; `last` is written, resume with resume=auto")
        self.signal_name = signal_name
        self.step = step


class PreemptionSignals:
    """While active, SIGTERM/SIGUSR1 only record that the run should stop; the old handlers come back on exit.

    Handlers can only be installed from the main thread; elsewhere (e.g. a test runner's worker
    thread) this does nothing and :attr:`requested` stays ``None``.
    """

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        self.requested = signal.Signals(signum).name
        log.warning("received %s: stopping after the current step", self.requested)

    def __enter__(self) -> PreemptionSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
