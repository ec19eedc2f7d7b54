"""torch.distributed for the loop: process group from torchrun's environment, gathers, rank-0 decisions.

A run started by ``torchrun`` has ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in its environment;
anything else is a single process and every helper here is then the identity.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn


class CollectiveTimeout(RuntimeError):
    """A collective operation waited longer than ``hardware.dist_timeout`` for the other processes."""


def timeout_error(error: RuntimeError, info: Distributed, timeout_s: float) -> CollectiveTimeout | None:
    """The :class:`CollectiveTimeout` that ``error`` (raised by a collective) stands for, or None when
    it is not a timeout: the message names the setting, what usually causes it, and the backend's words."""
    if not info.enabled or "timed out" not in str(error).lower():
        return None
    detail = str(error).strip().splitlines()[-1]
    return CollectiveTimeout(
        f"process {info.rank} of {info.world_size} waited longer than hardware.dist_timeout={timeout_s:g} s for the "
        f"others in a collective operation (one of them stopped, hung or died): {detail}"
    )


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def from_environment() -> Distributed:
    """The rank, world size and local rank torchrun set (or SLURM's, for tasks started by Hydra's
    submitit launcher, exported in torchrun's names first), or a single process."""
    if "WORLD_SIZE" not in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        try:
            from submitit.helpers import TorchDistributedEnvironment
        except ModuleNotFoundError as error:
            from hat.extras import install_hint

            raise ImportError(
                f"a SLURM job of {os.environ['SLURM_NTASKS']} tasks reads its ranks with submitit, which is not "
                f"installed: {install_hint('slurm')}"
            ) from error

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    return Distributed(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def init_process_group(info: Distributed, device_type: str, timeout_s: float = 1800.0) -> None:
    """Join the process group (NCCL on GPUs, gloo on the CPU) unless single-process or already joined.

    ``timeout_s`` (``hardware.dist_timeout``) bounds how long joining and every collective wait for
    the other processes, so a stopped or hung process ends the run with an error instead of
    blocking the others indefinitely.
    """
    if info.enabled and not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s))


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0, in rank order, keeping the autograd graph.

    The backward sends each rank the gradient of its own slice summed over ranks, so a loss that
    every rank computes on the gathered batch, averaged by DDP, has the gradient of one process
    holding the whole batch.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return torch.cat(dist_fn.all_gather(x), dim=0)


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (same shape on every rank) from every rank along dim 0, without gradient."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def agree(flags: list[bool], device: torch.device) -> list[bool]:
    """Each flag true on every rank when it is true on any rank (e.g. "a signal arrived: stop now"),
    in one exchange; the flags themselves in a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(flags)
    value = torch.tensor([int(flag) for flag in flags], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return [bool(v) for v in value.tolist()]


def gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    objects = [None] * dist.get_world_size()
    dist.all_gather_object(objects, obj)
    return objects


def shutdown_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def run_stamp() -> str:
    """``YYYY-MM-DD/HH-MM-SS`` naming a run's directory. Under torchrun every local rank takes the
    launcher's start time, so all of them land in the same folder; elsewhere it is now."""
    import time

    started = time.time()
    if from_environment().enabled:
        started = _parent_start_time() or started
    return time.strftime("%Y-%m-%d/%H-%M-%S", time.localtime(started))


def _parent_start_time() -> float | None:
    """Wall-clock start of the parent process (the torchrun agent), from /proc; None elsewhere."""
    try:
        boot = next(float(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime"))
        fields = open(f"/proc/{os.getppid()}/stat").read().rsplit(")", 1)[1].split()
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, StopIteration, IndexError):
        return None
