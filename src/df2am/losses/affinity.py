"""Affinity modelling (paper §3.4, Eq. 9–12): L_A and its L1 ablation variant.

All 2K* samples of a batch, of both modalities, enter one affinity matrix (Eq. 9, the four
blocks RGB-RGB, RGB-IR, IR-RGB, IR-IR are just the blocks of the full (B, B) matrix when rows are
ordered [RGB; IR]). Its elements are Euclidean distances between L2-normalised global features
f^g (Eq. 10), so D_ij ∈ [0, 2]. The ground-truth affinity G_ij is 1 when samples i and j share
an identity (including i = j), else 0.

Our reading of the two losses:

* Eq. 12, :func:`affinity_margin_loss`:
  L_A = mean_ij [ D_ij·G_ij − (D_ij − m)·(1 − G_ij) ]_+ — positive pairs are pulled to distance
  0, negative pairs are pushed beyond the margin m. The paper writes a *sum* over the
  (2K*)² pairs; we take the *mean* so the loss scale (and hence the meaning of ζ) does not depend
  on the batch size. The diagonal (D_ii = 0, G_ii = 1) contributes 0 but is counted in the mean,
  exactly as the sum over i, j = 1..2K* includes it.
* Eq. 11, :func:`affinity_l1_loss`: L1 = mean_ij |D_ij − (1 − G_ij)·δ| — the paper's "mean L1
  error" between D and the target (0 for positives, δ for negatives).

Distances are computed in fp32 even under autocast (see :mod:`df2am.losses.distance`).

Usage::

    la = affinity_margin_loss(out.global_feat, labels, margin=0.5)
    l1 = affinity_l1_loss(out.global_feat, labels, delta=1.0)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from df2am.losses.distance import pairwise_euclidean

__all__ = [
    "AFFINITY_REDUCTIONS",
    "normalized_euclidean",
    "affinity_margin_loss",
    "affinity_l1_loss",
]

#: How the (B, B) per-pair terms become one number (``loss.affinity_reduction``):
#: "pairs" = mean over the B² pairs (scale independent of B); "row" = Σ_j per anchor, mean over
#: the B anchors (B× "pairs": each anchor's gradient is that of a per-sample loss, like the
#: triplet's); "sum" = Σ_ij, Eq. 12 as printed (B²× "pairs").
AFFINITY_REDUCTIONS = ("pairs", "row", "sum")


def normalized_euclidean(feat: torch.Tensor) -> torch.Tensor:
    """Affinity matrix of Eq. 10: D_ij = ‖f_i/‖f_i‖₂ − f_j/‖f_j‖₂‖₂ ∈ [0, 2], fp32, (B, B).

    Zero distances (the diagonal, or two features pointing the same way) have a finite, zero
    gradient rather than NaN.
    """
    with torch.autocast(device_type=feat.device.type, enabled=False):
        unit = F.normalize(feat.float(), p=2, dim=1)
        # Rounding can push a distance between (almost) opposite unit vectors a hair above 2.
        return pairwise_euclidean(unit).clamp(max=2.0)


def _ground_truth(labels: torch.Tensor) -> torch.Tensor:
    """G_ij = 1.0 when labels i and j are equal (the ground-truth affinity), fp32 (B, B)."""
    return (labels.unsqueeze(0) == labels.unsqueeze(1)).float()


def _check(feat: torch.Tensor, labels: torch.Tensor, name: str) -> None:
    if feat.dim() != 2 or labels.dim() != 1 or feat.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{name}: expected feat (B, C) and labels (B,), got {tuple(feat.shape)} and "
            f"{tuple(labels.shape)}"
        )


def _reduce(terms: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "pairs":
        return terms.mean()
    if reduction == "row":
        return terms.sum(dim=1).mean()
    if reduction == "sum":
        return terms.sum()
    raise ValueError(f"affinity reduction must be one of {AFFINITY_REDUCTIONS}, got {reduction!r}")


def affinity_margin_loss(
    feat: torch.Tensor, labels: torch.Tensor, margin: float, reduction: str = "pairs"
) -> torch.Tensor:
    """L_A of Eq. 12: [D·G − (D − m)·(1 − G)]_+ reduced over the B² pairs (``reduction``)."""
    _check(feat, labels, "affinity_margin_loss")
    d = normalized_euclidean(feat)
    g = _ground_truth(labels)
    return _reduce((d * g - (d - margin) * (1.0 - g)).clamp(min=0.0), reduction)


def affinity_l1_loss(
    feat: torch.Tensor, labels: torch.Tensor, delta: float, reduction: str = "pairs"
) -> torch.Tensor:
    """L1 of Eq. 11: |D_ij − (1 − G_ij)·δ| reduced over the B² pairs (``reduction``)."""
    _check(feat, labels, "affinity_l1_loss")
    d = normalized_euclidean(feat)
    g = _ground_truth(labels)
    return _reduce((d - (1.0 - g) * delta).abs(), reduction)
