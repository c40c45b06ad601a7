"""Data-parallel training with ``torch.distributed`` (DDP), launched by ``torchrun`` inside one job.

Every rank draws the same sample order and augmentation from the run's seeds, trains on its
contiguous share of each global batch and the gradients are averaged with weights that make the
step the single-process one (:mod:`pathologies.training.step`). Rank 0 alone evaluates, saves the
resume state and writes the outputs; the other ranks wait for it. Without ``torchrun``
(``WORLD_SIZE`` unset or 1) nothing here starts a process group.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import UserError

# rank 0 evaluates every dumped split after each epoch while the others wait at a barrier
TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of one training run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, start: int, stop: int) -> range:
        """This rank's contiguous share of rows ``start..stop`` (the first ``n % size`` ranks get one more)."""
        n = stop - start
        base, extra = divmod(n, self.size)
        begin = start + self.rank * base + min(self.rank, extra)
        return range(begin, begin + base + (self.rank < extra))

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """Sum of ``value`` over the ranks (a copy; ``value`` itself is unchanged)."""
        if self.size == 1:
            return value
        total = value.detach().clone()
        dist.all_reduce(total)
        return total

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether ``flag`` is true on any rank (every rank gets the same answer)."""
        if self.size == 1:
            return flag
        return bool(self.sum(torch.tensor([int(flag)], device=device)).item())


def init_world(device: torch.device) -> tuple[World, torch.device]:
    """The world ``torchrun`` set up in the environment, with its process group started, and this rank's device.

    On CUDA each rank takes GPU ``LOCAL_RANK`` and the NCCL backend; on CPU, gloo.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"training rank {rank} wants GPU {local_rank} but this node has "
                            f"{torch.cuda.device_count()}; ask for as many GPUs as the run's recipe key gpus")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT,
                                **({"device_id": device} if device.type == "cuda" else {}))
    return World(rank, size, local_rank), device


def wrap(model: torch.nn.Module, world: World, device: torch.device, sync_batchnorm: bool = False) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when there are several ranks (itself otherwise).

    ``sync_batchnorm`` (CUDA only) computes batch-norm statistics over the whole global batch
    instead of each rank's share.
    """
    if world.size == 1:
        return model
    if sync_batchnorm and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside a DDP wrapper (what evaluation and checkpoints use)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def finish(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()
