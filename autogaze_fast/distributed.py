"""Joining a ``torchrun`` job, written once for every job that runs on several processes.

``init_distributed()`` joins torchrun's process group when ``WORLD_SIZE > 1`` (gloo on CPU, NCCL on
CUDA, each rank on GPU ``LOCAL_RANK``), reuses a group someone else already started, and is a
no-op for a single process. The returned :class:`DistContext` carries the rank, the world size,
the local rank and the device, and the collectives the jobs need (each a no-op on one process)::

    ctx = init_distributed(device)
    try:
        plan = ctx.broadcast(plan if ctx.rank == 0 else None)
        results = ctx.gather(mine)
    finally:
        ctx.close()
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from autogaze_fast.devices import default_device


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job: ``rank`` of ``world``, GPU ``local_rank`` on its node, its ``device``.

    ``owns_group``: :func:`init_distributed` started the process group (so :meth:`close` ends it).
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s ``obj`` (any picklable object) on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank (``world`` items)."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the ranks, in place (and returned)."""
        if self.distributed:
            dist.all_reduce(t)
        return t

    def all_mean(self, values: dict[str, float]) -> dict[str, float]:
        """Each value averaged over the ranks (every rank must give the same keys)."""
        if not self.distributed or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return dict(zip(keys, (t / self.world).tolist()))

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        """End the process group if :func:`init_distributed` started it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device: torch.device | str | None = None,
                     timeout: datetime.timedelta = datetime.timedelta(hours=2)) -> DistContext:
    """Join the torchrun job if there is one; else a single process.

    Args:
        device: where this process computes (default :func:`~autogaze_fast.devices.default_device`);
            a CUDA device becomes ``cuda:LOCAL_RANK`` and the current CUDA device.
        timeout: how long a collective may wait for the slowest rank.
    Returns:
        :class:`DistContext` (``world == 1`` without torchrun).
    """
    device = torch.device(device) if device is not None else default_device()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if dist.is_available() and dist.is_initialized():
        return DistContext(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local, device=device)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistContext(local_rank=local, device=device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    return DistContext(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local, device=device,
                       owns_group=True)
