"""The typed output of the network's training forward pass.

The model returns a :class:`ModelOutput`; the losses consume it. The model knows nothing about
which losses exist. Rows are ordered ``[RGB batch; IR batch]``: the first ``num_rgb`` rows come
from the RGB images, the rest from the IR images, in the order they were passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ModelOutput:
    """Training-time tensors of ``DF2AMNet.forward(rgb, ir)`` (B = K_rgb + K_ir rows).

    Attributes:
        global_feat: f^g = GAP(f), shape (B, C). Used by the triplet loss and L_A.
        bn_feat: BN(f^g), the BNNeck feature, shape (B, C).
        logits: identity logits of the BNNeck classifier, shape (B, num_classes).
        part_feat: f^p from patch-wise average pooling, shape (B, P, C); None without DF².
        part_weights: ω̃ (softmax over parts), shape (B, P); None without DF².
        fused_feat: f̃ = BN(f^g) + Σ_p ω̃_p f^p, shape (B, C); None without DF².
        fused_bn_feat: BN(f̃), the fused head's BNNeck feature, shape (B, C); None without DF².
        fused_logits: identity logits of the DF² classifier, shape (B, num_classes);
            None without DF².
        num_rgb: how many leading rows are RGB samples.
    """

    global_feat: torch.Tensor
    bn_feat: torch.Tensor
    logits: torch.Tensor
    part_feat: torch.Tensor | None
    part_weights: torch.Tensor | None
    fused_feat: torch.Tensor | None
    fused_bn_feat: torch.Tensor | None
    fused_logits: torch.Tensor | None
    num_rgb: int

    @property
    def modality(self) -> torch.Tensor:
        """0 for RGB rows, 1 for IR rows, shape (B,)."""
        b = self.global_feat.shape[0]
        m = torch.ones(b, dtype=torch.long, device=self.global_feat.device)
        m[: self.num_rgb] = 0
        return m
