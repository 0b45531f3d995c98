"""Divergence: a run whose loss or weights stop being numbers stops, and says why.

* :func:`check_divergence` (every log window): a non-finite step loss, or one above
  ``train.divergence_factor`` × the running median of the last :data:`DIVERGENCE_WINDOW` step
  losses, stops the run with a :class:`TrainingDivergedError` naming epoch, step and learning
  rate (and a ``diverged`` record in ``metrics.jsonl``); the epoch is not checkpointed.
* :func:`check_finite_weights` (before every checkpoint): non-finite weights are never
  written; ``last.pt`` keeps the previous epoch.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from pathlib import Path

from torch import nn

from df2am.config import Config
from df2am.errors import Df2amError
from df2am.train.checkpoint import first_non_finite
from df2am.train.metrics_log import MetricsLogger

__all__ = [
    "DIVERGENCE_WARMUP_STEPS",
    "DIVERGENCE_WINDOW",
    "TrainingDivergedError",
    "check_divergence",
    "check_finite_weights",
]

#: Steps of finite losses the divergence check's running median needs before it judges.
DIVERGENCE_WARMUP_STEPS = 20
#: How many recent step losses the running median is taken over.
DIVERGENCE_WINDOW = 200


class TrainingDivergedError(Df2amError):
    """The training loss became non-finite or exploded (``train.divergence_factor``), or the
    weights to checkpoint are non-finite; nothing non-finite is written."""


def check_divergence(
    recent: deque[float],
    steps: list[float],
    *,
    cfg: Config,
    mlog: MetricsLogger,
    epoch: int,
    first_it: int,
    iters: int,
    lrs: dict[str, float],
    last_path: Path,
) -> None:
    """:class:`TrainingDivergedError` on a non-finite step loss of ``steps`` (iterations
    ``first_it``, ... of the 0-based ``epoch`` of ``iters``), or (``train.divergence_factor``
    f > 0) one above f × the running median of ``recent``, the last :data:`DIVERGENCE_WINDOW`
    step losses (judged after :data:`DIVERGENCE_WARMUP_STEPS` steps; the median restarts on
    resume). Finite, unremarkable losses are appended to ``recent``."""
    factor = float(cfg.train.divergence_factor)
    for i, value in enumerate(steps):
        if not math.isfinite(value):
            why = f"the loss became {value}"
        elif factor > 0 and len(recent) >= DIVERGENCE_WARMUP_STEPS and (
            value > factor * (median := statistics.median(recent))
        ):
            why = (f"the loss {value:.4g} exceeds train.divergence_factor={factor:g} x its "
                   f"running median {median:.4g}")
        else:
            recent.append(value)
            continue
        it = first_it + i
        lr = ", ".join(f"{k} {v:.3g}" for k, v in lrs.items())
        hint = (f"; with train.precision={cfg.train.precision} also try fp32"
                if cfg.train.precision != "fp32" else "")
        mlog.write({"event": "diverged", "epoch": epoch + 1, "iter": it, "loss": value,
                    "lr": lrs}, step=epoch * iters + it)
        raise TrainingDivergedError(
            f"training diverged at epoch {epoch + 1}, step {it}/{iters}: {why}. "
            f"Likely cause: a learning rate too high for this run (current lr: {lr}; "
            f"optim.lr={cfg.optim.lr:g}): lower optim.lr or lengthen "
            f"optim.warmup_epochs{hint}. Epoch {epoch + 1} was not checkpointed; "
            f"{last_path} holds the last finished epoch"
        )


def check_finite_weights(model: nn.Module, *, epoch: int, cfg: Config, last_path: Path) -> None:
    """:class:`TrainingDivergedError` naming the first non-finite tensor of ``model`` after
    ``epoch`` (1-based), before anything of it is written."""
    bad = first_non_finite(model.state_dict())
    if bad is not None:
        raise TrainingDivergedError(
            f"epoch {epoch}: the model's '{bad}' holds NaN/inf values; not writing a "
            f"checkpoint of non-finite weights ({last_path} keeps epoch {epoch - 1}). "
            f"Lower optim.lr (now {cfg.optim.lr:g})"
        )
