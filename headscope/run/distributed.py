"""Data-parallel runs on torch.distributed (``torchrun`` or ``accelerate launch``): each rank reads its shard of
the inputs on its own device, the scorer states go to every rank, and rank 0 merges them and writes the run."""

from __future__ import annotations

import os
from typing import Any

from ..errors import HeadscopeError


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


class RankFailed(HeadscopeError):
    """Another rank's bad input stopped this rank (rank 0 says why)."""


def run_rank(model: Any, data: Any, cfg: Any, ranks: tuple[int, int], *, command: str, select_on: Any = None,
             progress: Any = None, bar: Any = None, checkpoint: Any = None) -> Any:
    """One rank of a launched run: its shard of the inputs, on its own device; every rank's scorer states go to
    every rank, and rank 0 merges them into the run's result (the other ranks return None). A rank's bad input
    stops every rank: rank 0 raises it as a HeadscopeError, the others raise RankFailed. ``bar``: a context
    that rank 0 shows its progress in."""
    import contextlib
    import dataclasses
    import time

    from ..models.loading import load_model
    from .analyze import run_analysis
    from .shards import merge_parts, shard_parts
    from .state import RunState

    rank, size = ranks
    device, backend = start(cfg.device)
    try:
        run_config = dataclasses.replace(cfg, device=device)
        loaded = load_model(model, device=device, trust_remote_code=run_config.trust_remote_code,
                            part=run_config.part, dtype=run_config.dtype)
        with bar if rank == 0 and bar is not None else contextlib.nullcontext():
            state = RunState(shard=(rank, size), checkpoint=checkpoint, progress=progress if rank == 0 else None)
            result = run_analysis(loaded, data or None, run_config, state, select_on=select_on)
        part: tuple = ("ok", shard_parts(result, model=model, data=data, select_on=select_on, config=run_config,
                                         command=command), str(loaded.device), result.meta.seconds)
    except HeadscopeError as exc:
        part = ("error", f"rank {rank}: {exc}")
    started = time.perf_counter()
    parts = everyone(part)
    gathered = time.perf_counter() - started
    stop()
    failed = next((p[1] for p in parts if p[0] == "error"), None)
    if failed is not None:
        raise HeadscopeError(failed) if rank == 0 else RankFailed(failed)
    if rank != 0:
        return None
    started = time.perf_counter()
    merged = merge_parts([p[1] for p in parts], [f"rank {i}" for i in range(size)], model=loaded)
    merged.meta.distributed = {"world_size": size, "backend": backend, "devices": [p[2] for p in parts],
                                  "rank_seconds": [p[3] for p in parts], "gather_seconds": round(gathered, 3),
                                  "merge_seconds": round(time.perf_counter() - started, 3)}
    return merged
