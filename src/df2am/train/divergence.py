"""Divergence: a run whose loss or weights stop being numbers stops, and says why.

* :func:`check_divergence` (every log window, on the step losses the window reads anyway —
  no extra host sync): a non-finite step loss always stops the run; with
  ``train.divergence_factor`` f > 0 (default :data:`DEFAULT_DIVERGENCE_FACTOR` = 1000) so does
  a step loss above f × **the median of the run's first steps** (the first
  :data:`DIVERGENCE_EARLY_STEPS` finite step losses; each step is judged against those before
  it, so an explosion at step 2 is caught) or above f × the running median of the last
  :data:`DIVERGENCE_WINDOW` step losses (judged after :data:`DIVERGENCE_WARMUP_STEPS` steps). It
  raises a :class:`TrainingDivergedError` naming epoch, step and learning rate (and writes a
  ``diverged`` record to ``metrics.jsonl``); the epoch is not checkpointed.
  ``train.divergence_factor=0`` turns both comparisons off.
* :func:`check_finite_weights` (before every checkpoint): non-finite weights are never
  written; ``last.pt`` keeps the previous epoch.

Why 1000 × the first steps' median is on by default: a diverging run grows its loss by many
orders of magnitude (``optim.lr=1e6`` under Adam gave step losses of 1e13 while staying
finite, so the non-finite check never fired), whereas training lowers its loss, and the
rises a sound run can show (a learning-rate warm-up, a loss term switched on, a hard batch)
are a few ×. Measured on the demo recipe (synthetic data, 4 epochs at reduced size, every step
logged: 224 step losses): every loss stayed within 0.32–1.14× of the first 20 steps' median
(the highest was step 1) and below 0.98× its running median. 1000× sits far above that and far
below what divergence produces, so it does not stop a sound run and does stop a broken one
within one log window (the check reads every step's loss, judged before the epoch is
checkpointed). A run that wants a tighter leash sets e.g. ``train.divergence_factor=10``. The
first steps' median restarts on resume (from a trained model the first losses are lower, so
the guard only gets stricter).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from df2am.config import Config
from df2am.errors import Df2amError
from df2am.train.checkpoint import first_non_finite
from df2am.train.metrics_log import MetricsLogger

__all__ = [
    "DEFAULT_DIVERGENCE_FACTOR",
    "DIVERGENCE_EARLY_STEPS",
    "DIVERGENCE_WARMUP_STEPS",
    "DIVERGENCE_WINDOW",
    "LossHistory",
    "TrainingDivergedError",
    "check_divergence",
    "check_finite_weights",
]

#: ``train.divergence_factor``'s default (config.py): see the module docstring for why 1000.
DEFAULT_DIVERGENCE_FACTOR = 1000.0
#: How many of the run's first finite step losses make the fixed reference (their median).
DIVERGENCE_EARLY_STEPS = 20
#: Steps of finite losses the divergence check's running median needs before it judges.
DIVERGENCE_WARMUP_STEPS = 20
#: How many recent step losses the running median is taken over.
DIVERGENCE_WINDOW = 200


class TrainingDivergedError(Df2amError):
    """The training loss became non-finite or exploded (``train.divergence_factor``), or the
    weights to checkpoint are non-finite; nothing non-finite is written."""


@dataclass
class LossHistory:
    """The step losses the divergence check compares with: the run's first
    :data:`DIVERGENCE_EARLY_STEPS` finite ones (fixed) and the last :data:`DIVERGENCE_WINDOW`."""

    early: list[float] = field(default_factory=list)
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=DIVERGENCE_WINDOW))

    def append(self, value: float) -> None:
        if len(self.early) < DIVERGENCE_EARLY_STEPS:
            self.early.append(value)
        self.recent.append(value)

    def judge(self, value: float, factor: float) -> str | None:
        """Why ``value`` means divergence (None: it does not)."""
        if not math.isfinite(value):
            return f"the loss became {value}"
        if factor <= 0:
            return None
        refs = []
        if self.early:
            refs.append((statistics.median(self.early),
                         f"the median of the run's first {len(self.early)} step losses"))
        if len(self.recent) >= DIVERGENCE_WARMUP_STEPS:
            refs.append((statistics.median(self.recent), "its running median"))
        for ref, what in refs:
            if ref > 0 and value > factor * ref:
                return (f"the loss {value:.4g} exceeds train.divergence_factor={factor:g} x "
                        f"{what} {ref:.4g}")
        return None


def check_divergence(
    history: LossHistory,
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
    """:class:`TrainingDivergedError` on a step loss of ``steps`` (iterations ``first_it``, ...
    of the 0-based ``epoch`` of ``iters``) that is non-finite or, with
    ``train.divergence_factor`` f > 0, above f × the median of the run's first steps or f ×
    the running median (module docstring). Unremarkable losses are added to ``history``."""
    factor = float(cfg.train.divergence_factor)
    for i, value in enumerate(steps):
        why = history.judge(value, factor)
        if why is None:
            history.append(value)
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
