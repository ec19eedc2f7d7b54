"""Stop at a safe point when asked to (a scheduler's warning, a time limit, Ctrl-C), with ``last`` written.

Stop signals: SIGTERM (``kill``, ``timeout``, torchrun stopping its workers, SLURM at a time
limit), SIGUSR1 and SIGUSR2 (what SLURM's ``--signal`` and submitit send before a time limit;
``$SUBMITIT_PREEMPT_SIGNAL`` names submitit's if it is another) and SIGINT (Ctrl-C). While
:class:`PreemptionSignals` is active, a stop signal only records that the run should stop; the
training loop checks :attr:`PreemptionSignals.requested` after every optimizer step, writes
``last`` and raises :class:`Preempted`, which the entry point turns into exit status
:data:`EXIT_PREEMPTED` (75, EX_TEMPFAIL: "try again") or, inside a submitit job, into submitit's
own requeue. Scoring (validation, the final test) holds no training state, so inside
:meth:`PreemptionSignals.interruptible` a signal stops it at once with :class:`StopRequested`.
Repeated signals are acknowledged and do not interrupt the checkpoint being written, and once the
run leaves with ``last`` written they are ignored (:meth:`PreemptionSignals.ignore_until_exit`).

DataLoader workers would be processes of the same group, so a signal sent to the group (a
terminal's Ctrl-C, ``kill -- -PGID``, GNU ``timeout``) would kill them and the run with them:
they leave the group and ignore the stop signals (:func:`ignore_stop_signals`, their
``worker_init_fn``), and are shut down by the main process, which
:func:`iterate_workers_safely` keeps from being interrupted while it forks them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading

log = logging.getLogger(__name__)

EXIT_PREEMPTED = 75
SUBMITIT_SIGNAL_VARIABLE = "SUBMITIT_PREEMPT_SIGNAL"


def _signal_named(name: str) -> signal.Signals:
    """``USR2`` or ``SIGUSR2`` as a signal; an unknown name is an error naming where it came from."""
    full = name if name.startswith("SIG") else f"SIG{name}"
    try:
        return signal.Signals[full]
    except KeyError:
        raise ValueError(f"${SUBMITIT_SIGNAL_VARIABLE}={name!r} is not a signal name (e.g. USR2 or SIGUSR1)") from None


def requeue_signal() -> signal.Signals:
    """The signal submitit asks SLURM to send before a time limit (``$SUBMITIT_PREEMPT_SIGNAL``, default USR2)."""
    return _signal_named(os.environ.get(SUBMITIT_SIGNAL_VARIABLE, "USR2"))


def stop_signals() -> tuple[signal.Signals, ...]:
    """Every signal that asks a run to stop, submitit's preemption signal included."""
    names = ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2")
    found = [signal.Signals[name] for name in names if hasattr(signal, name)]
    extra = requeue_signal()
    return tuple(found + ([extra] if extra not in found else []))


def in_submitit_job() -> bool:
    """True inside a job that submitit started (Hydra's submitit launcher)."""
    return "SUBMITIT_EXECUTOR" in os.environ


def ignore_stop_signals(worker_id: int = 0) -> None:
    """``worker_init_fn`` of every DataLoader: the main process alone decides when the run stops and
    shuts its workers down, so a worker leaves the parent's process group (signals sent to the
    group: a terminal's Ctrl-C, ``kill -- -PGID``, GNU ``timeout``, do not reach it) and ignores
    the stop signals sent to each process (SLURM signals every process of a job step). SIGTERM
    keeps torch's worker handler, which ends the worker quietly when the main process sends it at
    shutdown. The worker was forked with stop signals blocked (:func:`stop_signals_blocked`): a
    SIGTERM that reached it meanwhile is consumed before they are unblocked."""
    os.setpgid(0, 0)
    for signum in stop_signals():
        if signum != signal.SIGTERM:
            signal.signal(signum, signal.SIG_IGN)
    if signal.SIGTERM in signal.sigpending():
        signal.sigtimedwait([signal.SIGTERM], 0)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals())


@contextlib.contextmanager
def stop_signals_blocked():
    """Hold stop signals back (delivered when the block ends): processes forked here (DataLoader
    workers) start with them blocked, and :func:`ignore_stop_signals` ignores them before unblocking."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals())
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def iterate_workers_safely(loader):
    """``iter(loader)`` with its worker processes started while stop signals are held back, so that a
    signal sent to the process group in that instant cannot reach a worker before it ignores it."""
    with stop_signals_blocked():
        return iter(loader)


class Preempted(Exception):
    """The run stopped on a signal after writing ``last`` at optimizer step ``step``."""

    def __init__(self, signal_name: str, step: int, signum: int | None = None) -> None:
        super().__init__(f"interrupted by {signal_name} at step {step}; `last` is written, resume with resume=auto")
        self.signal_name = signal_name
        self.step = step
        self.signum = signum


class StopRequested(Exception):
    """A stop signal arrived inside :meth:`PreemptionSignals.interruptible`."""


class PreemptionSignals:
    """While active, stop signals only record that the run should stop; the old handlers come back on exit.

    Handlers can only be installed from the main thread; elsewhere (e.g. a test runner's worker
    thread) this does nothing and :attr:`requested` stays ``None``.
    """

    def __init__(self) -> None:
        self.requested: str | None = None
        self.signum: int | None = None
        self._interruptible = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.requested is None:
            self.requested, self.signum = name, signum
            log.warning("received %s: stopping at the next safe point, writing `last`, then exiting", name)
        else:
            log.warning("received %s while already stopping on %s: `last` is being written", name, self.requested)
        if self._interruptible:
            self._interruptible = False
            raise StopRequested(name)

    @contextlib.contextmanager
    def interruptible(self):
        """A block (scoring, which changes no training state) that a stop signal ends at once with
        :class:`StopRequested`; entered with a stop already requested, it raises straight away."""
        if self.requested is not None:
            raise StopRequested(self.requested)
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False

    def __enter__(self) -> PreemptionSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in stop_signals():
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self.restore()

    def restore(self) -> None:
        """Put the handlers found on entry back (once; leaving the block afterwards changes nothing)."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def ignore_until_exit(self) -> None:
        """For a process leaving with ``last`` written: ignore the stop signals from now on, block
        left included, so that a repeated signal (a scheduler's second SIGTERM, a second Ctrl-C)
        arriving while the interpreter shuts down cannot turn exit status 75 into death by signal."""
        for signum in self._previous:
            signal.signal(signum, signal.SIG_IGN)
        self._previous.clear()


def requeue_through_submitit(stop: Preempted) -> None:
    """Inside a submitit job (:func:`in_submitit_job`, the caller's check) stopped by submitit's
    preemption signal, with ``last`` written and the handlers restored: hand the signal to
    submitit's own handler, which pickles the same call (same overrides, same run folder) for the
    requeued job, runs ``scontrol requeue`` and exits. The requeued job continues from ``last``
    (``hardware=slurm`` sets ``resume: auto``). Returns when another signal stopped the job, or on a
    rank other than 0 (submitit requeues from rank 0)."""
    if stop.signum == requeue_signal():
        log.warning("handing %s to submitit to requeue this job", stop.signal_name)
        signal.raise_signal(stop.signum)
