"""Which device a job runs on: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` → a ``torch.device``.

Every job asks the same rule (training, evaluation, extraction, the web app), so it sits
beside :mod:`df2am.config` rather than in one of them::

    from df2am.device import resolve_device

    device = resolve_device(cfg.train.device, local_rank=0)    # ConfigError: cuda without CUDA
    device = resolve_device("auto", key="--device")             # the CLI names its own option

``cuda`` without a GPU is a :class:`~df2am.errors.ConfigError` (never a silent CPU fallback).
"""

from __future__ import annotations

import torch

from df2am.errors import ConfigError

__all__ = ["resolve_device"]


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
