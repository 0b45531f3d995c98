"""Multi-process (DDP) helpers: the same ``df2am train`` command runs on one process or many.

Launched with ``torchrun --nproc_per_node=K -m df2am.cli train CONFIG ...``, each process
finds ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in its environment;
:func:`init_distributed` then joins the process group (backend ``nccl`` on CUDA, ``gloo`` on
the CPU). Without those variables everything runs in one process and the functions here are
no-ops.

Only rank 0 writes logs, checkpoints and evaluation results; the identity sampler hands each
rank a disjoint share of every epoch's identities (``rank``/``world_size``).

Usage::

    ctx = init_distributed("cpu")          # DistContext(rank, world_size, local_rank, ...)
    ...
    barrier(ctx)
    shutdown(ctx)
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from df2am.errors import ConfigError

__all__ = [
    "DistContext",
    "env_world",
    "init_distributed",
    "barrier",
    "shutdown",
    "broadcast_buffers",
    "state_digest",
    "gather_objects",
]

logger = logging.getLogger(__name__)


@dataclass
class DistContext:
    """Where this process stands: ``rank`` of ``world_size``; ``initialized`` when this module
    created the process group (and so must destroy it)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's variables ((0, 1, 0) without them)."""

    def _int(name: str, default: int) -> int:
        raw = os.environ.get(name)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"environment variable {name}={raw!r}: expected an integer") from None

    return _int("RANK", 0), _int("WORLD_SIZE", 1), _int("LOCAL_RANK", 0)


def init_distributed(device_type: str) -> DistContext:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (nccl on CUDA, gloo on CPU)."""
    rank, world_size, local_rank = env_world()
    if world_size <= 1:
        return DistContext()
    if dist.is_initialized():  # the caller set it up (e.g. a test harness)
        return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, initialized=False)
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        backend=backend,
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(minutes=30),
    )
    logger.info(
        "DDP: rank %d/%d (local rank %d), backend %s", rank, world_size, local_rank, backend
    )
    return DistContext(rank, world_size, local_rank, initialized=True)


def barrier(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if ctx.initialized and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_buffers(model: nn.Module, ctx: DistContext, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BN running statistics) to every rank.

    DDP broadcasts buffers at the *start* of each forward, so after the last step each rank's
    BN statistics carry its own last batch; this makes the final models identical.
    """
    if not ctx.distributed:
        return
    for buf in model.buffers():
        dist.broadcast(buf.data, src=src)


def state_digest(model: nn.Module) -> str:
    """SHA-256 of the model's state dict (names, dtypes, shapes and bytes), for rank checks."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def gather_objects(obj: object, ctx: DistContext) -> list[object]:
    """All ranks' ``obj`` in rank order (``[obj]`` on one process)."""
    if not ctx.distributed:
        return [obj]
    out: list[object] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out
