"""How many threads a training or evaluation process computes with on the CPU (``hardware.threads``).

torch starts one intra-op thread per core of the machine (or ``OMP_NUM_THREADS`` of them) whatever
share of the machine the process was given: a SLURM task of 8 CPUs on a 64-core node, or one of 8
torchrun processes, runs 64 threads on its 8 cores, and the DataLoader workers compete for the
same cores. Oversubscribed threads wait for each other: a quickstart step on a busy 2-core machine
took 32 s with torch's default and 2.2 s with one thread per process.

What ``hardware.threads`` means:

- a positive integer: exactly that many threads, whatever the environment says;
- ``auto``: ``OMP_NUM_THREADS`` when the user set it, otherwise the rule below. Under torchrun
  with several processes a node, ``OMP_NUM_THREADS=1`` is what torchrun itself sets when the
  variable was unset; a child cannot tell it from a user's 1, so there the rule applies
  (``hardware.threads=1`` insists on one thread).

The rule (:func:`usable_cpus`, then :func:`choose_threads`):

1. The CPUs this process may run on: ``len(os.sched_getaffinity(0))`` (``os.cpu_count()`` where
   the platform has no affinity), at most ``SLURM_CPUS_PER_TASK`` when that is set.
2. Several processes on one node (``LOCAL_WORLD_SIZE`` > 1, set by torchrun and by the submitit
   launcher of ``hardware=slurm``) share what they were given. The affinity set is divided between
   them unless each process's own affinity was narrowed (it is a strict subset of its parent's, as
   srun's CPU binding or torchrun's NUMA binding leave it). ``SLURM_CPUS_PER_TASK`` is divided when
   torchrun started the processes (one SLURM task holds all of them), not when each process is a
   SLURM task of its own (the submitit launcher: the quota is already per process).
3. compute threads = max(1, usable CPUs - ``hardware.num_workers``): each DataLoader worker
   computes in one thread, because torch's worker loop calls ``torch.set_num_threads(1)`` in every
   worker it starts (``torch/utils/data/_utils/worker.py``, ``_worker_loop``), so the workers take
   a CPU each and the main process the rest, and at least one.

:func:`apply_threads` sets the count with ``torch.set_num_threads`` and logs one line with the
choice and the reason; :func:`hat.runtime.resolve_runtime` calls it once at the start of every
training and evaluation. Bad values (of ``hardware.threads``, ``SLURM_CPUS_PER_TASK``,
``OMP_NUM_THREADS``, ``LOCAL_WORLD_SIZE``) raise a :class:`hat.checks.ConfigError` that names
the setting or variable, the value and what is expected.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from hat.checks import ConfigError, show

log = logging.getLogger(__name__)

AUTO = "auto"
TORCHRUN_OMP_DEFAULT = "1"  # what torchrun puts in OMP_NUM_THREADS for several processes a node


def check_threads_setting(value) -> int | str:
    """``hardware.threads`` as given if valid: ``"auto"`` or a positive integer (not a bool, not a
    float); else a :class:`ConfigError` naming the key, the value and what is allowed."""
    if value == AUTO or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ConfigError(
        f"hardware.threads={show(value)} must be 'auto' or an integer >= 1 "
        f"(torch's compute threads in each training or evaluation process)"
    )


def _positive_env(name: str, what: str, environ) -> int | None:
    """The environment variable ``name`` as a positive integer, None when unset or empty; any other
    value is a :class:`ConfigError` naming the variable, its value and ``what`` it counts."""
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{name}={raw!r} in the environment must be a positive integer ({what})")
    return value


def _omp_threads(environ) -> int | None:
    """``OMP_NUM_THREADS`` as a count, None when unset; a list such as ``4,2`` (OpenMP's nested
    levels) counts by its first entry, the one torch's intra-op pool takes."""
    raw = environ.get("OMP_NUM_THREADS", "").strip()
    if not raw:
        return None
    first = raw.split(",")[0].strip()
    value = int(first) if first.isdigit() else 0
    if value < 1:
        raise ConfigError(f"OMP_NUM_THREADS={raw!r} in the environment must be a positive integer "
                          f"(the threads of each process; unset it to let hardware.threads=auto choose)")
    return value


def _under_torchrun(environ) -> bool:
    """Started by torchrun's elastic agent, which sets ``TORCHELASTIC_RUN_ID`` in its workers."""
    return bool(environ.get("TORCHELASTIC_RUN_ID"))


