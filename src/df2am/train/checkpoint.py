"""Checkpoint format of a training run, written atomically.

A checkpoint is one ``torch.save`` dict (format version :data:`FORMAT_VERSION`) with the keys

=================  ========================================================================
``format_version``  int, :data:`FORMAT_VERSION`
``model``           state dict of the *unwrapped* model (no ``module.`` prefix from DDP)
``num_classes``     number of training identities the classifiers were built for
``config``          the resolved run config as a plain dict (:func:`df2am.config.config_to_dict`)
``epoch``           number of epochs completed (1 after the first epoch)
``optimizer``       ``optimizer.state_dict()`` (None in a model-only file)
``scheduler``       ``scheduler.state_dict()`` (None in a model-only file)
``sampler``         the identity sampler's state (``{"epoch": e, ...}``; None if not saved)
``rng``             ``{"python", "numpy", "torch", "cuda"}`` RNG states (:func:`rng_state`)
``scaler``          ``GradScaler.state_dict()`` for fp16 training, else None
=================  ========================================================================

Optional keys a reader must tolerate: ``val`` (validation metrics of that epoch),
``selected_by`` (``"last_epoch"`` or ``"validation"``, on ``model_final.pt``; ``"imported"`` on
a file ``df2am import`` wrote) and ``imported`` (that file's record of its source:
:mod:`df2am.deploy.importer`).

Every value is a tensor, a plain Python container or a scalar, so the files load with
``torch.load(weights_only=True)``; NumPy RNG state is stored as a tensor for that reason.

Usage::

    from df2am.train.checkpoint import load_checkpoint, save_checkpoint
    save_checkpoint("runs/x/checkpoints/last.pt", ckpt)       # temp file + fsync + os.replace
    ckpt = load_checkpoint("runs/x/checkpoints/last.pt")      # CheckpointError if bad
    model = build_model(config_from_dict(ckpt["config"]).model, ckpt["num_classes"])
    model.load_state_dict(ckpt["model"])

Writing goes to a temporary file in the same directory, which is flushed and fsync'ed before
``os.replace`` renames it over the target: a crash at any point leaves either the previous
checkpoint or the new one, never a truncated file. A failed write (a full disk, any I/O
error) is a :class:`~df2am.errors.CheckpointError` naming the file and the cause; the
previous file stays as it was. The files get the user's normal permissions (``0666`` less the
umask).
"""

from __future__ import annotations

import errno
import os
import random
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from df2am.atomic import atomic_write
from df2am.errors import CheckpointError, unreadable_reason

__all__ = [
    "FORMAT_VERSION",
    "REQUIRED_KEYS",
    "MODEL_KEYS",
    "save_checkpoint",
    "make_checkpoint",
    "load_checkpoint",
    "rng_state",
    "set_rng_state",
    "first_non_finite",
]

FORMAT_VERSION = 1

#: Keys every training checkpoint holds (``last.pt``, ``epoch_XXX.pt``, ``model_final.pt``).
REQUIRED_KEYS: tuple[str, ...] = (
    "format_version",
    "model",
    "num_classes",
    "config",
    "epoch",
    "optimizer",
    "scheduler",
    "sampler",
    "rng",
    "scaler",
)

#: The keys needed to rebuild and evaluate a model (what ``load_model`` asks for).
MODEL_KEYS: tuple[str, ...] = ("format_version", "model", "num_classes", "config")


