"""Device choice, mixed precision and determinism helpers of training.

``train.device``: ``auto`` picks CUDA when available, else the CPU; ``cuda`` without a GPU is
a :class:`~df2am.errors.ConfigError` (never a silent CPU fallback).

``train.precision``:

* ``fp32`` — no autocast.
* ``bf16`` — ``torch.autocast(device, torch.bfloat16)`` on CUDA or CPU; no gradient scaler
  (bf16 has fp32's exponent range).
* ``fp16`` — CUDA only (CPU fp16 autocast is slow and unsupported for many ops: ConfigError),
  with a ``torch.amp.GradScaler`` against gradient underflow.
* ``auto`` — what the device runs fastest (:func:`resolve_precision`): on CUDA bf16 from
  compute capability 8.0 (Ampere; and on ROCm), fp16 on 7.x (Volta/Turing tensor cores; the
  scaler guards it), fp32 below (no tensor cores; Pascal's fp16 is slow or unsupported); on
  the CPU bf16 only with native bf16 instructions (:func:`cpu_has_native_bf16`), else fp32.

bf16 on a device without native bf16 is emulated: on a CPU without AVX512-BF16/AMX a bare
ResNet-50 step (batch 16, 256×128) took 58 s instead of fp32's 3.5 s. :func:`resolve_precision`
refuses it with a :class:`~df2am.errors.ConfigError` unless ``train.allow_slow_bf16`` is true
(then it logs a warning). The config loader only knows the value is one of the choices; the
hardware rule needs the device, so the trainer calls :func:`resolve_precision` once, when the
device is known and before epoch 1.

Usage::

    device = resolve_device(cfg.train.device, local_rank=0)
    precision, reason = resolve_precision(cfg.train.precision, device,
                                          allow_slow_bf16=cfg.train.allow_slow_bf16)
    with autocast_context(device, precision):
        out = model(rgb, ir)
    scaler = make_grad_scaler(device, precision)   # None unless fp16
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import random
from collections.abc import Iterator

import numpy as np
import torch

from df2am.device import resolve_device  # re-exported: one device rule for every job
from df2am.errors import ConfigError

logger = logging.getLogger(__name__)

#: The values of ``train.precision``.
PRECISIONS = ("fp32", "bf16", "fp16", "auto")

#: cpuinfo flags of native bf16 arithmetic: x86 AVX512-BF16 and AMX-BF16 (``flags``), Arm's
#: BF16 extension (``Features: ... bf16``).
_NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})

__all__ = [
    "PRECISIONS",
    "resolve_device",
    "resolve_precision",
    "cpu_has_native_bf16",
    "cuda_has_native_bf16",
    "autocast_dtype",
    "autocast_context",
    "make_grad_scaler",
    "seed_everything",
    "configure_determinism",
]


def _read_cpuinfo() -> str | None:
    """``/proc/cpuinfo`` (Linux), or None where there is none or it cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bf16 natively (fast) rather than emulating it.

    ``cpuinfo`` is the text of ``/proc/cpuinfo`` (read when None): native when a ``flags`` or
    ``Features`` line lists ``avx512_bf16``, ``amx_bf16`` or (Arm) ``bf16``. Where there is no
    cpuinfo (macOS, Windows) oneDNN's own check decides
    (``torch.ops.mkldnn._is_mkldnn_bf16_supported()``; it also accepts AVX512 without bf16
    instructions, which emulate bf16 at a moderate cost), and False if that is unavailable.
    """
    text = _read_cpuinfo() if cpuinfo is None else cpuinfo
    if text is None:
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if (sep and name.strip().lower() in ("flags", "features")
                and _NATIVE_BF16_FLAGS & set(value.split())):
            return True
    return False


def cuda_has_native_bf16(device: torch.device) -> bool:
    """Whether the GPU ``device`` has native bf16 (compute capability >= 8.0, or ROCm)."""
    if torch.version.hip:
        return True
    return torch.cuda.get_device_capability(device)[0] >= 8


def _slow_bf16_reason(device: torch.device) -> str:
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return (f"{torch.cuda.get_device_name(device)} (compute capability {major}.{minor}) has "
                "no native bf16 (it needs 8.0, Ampere or newer): bf16 is emulated there")
    cpu = platform.processor() or platform.machine() or "this CPU"
    return (f"{cpu} has no native bf16 (/proc/cpuinfo lists neither avx512_bf16 nor "
            "amx_bf16): bf16 is emulated, about 20x slower than fp32 (a ResNet-50 step of "
            "batch 16 at 256x128: 58 s instead of 3.5 s)")


def resolve_precision(
    requested: str,
    device: torch.device,
    *,
    allow_slow_bf16: bool = False,
    key: str = "train.precision",
) -> tuple[str, str]:
    """The concrete precision ("fp32" | "bf16" | "fp16") to train with on ``device``, and a
    one-line reason for the log.

    ``auto`` picks what the device runs fastest (module docstring). ``bf16`` on a device
    without native bf16 is a :class:`ConfigError` explaining the cost, unless
    ``allow_slow_bf16`` (then a warning is logged and bf16 is used). ``fp16`` off CUDA is a
    :class:`ConfigError`. Call it once, when the device is known, before the first epoch.
    """
    if requested not in PRECISIONS:
        raise ConfigError(f"{key}: expected one of {list(PRECISIONS)}, got {requested!r}")
    native = (cuda_has_native_bf16(device) if device.type == "cuda"
              else cpu_has_native_bf16() if device.type == "cpu" else False)
    if requested == "auto":
        if device.type == "cuda":
            if native:
                return "bf16", f"{key}=auto: bf16 (the GPU has native bf16)"
            if torch.cuda.get_device_capability(device)[0] >= 7:
                return "fp16", (f"{key}=auto: fp16 with a gradient scaler (tensor cores, "
                                "no native bf16 on this GPU)")
            return "fp32", f"{key}=auto: fp32 (this GPU has neither tensor cores nor bf16)"
        if device.type == "cpu" and native:
            return "bf16", f"{key}=auto: bf16 (the CPU has native bf16: AVX512-BF16/AMX)"
        return "fp32", f"{key}=auto: fp32 (no native bf16 on {device.type})"
    if requested == "fp16":
        autocast_dtype(device, "fp16")  # ConfigError off CUDA
        return "fp16", f"{key}=fp16 with a gradient scaler"
    if requested == "bf16" and not native:
        why = _slow_bf16_reason(device)
        if not allow_slow_bf16:
            raise ConfigError(
                f"{key}=bf16: {why}. Use {key}=fp32 (or {key}=auto, which picks fp32 here), "
                "or set train.allow_slow_bf16=true to run it anyway"
            )
        logger.warning("%s=bf16 although %s; running it because train.allow_slow_bf16=true",
                       key, why)
        return "bf16", f"{key}=bf16, emulated (train.allow_slow_bf16=true): expect it slow"
    return requested, f"{key}={requested}"


#: ``auto`` resolved per device, for :func:`autocast_dtype` (the trainer resolves it once).
_AUTO_CACHE: dict[str, str] = {}


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None = fp32, no autocast).

    ``auto`` is resolved here as by :func:`resolve_precision` (never to an emulated bf16), for
    callers that pass the configured value on; the trainer resolves it once up front.
    """
    if precision == "auto":
        if str(device) not in _AUTO_CACHE:
            _AUTO_CACHE[str(device)] = resolve_precision("auto", device)[0]
        precision = _AUTO_CACHE[str(device)]
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