def _affinity(pid: int) -> set[int] | None:
    """The CPUs process ``pid`` (0: this one) may run on, None where that cannot be read."""
    try:
        return set(os.sched_getaffinity(pid))
    except (AttributeError, OSError):  # no sched_getaffinity (macOS, Windows), a parent gone or not ours
        return None


@dataclass(frozen=True)
class CpuShare:
    """The CPUs this process may compute on, and what set that number (for the log line)."""

    cpus: int
    reasons: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.cpus} CPU{'s' if self.cpus != 1 else ''} usable by this process ({'; '.join(self.reasons)})"


def usable_cpus(environ=None) -> CpuShare:
    """Steps 1 and 2 of the rule (module docstring): this process's CPUs from its affinity, capped
    by ``SLURM_CPUS_PER_TASK``, divided between the processes of the node that share them.
    ``environ``: the environment to read (default ``os.environ``)."""
    environ = os.environ if environ is None else environ
    own = _affinity(0)
    if own is not None:
        affinity, reasons = len(own), [f"affinity: {len(own)} of {os.cpu_count()} CPUs"]
    else:
        affinity, reasons = os.cpu_count() or 1, [f"os.cpu_count()={os.cpu_count()}, affinity unknown"]
    local = _positive_env("LOCAL_WORLD_SIZE", "the processes of the run on this node", environ) or 1
    if local > 1:
        parent = _affinity(os.getppid())
        narrowed = own is not None and parent is not None and own < parent
        if narrowed:
            reasons.append(f"narrowed for this process, one of LOCAL_WORLD_SIZE={local}")
        else:
            affinity = max(1, affinity // local)
            reasons.append(f"/ LOCAL_WORLD_SIZE={local} processes sharing them")
    cpus = affinity
    slurm = _positive_env("SLURM_CPUS_PER_TASK", "the CPUs SLURM gave each task", environ)
    if slurm is not None:
        shared_task = local > 1 and _under_torchrun(environ)
        quota = max(1, slurm // local) if shared_task else slurm
        cpus = min(cpus, quota)
        reasons.append(f"SLURM_CPUS_PER_TASK={slurm}" + (f" / {local} torchrun processes" if shared_task else ""))
    return CpuShare(cpus, tuple(reasons))


@dataclass(frozen=True)
class ThreadChoice:
    """The compute threads chosen for this process and why, as one log line says it."""

    threads: int
    reason: str

    def message(self) -> str:
        return f"compute threads: {self.threads} ({self.reason})"


def choose_threads(setting, num_workers: int, environ=None) -> ThreadChoice:
    """The compute threads for ``hardware.threads=setting`` in a process with ``num_workers``
    DataLoader workers (the contract is in the module docstring). Reads nothing but the
    environment (``environ``, default ``os.environ``) and the CPU affinity; sets nothing."""
    setting = check_threads_setting(setting)
    if setting != AUTO:
        return ThreadChoice(setting, f"hardware.threads={setting}")
    environ = os.environ if environ is None else environ
    omp = _omp_threads(environ)
    local = _positive_env("LOCAL_WORLD_SIZE", "the processes of the run on this node", environ) or 1
    torchrun_default = (_under_torchrun(environ) and local > 1
                        and environ.get("OMP_NUM_THREADS", "").strip() == TORCHRUN_OMP_DEFAULT)
    share = usable_cpus(environ)
    workers = f"{num_workers} loader worker{'s' if num_workers != 1 else ''}"
    if omp is not None and not torchrun_default:
        return ThreadChoice(omp, f"OMP_NUM_THREADS={omp} set in the environment; the rule would give "
                                 f"{max(1, share.cpus - num_workers)}: {share.describe()}, {workers}")
    note = ", OMP_NUM_THREADS=1 taken for torchrun's default" if torchrun_default else ""
    return ThreadChoice(max(1, share.cpus - num_workers), f"{share.describe()}, {workers}{note}")


def apply_threads(setting, num_workers: int, environ=None) -> ThreadChoice:
    """Choose (:func:`choose_threads`) and set this process's compute threads with
    ``torch.set_num_threads``; logs the choice and its reason in one info line."""
    import torch

    choice = choose_threads(setting, num_workers, environ)
    torch.set_num_threads(choice.threads)
    log.info(choice.message())
    return choice
