# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/13-distributed.md
"""Data-parallel training under torchrun with DistributedDataParallel (chapter 13)."""

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

from tinytransformer.devices import select_device


@dataclass(frozen=True)
class Distributed:
    """Where this process stands in the job.

    Attributes:
        rank: This process's index in the job, from 0.
        world_size: Number of processes in the job.
        local_rank: This process's index on its machine (selects its GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Whether there is more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process logs, samples and writes checkpoints (rank 0)."""
        return self.rank == 0


def init_distributed(
    device_name: str = "auto", timeout_seconds: float = 600.0
) -> tuple[Distributed, torch.device]:
    """Join the process group that ``torchrun`` set up, or run alone when there is none.

    Args:
        device_name: As for [`select_device`][tinytransformer.devices.select_device];
            under torchrun a CUDA device becomes ``cuda:LOCAL_RANK``.
        timeout_seconds: How long a collective may wait for the other ranks before
            failing, so that a rank that died brings the job down with an error instead
            of a hang.

    Returns:
        ``(distributed, device)``.

    Raises:
        ValueError: If torchrun's environment is incomplete or the device cannot be used
            this way.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = select_device(device_name)
    if world_size == 1:
        return Distributed(), device
    missing = [
        name
        for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
        if name not in os.environ
    ]
    if missing:
        raise ValueError(
            f"WORLD_SIZE={world_size} but {', '.join(missing)} not set; launch with"
            " torchrun"
        )
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if device.type == "mps":
        raise ValueError(
            "distributed training on MPS is not supported; use --device cpu or cuda"
        )
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend,
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=timeout_seconds),
    )
    return Distributed(rank, world_size, local_rank), device


def all_reduce_mean(tensor: Tensor, distributed: Distributed) -> Tensor:
    """The mean of ``tensor`` over all ranks (the tensor itself when running alone)."""
    if not distributed.enabled:
        return tensor
    total = tensor.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / distributed.world_size


def any_rank(flag: int, distributed: Distributed, device: torch.device) -> int:
    """The largest ``flag`` over all ranks: non-zero if any rank raised it."""
    if not distributed.enabled:
        return flag
    value = torch.tensor([flag], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return int(value.item())


def shutdown(distributed: Distributed) -> None:
    """Leave the process group."""
    if distributed.enabled and dist.is_initialized():
        dist.destroy_process_group()
