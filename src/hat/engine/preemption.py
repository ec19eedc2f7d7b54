"""Stop at a safe point when asked to (a scheduler's warning, a time limit, Ctrl-C), with ``last`` written.

Stop signals: SIGTERM (``kill``, ``timeout``, torchrun stopping its workers, SLURM at a time
limit, a requeue, a preemption or ``scancel``), SIGHUP (a closed terminal, a dropped SSH session),
SIGUSR1 and SIGUSR2 (what SLURM's ``--signal`` and submitit send before a time limit;
``$SUBMITIT_PREEMPT_SIGNAL`` names submitit's if it is another) and SIGINT (Ctrl-C). While
:class:`PreemptionSignals` is active, a stop signal only records that the run should stop; the
training loop checks :attr:`PreemptionSignals.requested` after every optimizer step, writes
``last`` and raises :class:`Preempted`, which the entry point turns into exit status
:data:`EXIT_PREEMPTED` (75, EX_TEMPFAIL: "try again") or, inside a submitit job, into a requeue
(:mod:`hat.engine.slurm_job`). Scoring (validation, the final test) holds no training state, so
inside :meth:`PreemptionSignals.interruptible` a signal stops it at once with :class:`StopRequested`.
Repeated signals are acknowledged and do not interrupt the checkpoint being written, and once the
run leaves with ``last`` written they are ignored (:meth:`PreemptionSignals.ignore_until_exit`).

DataLoader workers never stop on their own: the main process alone decides, writes ``last`` and
shuts them down. A signal can reach a worker two ways: through the process group (a terminal's
Ctrl-C, ``kill -- -PGID``, GNU ``timeout``), which workers leave, and sent to each process by pid
(SLURM signals every process of a job step, workers included), which they ignore; SIGTERM alone
still ends a worker when its parent sends it (torch's shutdown of a worker that does not answer).
:func:`ignore_stop_signals` (their ``worker_init_fn``) sets this up, and
:func:`iterate_workers_safely` forks them with the stop signals held back, so that none arrives
before it has.
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
    names = ("SIGTERM", "SIGHUP", "SIGINT", "SIGUSR1", "SIGUSR2")
    found = [signal.Signals[name] for name in names if hasattr(signal, name)]
    extra = requeue_signal()
    return tuple(found + ([extra] if extra not in found else []))


def in_submitit_job() -> bool:
    """True inside a job that submitit started (Hydra's submitit launcher)."""
    return "SUBMITIT_EXECUTOR" in os.environ


def ignore_stop_signals(worker_id: int = 0) -> None:
    """``worker_init_fn`` of every DataLoader: the worker leaves the parent's process group and ignores
    every stop signal, except a SIGTERM that its parent sends (see the module doc).

    The worker was forked with stop signals blocked (:func:`stop_signals_blocked`). SIGTERM stays
    blocked in every thread and a watcher thread takes each one with ``sigwaitinfo``, which tells
    who sent it: from the parent the worker exits at once, from anyone else it is dropped. (A
    handler cannot tell senders apart, and an ignored SIGTERM could not be taken at all: the kernel
    discards it.) The others are ignored and unblocked; any of them already pending is discarded.
    """
    os.setpgid(0, 0)
    others = [signum for signum in stop_signals() if signum != signal.SIGTERM]
    for signum in others:
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _drop)  # torch's own handler would die of a stranger's SIGTERM
    threading.Thread(target=_exit_on_parents_sigterm, args=(os.getppid(),), daemon=True,
                     name="sigterm-from-parent").start()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, others)


def _drop(signum, frame) -> None:
    """A stop signal that reached a worker's main thread after all: nothing to do."""


def _exit_on_parents_sigterm(parent: int) -> None:
    """A worker's watcher thread: end the worker on its parent's SIGTERM, drop everyone else's."""
    while True:
        if signal.sigwaitinfo([signal.SIGTERM]).si_pid == parent:
            os._exit(0)


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
    """The run stopped on a signal after writing ``last`` at optimizer step ``step``; ``start_step``:
    the step this process started (or resumed) from, which tells how far it got before the signal."""

    def __init__(self, signal_name: str, step: int, signum: int | None = None, start_step: int = 0) -> None:
        super().__init__(f"interrupted by {signal_name} at step {step}; `last` is written, resume with resume=auto")
        self.signal_name = signal_name
        self.step = step
        self.signum = signum
        self.start_step = start_step

    def __reduce__(self):
        """Pickle by the constructor's arguments (submitit and Hydra ship the exception between
        processes; the default would call ``Preempted(message)``)."""
        return type(self), (self.signal_name, self.step, self.signum, self.start_step)


def _leave_hung_up_terminal(fds: list[int]) -> None:
    """After SIGHUP (the terminal closed): point ``fds`` (stdout and stderr where they were that
    terminal) at /dev/null, so that no progress bar, log line or exit message fails writing to it
    and the run still ends with ``last`` written and its exit status (the log file keeps every line)."""
    for fd in fds:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
        except OSError:
            continue


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
        self._terminal_fds: list[int] = []  # stdout, stderr: those that are a terminal on entry

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            _leave_hung_up_terminal(self._terminal_fds)
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
        self._terminal_fds = [fd for fd in (1, 2) if os.isatty(fd)]
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
