"""Data-parallel runs on torch.distributed (``torchrun`` or ``accelerate launch``): each rank reads its shard of
the inputs on its own device, the scorer states go to every rank, and rank 0 merges them and writes the run."""

from __future__ import annotations

import os
from typing import Any


def world() -> tuple[int, int] | None:
    """``(rank, world size)`` when this process is one of several started by a launcher, else None."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return None
    return int(os.environ.get("RANK", "0")), size


def start(device: str | None) -> tuple[str | None, str]:
    """Join the process group (gloo on CPU, NCCL on CUDA); returns this rank's device and the backend."""
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return device, backend


def everyone(part: Any) -> list:
    """Every rank's ``part``, in rank order, on every rank (a rank that failed sends its error instead, so
    that no rank waits for one that will not come)."""
    import torch.distributed as dist

    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, part)
    return out


def stop() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
