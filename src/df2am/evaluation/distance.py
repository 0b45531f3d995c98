"""Query × gallery distances from features, in fp32, on the features' device.

Two metrics, both "smaller = more similar" as the ranking expects (protocols.md, "Metrics"):

- ``"cosine"``: ``-q·gᵀ``. This is exactly what the reference re-ID scripts rank by, and it
  equals the cosine distance up to an affine map (``1 - cos``) *only for L2-normalised
  features* — which is what ``DF2AMNet.extract`` returns. Because an un-normalised input would
  give a silently different ranking, rows whose norm is not 1 (±1e-2) raise
  :class:`~df2am.errors.EvaluationError`; normalise first or use ``"euclidean"``.
- ``"euclidean"``: ``sqrt(max(‖a‖² + ‖b‖² − 2·a·bᵀ, 0))``, computed in fp32 (the clamp removes
  the tiny negatives that cancellation produces for near-identical vectors).

The function is row-wise, so it is "chunk-friendly": ``pairwise_distance(a[i:j], b)`` gives the
rows ``i:j`` of the full matrix (up to the float rounding of the matrix product), which is how
:func:`df2am.evaluation.evaluate_features` uses it without ever holding the full matrix.

Example::

    >>> import numpy as np
    >>> a = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    >>> pairwise_distance(a, a, "euclidean").astype(float).round(4).tolist()
    [[0.0, 1.4142], [1.4142, 0.0]]
    >>> pairwise_distance(a, a, "cosine").tolist()
    [[-1.0, -0.0], [-0.0, -1.0]]
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from df2am.errors import EvaluationError

__all__ = ["METRICS", "Metric", "check_unit_norm", "pairwise_distance"]

Metric = Literal["cosine", "euclidean"]
#: The accepted ``metric`` names.
METRICS: tuple[str, ...] = ("cosine", "euclidean")

# Tolerance on |‖x‖ − 1| for the "cosine" metric: loose enough for features stored in
# fp16/bf16 after normalisation, tight enough to catch features that were never normalised.
_NORM_TOL = 1e-2


def as_float_tensor(x: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    """A 2-D fp32 tensor view/copy of ``x`` on its own device (numpy → CPU)."""
    t = torch.from_numpy(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    if t.ndim != 2:
        raise EvaluationError(f"{name}: expected a 2-D (N, D) feature array, got shape "
                              f"{tuple(t.shape)}")
    if not (t.dtype.is_floating_point or t.dtype in (torch.int32, torch.int64)):
        raise EvaluationError(f"{name}: expected floating-point features, got dtype {t.dtype}")
    return t.to(torch.float32)


def check_unit_norm(x: torch.Tensor, name: str) -> None:
    """Raise unless every row of ``x`` is L2-normalised (needed by the ``"cosine"`` metric)."""
    if x.shape[0] == 0:
        return
    dev = (x.float().norm(dim=1) - 1.0).abs()
    worst = int(torch.argmax(dev))
    if float(dev[worst]) > _NORM_TOL:
        norm = float(x[worst].float().norm())
        raise EvaluationError(
            f"{name}: metric='cosine' ranks by -q·gᵀ, which needs L2-normalised features, but "
            f"row {worst} has norm {norm:.4g}; normalise the features (as DF2AMNet.extract "
            f"does) or use metric='euclidean'")


def distance_rows(a: torch.Tensor, b: torch.Tensor, metric: str,
              out: torch.Tensor | None = None) -> torch.Tensor:
    """Distances between fp32 rows of ``a`` (A, D) and ``b`` (B, D); no validation.

    ``out``: an (A, B) fp32 buffer to write into (reused across chunks by the evaluator, since
    fresh results page-fault every time); the values are the same bits either way.
    """
    d = torch.mm(a, b.T, out=out) if out is not None else a @ b.T
    if metric == "cosine":
        return d.neg_()
    # ‖a‖² + ‖b‖² − 2ab in fp32, computed in place to keep one (A, B) buffer.
    d.mul_(-2.0)
    d.add_(a.pow(2).sum(dim=1, keepdim=True))
    d.add_(b.pow(2).sum(dim=1)[None, :])
    return d.clamp_(min=0.0).sqrt_()


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise EvaluationError(f"metric: expected one of {', '.join(METRICS)}, got {metric!r}")


def pairwise_distance(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor,
                      metric: Metric = "cosine") -> np.ndarray | torch.Tensor:
    """Distance matrix ``(len(a), len(b))`` between feature rows, smaller = more similar.

    Computed in fp32 on ``a``'s device. Returns a torch tensor when either input is one
    (on ``a``'s device), else a numpy array.

    Args:
        a: ``(A, D)`` features (e.g. queries).
        b: ``(B, D)`` features (e.g. gallery).
        metric: ``"cosine"`` (``-a·bᵀ``, requires L2-normalised rows) or ``"euclidean"``.

    Raises:
        EvaluationError: unknown metric, non-2-D inputs, mismatched feature dimension, or
            un-normalised rows with ``metric="cosine"``.
    """
    check_metric(metric)
    want_torch = isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor)
    ta = as_float_tensor(a, "a")
    tb = as_float_tensor(b, "b").to(ta.device)
    if ta.shape[1] != tb.shape[1]:
        raise EvaluationError(f"pairwise_distance: feature dimensions differ: a has "
                              f"{ta.shape[1]}, b has {tb.shape[1]}")
    if metric == "cosine":
        check_unit_norm(ta, "a")
        check_unit_norm(tb, "b")
    d = distance_rows(ta, tb, metric)
    return d if want_torch else d.cpu().numpy()
