"""Softmax-weighted triplet losses of the AGW family: WRT (AGW) and its squared-difference
variant ADP (CAJ).

**WRT**, the weighted regularisation triplet of AGW (Ye et al., TPAMI 2021; the reference's
``loss.py``: ``TripletLoss_WRT``). For each anchor i, with D the Euclidean distances of the
(unnormalised) features, P_i its positives and N_i its negatives::

    w⁺_ij = exp(D_ij − s⁺_i) / (Σ_{k∈P_i} exp(D_ik − s⁺_i) + 1e-6),   j ∈ P_i
    w⁻_ij = exp(−D_ij − s⁻_i) / (Σ_{k∈N_i} exp(−D_ik − s⁻_i) + 1e-6),  j ∈ N_i
    d⁺_i  = Σ_j w⁺_ij D_ij      (a soft "furthest positive")
    d⁻_i  = Σ_j w⁻_ij D_ij      (a soft "closest negative")
    L     = mean_i log(1 + exp(d⁺_i − d⁻_i))      (soft margin: no margin parameter)

exactly as the reference computes it, including its choices that matter numerically:

* P_i contains i itself (distance 0; the reference's clamp makes it 1e-6);
* the shift s of each softmax is the row maximum of ``x · mask`` over *all* columns, masked
  ones included as 0: s⁺_i = max_{j∈P_i} D_ij, but s⁻_i = max(0, max_{j∈N_i} −D_ij) = 0, so
  the negatives' denominators are Σ exp(−D) + 1e-6 — when every negative is far (D ≳ 14) the
  1e-6 dominates and d⁻ shrinks; that is the reference's behaviour and it is kept;
* no anchor is left out: an anchor without negatives gets d⁻ = 0.

**ADP** (CAJ, Ye et al., ICCV 2021; ``TripletLoss_ADP`` with ``square=1``): the same weights
computed on α·D, then, with δ_i = d⁺_i − d⁻_i,
``L = mean_i log(1 + exp(−y_i · min(γ δ_i², 88)))`` where y_i = −1 when d⁺_i > d⁻_i (a
violated anchor: the loss grows with the squared violation) and +1 otherwise (the loss falls as
the gap grows). CAJ's published setting is α = γ = 1.

Distances are computed in fp32 even under autocast (:mod:`df2am.losses.distance`); nothing
synchronises with the host. ``groups`` (B,) restricts positives and negatives to pairs of
different groups (``loss.triplet_mode=cross``; then an anchor is not its own positive).

Usage::

    loss = weighted_regularized_triplet(out.global_feat, labels)
    loss = adaptive_weighted_triplet(out.global_feat, labels, alpha=1.0, gamma=1.0)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from df2am.losses.distance import pairwise_euclidean

__all__ = ["weighted_regularized_triplet", "adaptive_weighted_triplet", "softmax_weights"]

#: Added to each softmax denominator (the reference's "avoid division by zero").
WEIGHT_EPS = 1e-6
#: ADP clamps the squared difference here before the soft margin (the reference's 88).
ADP_CLAMP = 88.0


def softmax_weights(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Row-wise softmax of ``x`` over the entries where ``mask`` is 1, the reference's way:
    shifted by the row maximum of ``x · mask`` (all columns) and with 1e-6 added to the
    denominator. ``x`` and ``mask`` are (B, B) floats; masked-out weights are 0."""
    shift = (x * mask).amax(dim=1, keepdim=True)
    e = torch.exp(x - shift) * mask
    return e / (e.sum(dim=1, keepdim=True) + WEIGHT_EPS)


def _soft_distances(
    feat: torch.Tensor, labels: torch.Tensor, alpha: float, groups: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    if feat.dim() != 2 or labels.dim() != 1 or feat.shape[0] != labels.shape[0]:
        raise ValueError(
            f"expected feat (B, C) and labels (B,), got {tuple(feat.shape)} and "
            f"{tuple(labels.shape)}"
        )
    dist = pairwise_euclidean(feat)  # fp32, autocast off
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    pos, neg = same, ~same
    if groups is not None:
        other = groups.unsqueeze(0) != groups.unsqueeze(1)
        pos, neg = pos & other, neg & other
    pos_f, neg_f = pos.float(), neg.float()
    dist_ap = dist * pos_f
    dist_an = dist * neg_f
    w_ap = softmax_weights(dist_ap * alpha, pos_f)
    w_an = softmax_weights(-dist_an * alpha, neg_f)
    return (dist_ap * w_ap).sum(dim=1), (dist_an * w_an).sum(dim=1)


def weighted_regularized_triplet(
    feat: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor | None = None
) -> torch.Tensor:
    """AGW's weighted regularisation triplet (WRT) of ``feat`` (B, C); fp32 scalar. See the
    module docstring for the formula."""
    furthest_pos, closest_neg = _soft_distances(feat, labels, 1.0, groups)
    return F.soft_margin_loss(closest_neg - furthest_pos, torch.ones_like(closest_neg))


def adaptive_weighted_triplet(
    feat: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 1.0,
    gamma: float = 1.0,
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """CAJ's squared-difference WRT ("ADP", ``square=1``) of ``feat`` (B, C); fp32 scalar."""
    furthest_pos, closest_neg = _soft_distances(feat, labels, alpha, groups)
    diff = ((furthest_pos - closest_neg).pow(2) * gamma).clamp(max=ADP_CLAMP)
    # +1 where the anchor is satisfied (d⁻ >= d⁺), −1 where it is violated; no gradient.
    sign = torch.where(furthest_pos > closest_neg, -1.0, 1.0).detach()
    return F.soft_margin_loss(diff, sign)
