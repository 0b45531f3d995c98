"""Batch-hard triplet loss L_BH (Hermans et al., "In Defense of the Triplet Loss").

Part of the baseline L_B = L_ID + L_BH of each modality (method.md "Losses"; the paper's
reference [11]). For each anchor i in the batch:

    d_p(i) = max_{j ≠ i, y_j = y_i} D_ij      (hardest positive)
    d_n(i) = min_{j: y_j ≠ y_i} D_ij          (hardest negative)
    ℓ(i)   = [d_p(i) − d_n(i) + margin]_+

with D the Euclidean distance between the (unnormalised) features, computed in fp32
(:func:`~df2am.losses.distance.pairwise_euclidean`). The loss is the mean of ℓ over the
*valid* anchors: an anchor that has no other sample of its identity, or no sample of another
identity, in the batch has no triplet and is excluded. If no anchor is valid the result is a
zero that is still connected to the graph (so ``backward()`` works and gives zero gradients).

Fully vectorised with masks; no host synchronisation.

Usage::

    loss = batch_hard_triplet(out.global_feat[:k], labels[:k], margin=0.3)
"""

from __future__ import annotations

import torch

from df2am.losses.distance import pairwise_euclidean

__all__ = ["batch_hard_triplet"]


def batch_hard_triplet(
    feat: torch.Tensor,
    labels: torch.Tensor,
    margin: float = 0.3,
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """Batch-hard triplet loss of ``feat`` (B, C) with identity ``labels`` (B,); fp32 scalar.

    ``groups`` (B,) (e.g. the modality of each row) restricts mining to pairs of *different*
    groups: every anchor's hardest positive and hardest negative then come from the other
    modality — the cross-modality ranking that IR → RGB retrieval needs.
    """
    if feat.shape[0] != labels.shape[0]:
        raise ValueError(
            f"batch_hard_triplet: {feat.shape[0]} feature rows but {labels.shape[0]} labels"
        )
    dist = pairwise_euclidean(feat)
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    eye = torch.eye(same.shape[0], dtype=torch.bool, device=same.device)
    pos = same & ~eye
    neg = ~same
    if groups is not None:
        other = groups.unsqueeze(0) != groups.unsqueeze(1)
        pos, neg = pos & other, neg & other
    # Distances are >= 0, so filling non-positives with 0 leaves the max over positives intact
    # and filling non-negatives with +inf leaves the min over negatives intact.
    hardest_pos = dist.masked_fill(~pos, 0.0).amax(dim=1)
    hardest_neg = dist.masked_fill(~neg, float("inf")).amin(dim=1)
    valid = pos.any(dim=1) & neg.any(dim=1)
    per_anchor = (hardest_pos - hardest_neg + margin).clamp(min=0.0)
    # Invalid anchors have hardest_neg = inf -> per_anchor 0 after the clamp; the where() keeps
    # them out of the sum without multiplying inf by 0. Dividing by max(#valid, 1) gives the mean
    # over valid anchors, and a graph-connected zero when there are none.
    per_anchor = torch.where(valid, per_anchor, torch.zeros_like(per_anchor))
    return per_anchor.sum() / valid.sum().clamp(min=1)
