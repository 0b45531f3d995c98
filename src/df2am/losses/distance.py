"""Pairwise Euclidean distances for the metric losses, always computed in fp32.

Both the batch-hard triplet loss (on raw f^g) and the affinity losses (on L2-normalised f^g,
Eq. 10) need the full (B, B) distance matrix. We expand ‖a − b‖² = ‖a‖² + ‖b‖² − 2·a·bᵀ, which
is one matmul, but that expansion cancels catastrophically in low precision: with bf16
(8 mantissa bits) and features of norm ~10, ‖a‖² ≈ 100 carries an absolute error of ~0.4, which
swamps the small distances the losses care about. So the features are cast to fp32 and the
matmul runs with autocast disabled, even when the caller is inside a bf16/fp16 autocast region.

Usage::

    d = pairwise_euclidean(feat)  # (B, B) fp32, d[i, i] == 0 exactly, finite gradients
"""

from __future__ import annotations

import torch

__all__ = ["pairwise_euclidean"]

#: Squared distances at or below this are reported as exactly 0 with zero gradient:
#: d sqrt(x)/dx = 1/(2·sqrt(x)) is infinite at 0, and coinciding features (or rounding to slightly
#: negative values) would otherwise give inf/NaN gradients.
_SQ_EPS = 1e-12


def pairwise_euclidean(feat: torch.Tensor) -> torch.Tensor:
    """Euclidean distance matrix D_ij = ‖x_i − x_j‖₂ of the rows of ``feat`` (B, C), in fp32.

    The diagonal is exactly 0 with zero gradient (selected with ``torch.where`` rather than
    relying on cancellation); so is any pair whose squared distance is <= 1e-12 (coinciding
    rows), so gradients are always finite, never NaN.
    """
    if feat.dim() != 2:
        raise ValueError(f"pairwise_euclidean: expected a (B, C) tensor, got {tuple(feat.shape)}")
    # Autocast would re-cast the matmul operands to bf16/fp16; switch it off for this block.
    with torch.autocast(device_type=feat.device.type, enabled=False):
        x = feat.float()
        sq = (x * x).sum(dim=1)
        d2 = sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * (x @ x.t())
        eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
        # The clamp keeps sqrt's gradient finite on the branch torch.where discards (a NaN there
        # would still poison the backward pass); the where() makes those distances exactly 0.
        keep = (d2 > _SQ_EPS) & ~eye
        d = d2.clamp(min=_SQ_EPS).sqrt()
        return torch.where(keep, d, torch.zeros_like(d))
