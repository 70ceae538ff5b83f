"""Multi-process training through ``torchrun`` (DDP): gloo on CPU, NCCL on CUDA.

``torchrun --nproc_per_node N --no-python knowledgesam train --config FILE`` sets RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT; :func:`init_distributed` reads them, so the same command runs
single-process without torchrun. Multi-node works the same way (``torchrun --nnodes ... --rdzv-endpoint``).

Rules that keep ranks consistent: every rank builds the same model from the same seed (so frozen weights
agree); each rank samples its own pairs from a rank-offset seed (the infinite-sampler equivalent of
``DistributedSampler`` sharding); validation items are split ``items[rank::world]`` and their Dice sums
all-reduced; only rank 0 writes logs, checkpoints and the final model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Sequence, TypeVar

import torch
import torch.distributed as dist

__all__ = ["DistContext", "init_distributed", "shutdown", "pick_device", "shard", "all_reduce_sum",
           "all_gather_objects", "broadcast_object", "barrier"]

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None  # None: single process, no process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """'auto' → CUDA (the local rank's GPU) when available, else CPU; 'cuda' → the local rank's GPU."""
    if preference == "cpu":
        return torch.device("cpu")
    if preference == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    if preference in ("auto", "cuda"):
        if not torch.cuda.is_available():
            from ..errors import KnowledgeSAMError

            raise KnowledgeSAMError("run.device is 'cuda' but no CUDA device is available")
        return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return torch.device(preference)


def init_distributed(device_preference: str = "auto", timeout_s: float = 1800.0) -> DistContext:
    """Join the torchrun job described by the environment (or run alone when WORLD_SIZE is unset/1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_preference, local_rank)
    if world <= 1:
        return DistContext(0, 1, 0, device, None)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s))
    return DistContext(rank, world, local_rank, device, backend)


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def shard(items: Sequence[T], ctx: DistContext) -> list[T]:
    """This rank's share of a list (``items[rank::world]``): every item goes to exactly one rank."""
    return list(items[ctx.rank::ctx.world_size])


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum a tensor over ranks (in place on a copy); identity in a single process."""
    if not ctx.distributed:
        return tensor
    out = tensor.clone().to(ctx.device)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(tensor.device)


def all_gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()
