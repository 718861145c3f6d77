"""Process-group setup for DDP under torchrun (nccl on CUDA, gloo on CPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

# shared with planning; still importable from here
from ttrl.devices import resolve_device


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits: its rank among ``world_size`` and the device it trains on."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 owns the run dir, the logs and the checkpoints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """True when torchrun started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    """True for a single process and for rank 0 under torchrun (read from the environment)."""
    return int(os.environ.get("RANK", "0")) == 0


def init_distributed(device_choice: str) -> DistributedContext:
    """Join the torchrun process group if there is one, else a single-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_choice, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(rank, local_rank, world_size, device)


def shutdown_distributed(ctx: DistributedContext) -> None:
    """Leave the process group (a no-op for one process)."""
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def any_rank(flag: bool, ctx: DistributedContext) -> bool:
    """True on every rank if ``flag`` is true on any rank (so all ranks stop at the same step)."""
    if not ctx.enabled:
        return flag
    value = torch.tensor([float(flag)], device=ctx.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def gather_to_all(obj: Any, ctx: DistributedContext) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not ctx.enabled:
        return [obj]
    objects: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(objects, obj)
    return objects