def save_checkpoint(path: str | os.PathLike[str], obj: dict[str, Any]) -> Path:
    """Write ``obj`` to ``path`` atomically and return the path.

    The data goes to a temporary file next to ``path`` (same filesystem, so the rename is
    atomic), is flushed and fsync'ed, then ``os.replace`` moves it over ``path`` and the
    directory is fsync'ed so the rename itself survives a power loss. If anything fails the
    temporary file is removed and the previous ``path`` is untouched
    (:func:`df2am.atomic.atomic_write` with ``fsync=True``).
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda fh: torch.save(obj, fh), fsync=True)
    except (OSError, RuntimeError) as exc:
        os_exc = _os_error(exc)
        if os_exc is None:
            raise
        name = errno.errorcode.get(os_exc.errno or 0, "I/O error")
        kept = (f"the previous {target.name} is unchanged" if target.exists()
                else f"{target.name} was not written")
        raise CheckpointError(
            f"cannot write checkpoint {target}: {os_exc.strerror or os_exc} ({name}); {kept}"
            + ("; free disk space and resume" if os_exc.errno in (errno.ENOSPC, errno.EDQUOT)
               else "")
        ) from exc
    return target


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc`` (torch.save re-raises a failed write as a RuntimeError whose
    context is the OSError), or None."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, OSError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def first_non_finite(state: dict[str, Any]) -> str | None:
    """The first key of a model state dict whose floating-point tensor holds a NaN or an
    infinity (one host sync per tensor; called once per checkpoint), or None."""
    for key, value in state.items():
        if (isinstance(value, torch.Tensor) and value.is_floating_point()
                and not bool(torch.isfinite(value).all())):
            return key
    return None


def make_checkpoint(
    model: torch.nn.Module,
    num_classes: int,
    cfg: Any,
    epoch: int,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    sampler_state: dict[str, Any],
    rngs: list[Any],
    scaler: Any,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The training checkpoint of the format above after ``epoch`` epochs.

    ``cfg`` is the run's :class:`~df2am.config.Config`; ``rngs`` every rank's
    :func:`rng_state` (rank 0's is ``rng``); ``extra`` optional keys (``val_best``,
    ``val_history``).
    """
    from df2am.config import config_to_dict

    return {
        "format_version": FORMAT_VERSION,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "num_classes": int(num_classes),
        "config": config_to_dict(cfg),
        "epoch": int(epoch),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "sampler": sampler_state,
        "rng": rngs[0],
        "rng_ranks": rngs,
        "scaler": scaler.state_dict() if scaler is not None else None,
        **extra,
    }


def load_checkpoint(
    path: str | os.PathLike[str],
    map_location: str | torch.device = "cpu",
    required: Iterable[str] = REQUIRED_KEYS,
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` and check its keys.

    Args:
        path: the ``.pt`` file.
        map_location: where tensors go (``torch.load``'s argument).
        required: keys that must be present; :data:`MODEL_KEYS` suffices for evaluation.

    Raises:
        CheckpointError: the file is missing or not a checkpoint (text, truncated, a zip of
            something else, a pickle that would need code: one plain sentence, never the advice
            to load it unsafely), is not a dict, lacks a required key (the message names the
            path and the key), has an unknown format version, or its model weights hold a NaN
            or an infinity (the message names the first such tensor).
    """
    p = Path(path)
    if not p.is_file():
        if p.is_dir():
            raise CheckpointError(f"checkpoint {p} is a folder, not a checkpoint file")
        raise CheckpointError(f"checkpoint not found: {p}")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols
            warnings.simplefilter("ignore")
            obj = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # a corrupt file can fail anywhere in unpickling (struct.error, ...)
        raise CheckpointError(
            f"{p}: not a df2am checkpoint: {unreadable_reason(p, exc)}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{p}: expected a checkpoint dict, got {type(obj).__name__}")
    for key in required:
        if key not in obj:
            raise CheckpointError(
                f"{p}: checkpoint lacks key '{key}' (has: {', '.join(sorted(map(str, obj)))})"
            )
    version = obj.get("format_version")
    if "format_version" in obj and version != FORMAT_VERSION:
        raise CheckpointError(
            f"{p}: checkpoint format_version {version!r} is not supported "
            f"(this df2am reads version {FORMAT_VERSION})"
        )
    weights = obj.get("model")
    if isinstance(weights, dict):
        bad = first_non_finite(weights)
        if bad is not None:
            raise CheckpointError(
                f"{p}: weight {bad!r} holds NaN or infinite values (the first such tensor); "
                "the run diverged or the file is damaged: use an earlier checkpoint")
    return obj




# --------------------------------------------------------------------------- RNG state


def rng_state() -> dict[str, Any]:
    """The Python, NumPy, torch CPU and (if initialised) CUDA RNG states, weights_only-safe."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (CUDA states only where CUDA is in use)."""
    py = state["python"]
    # weights_only loading turns the inner tuple into a list; random.setstate wants tuples.
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        (
            n["name"],
            n["keys"].numpy().astype(np.uint32),
            int(n["pos"]),
            int(n["has_gauss"]),
            float(n["cached_gaussian"]),
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
