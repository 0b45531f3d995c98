"""Device choice, mixed precision and determinism helpers of the training engine.

``train.device``: ``auto`` picks CUDA when available, else the CPU; ``cuda`` without a GPU is
a :class:`~df2am.errors.ConfigError` (never a silent CPU fallback).

``train.precision``:

* ``fp32`` — no autocast.
* ``bf16`` — ``torch.autocast(device, torch.bfloat16)`` on CUDA or CPU; no gradient scaler
  (bf16 has fp32's exponent range).
* ``fp16`` — CUDA only (CPU fp16 autocast is slow and unsupported for many ops: ConfigError),
  with a ``torch.amp.GradScaler`` against gradient underflow.

Usage::

    device = resolve_device(cfg.train.device, local_rank=0)
    with autocast_context(device, cfg.train.precision):
        out = model(rgb, ir)
    scaler = make_grad_scaler(device, cfg.train.precision)   # None unless fp16
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

from df2am.errors import ConfigError

__all__ = [
    "resolve_device",
    "autocast_dtype",
    "autocast_context",
    "make_grad_scaler",
    "seed_everything",
    "configure_determinism",
]


def resolve_device(
    name: str | torch.device, local_rank: int = 0, key: str = "train.device"
) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` (or a ``torch.device``) → a concrete device.

    Plain ``cuda`` means ``cuda:<local_rank>`` (one GPU per torchrun process). ``key`` names the
    setting in error messages (``train.device`` for training, ``--device`` for evaluation).
    """
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"{key}={name} but CUDA is not available on this machine "
                f"(use {key}=cpu or {key}=auto)"
            )
        index = local_rank if name == "cuda" else name.split(":", 1)[1]
        if not str(index).isdigit() or int(index) >= torch.cuda.device_count():
            raise ConfigError(
                f"{key}={name} (local rank {local_rank}): only {torch.cuda.device_count()} "
                "CUDA device(s) are visible"
            )
        return torch.device("cuda", int(index))
    raise ConfigError(f"{key}: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None = fp32, no autocast)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise ConfigError(
                "train.precision=fp16 needs a CUDA device; on the CPU use bf16 or fp32"
            )
        return torch.float16
    raise ConfigError(
        f"train.precision: expected one of ['fp32', 'bf16', 'fp16'], got {precision!r}"
    )


@contextlib.contextmanager
def autocast_context(device: torch.device, precision: str) -> Iterator[None]:
    """``torch.autocast`` for bf16/fp16, a no-op for fp32."""
    dtype = autocast_dtype(device, precision)
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def make_grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """A ``GradScaler`` for fp16 (on CUDA), None otherwise."""
    if autocast_dtype(device, precision) is torch.float16:
        return torch.amp.GradScaler(device.type)
    return None


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (all devices) global RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_determinism(enabled: bool) -> None:
    """``train.deterministic``: deterministic kernels (errors on ops that have none).

    cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG`` for deterministic matmuls; it is set here when the
    user has not set it (it must be set before the first cuBLAS call to take effect).
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        # Fixed input size (256×128): let cuDNN pick the fastest convolution algorithms.
        torch.backends.cudnn.benchmark = True
