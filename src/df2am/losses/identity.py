"""Identity (classification) loss L_ID: cross-entropy on a classifier's logits.

Used for both halves of the baseline L_B (the BNNeck classifier, method.md "Losses") and for the
DF² loss L_D (Eq. 8, the fused-feature classifier). Label smoothing is optional (off by default,
as in the paper, which uses plain cross-entropy).

Usage::

    loss = identity_loss(logits, labels)                      # plain CE
    loss = identity_loss(logits, labels, label_smoothing=0.1)  # smoothed targets
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["identity_loss"]


def identity_loss(
    logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` (B, N) against integer ``labels`` (B,).

    With ``label_smoothing`` ε the target is (1 − ε)·onehot + ε/N (PyTorch's definition).
    The logits are cast to fp32 first so the log-softmax is accurate under mixed precision.
    """
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
