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
    with main_decides(ctx):                # checks only rank 0 makes; every rank learns the outcome
        if ctx.is_main:
            check_something()              # a Df2amError here is raised on every rank
    ...
    shutdown(ctx)

**Refusals reach every rank.** Work that rank 0 does alone (the run lock, the fresh/resume
checks, the train/test identity check, checkpoint writes, validation, the final test) runs
inside :func:`main_decides`: after the block rank 0 broadcasts its error (or nothing) and
every other rank raises the same :class:`~df2am.errors.Df2amError` subclass with the same
message, so ``torchrun`` sees every process exit with one message instead of ranks waiting at
a barrier until the process group's timeout (30 minutes).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import importlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from df2am.errors import ConfigError, Df2amError

__all__ = [
    "DistContext",
    "env_world",
    "init_distributed",
    "barrier",
    "shutdown",
    "broadcast_buffers",
    "state_digest",
    "gather_objects",
    "main_decides",
    "mean_over_ranks",
    "share_outcome",
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


def mean_over_ranks(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """``values`` averaged over the ranks (a copy; itself on one process)."""
    if not ctx.distributed or not dist.is_initialized():
        return values
    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / ctx.world_size


def _error_from(payload: dict[str, str]) -> Exception:
    """The exception rank 0 raised, rebuilt on another rank: its own :class:`Df2amError`
    subclass when it has one (same message), else a :class:`Df2amError` naming its type."""
    try:
        cls = getattr(importlib.import_module(payload["module"]), payload["name"])
    except (ImportError, AttributeError):
        cls = None
    if isinstance(cls, type) and issubclass(cls, Df2amError):
        try:
            return cls(payload["message"])
        except TypeError:  # a subclass with another constructor
            pass
        return Df2amError(payload["message"])
    return Df2amError(f"rank 0 stopped with {payload['name']}: {payload['message']}")


def share_outcome(ctx: DistContext, error: BaseException | None) -> None:
    """Every rank learns whether rank 0's work failed; the ranks other than 0 raise its error.

    Rank 0 passes its exception (or None) and every rank calls this at the same point (it is a
    collective: a broadcast from rank 0). Rank 0 itself does not raise here: it re-raises its
    own exception (with its traceback) after the call. One process: nothing happens.
    """
    if not ctx.distributed or not dist.is_initialized():
        return
    payload: list[object] = [None]
    if ctx.is_main and error is not None:
        payload = [{"module": type(error).__module__, "name": type(error).__qualname__,
                    "message": str(error)}]
    dist.broadcast_object_list(payload, src=0)
    shared = payload[0]
    if shared is not None:
        # Every rank has the message before any exits (rank 0 exiting first could take the
        # rendezvous store down under a rank still reading).
        dist.barrier()
    if shared is not None and not ctx.is_main:
        logger.debug("rank %d: rank 0 refused: %s", ctx.rank, shared)
        raise _error_from(shared)  # type: ignore[arg-type]


@contextlib.contextmanager
def main_decides(ctx: DistContext) -> Iterator[None]:
    """A block of work that rank 0 does alone (the caller tests ``ctx.is_main`` inside): when
    it ends, rank 0's outcome is shared (:func:`share_outcome`), so a refusal on rank 0 stops
    every rank with the same message. Also a barrier: no rank leaves before rank 0 is done."""
    try:
        yield
    except Exception as exc:
        if ctx.is_main:
            share_outcome(ctx, exc)
        else:  # this rank failed by itself: still take part in rank 0's broadcast
            with contextlib.suppress(Exception):
                share_outcome(ctx, None)
        raise
    share_outcome(ctx, None)
