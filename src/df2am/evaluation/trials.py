"""Mean and standard deviation of the metrics over trials (SYSU galleries, RegDB splits).

Published SYSU-MM01 and RegDB numbers are the mean over 10 trials (protocols.md). The standard
deviation reported here is the **population** standard deviation (``ddof=0``, numpy's default):
it describes the spread of these trials rather than estimating a wider population, and it is
what ``np.std`` over the per-trial numbers — the usual way papers compute it — gives. With one
trial it is 0.

Example::

    >>> import numpy as np
    >>> a = EvalResult(np.array([0.5, 1.0]), mAP=0.4, mINP=0.2, num_valid_queries=4)
    >>> b = EvalResult(np.array([0.7, 1.0]), mAP=0.6, mINP=0.4, num_valid_queries=4)
    >>> s = aggregate_trials([a, b])
    >>> {k: round(v, 6) for k, v in s.to_dict().items()}
    {'rank1': 60.0, 'rank1_std': 10.0, 'mAP': 50.0, 'mAP_std': 10.0, 'mINP': 30.0, 'mINP_std': 10.0}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from df2am.errors import EvaluationError
from df2am.evaluation.metrics import CMC_RANKS, EvalResult

__all__ = ["TrialSummary", "aggregate_trials"]


@dataclass(frozen=True)
class TrialSummary:
    """Per-metric mean and population std (ddof=0) over trials; fractions in [0, 1].

    Attributes:
        cmc_mean, cmc_std: float64 arrays of length ``max_rank``.
        mAP_mean, mAP_std, mINP_mean, mINP_std: floats.
        num_trials: number of trials aggregated.
        trials: the per-trial results, in the order given.
    """

    cmc_mean: np.ndarray
    cmc_std: np.ndarray
    mAP_mean: float  # noqa: N815 - the field's standard name
    mAP_std: float  # noqa: N815
    mINP_mean: float  # noqa: N815
    mINP_std: float  # noqa: N815
    num_trials: int
    trials: tuple[EvalResult, ...]

    @property
    def mean(self) -> EvalResult:
        """The means as an :class:`EvalResult` (``num_valid_queries`` = mean, rounded)."""
        nv = round(float(np.mean([t.num_valid_queries for t in self.trials])))
        return EvalResult(self.cmc_mean, self.mAP_mean, self.mINP_mean, nv)

    def to_dict(self, percent: bool = True) -> dict[str, float]:
        """``rank1, rank5, rank10, rank20`` (those ≤ ``max_rank``), ``mAP``, ``mINP``, each
        followed by its ``_std`` twin; percentages by default (the engine's ``metrics.json``).
        """
        scale = 100.0 if percent else 1.0
        out: dict[str, float] = {}
        for k in CMC_RANKS:
            if k <= len(self.cmc_mean):
                out[f"rank{k}"] = float(self.cmc_mean[k - 1]) * scale
                out[f"rank{k}_std"] = float(self.cmc_std[k - 1]) * scale
        out["mAP"] = self.mAP_mean * scale
        out["mAP_std"] = self.mAP_std * scale
        out["mINP"] = self.mINP_mean * scale
        out["mINP_std"] = self.mINP_std * scale
        return out


def aggregate_trials(results: Sequence[EvalResult]) -> TrialSummary:
    """Mean and population standard deviation (ddof=0) of every metric, CMC curve included.

    Raises:
        EvaluationError: no results, or CMC curves of different lengths (different
            ``max_rank``).
    """
    results = tuple(results)
    if not results:
        raise EvaluationError("aggregate_trials: expected at least one EvalResult, got none")
    lengths = {len(r.cmc) for r in results}
    if len(lengths) != 1:
        raise EvaluationError(f"aggregate_trials: all trials need the same max_rank, got CMC "
                              f"lengths {sorted(lengths)}")
    cmc = np.stack([np.asarray(r.cmc, dtype=np.float64) for r in results])
    maps = np.array([r.mAP for r in results], dtype=np.float64)
    minps = np.array([r.mINP for r in results], dtype=np.float64)
    return TrialSummary(
        cmc_mean=cmc.mean(axis=0), cmc_std=cmc.std(axis=0, ddof=0),
        mAP_mean=float(maps.mean()), mAP_std=float(maps.std(ddof=0)),
        mINP_mean=float(minps.mean()), mINP_std=float(minps.std(ddof=0)),
        num_trials=len(results), trials=results)
