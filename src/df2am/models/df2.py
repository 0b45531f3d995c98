"""The DF² (dual-level feature fusion) module, Eq. 5–7 of the paper (method.md, "DF² module").

Given the shared feature map f (B, C, H, W), the global feature f^g = GAP(f) and the baseline
BNNeck output BN(f^g)::

    f^p   = mean of horizontal strip p of f,   p = 1..P     (patch-wise average pooling, Eq. 5)
    ω_p   = φ(f^p)          (default, Sec. 3.3: "a learned transformation function on itself")
          = φ([f^p; f^g])   (option part_attention="part_global": "from global and local views")
          = ω_p             (option part_attention="global_vector": one learned ω ∈ R^P)
    ω̃     = softmax_p(ω)                                          (Eq. 6)
    f*    = Σ_p ω̃_p f^p                                           (Eq. 6)
    f̃     = BN(f^g) + f*                                          (Eq. 7)
    logits = W · BN'(f̃)     (its own BNNeck + bias-free classifier, for L_D)

Our readings of the paper: φ is a small shared MLP (C → C/16 → 1, ReLU) applied to every part
at once; the "global" term of f̃ is the baseline BNNeck output BN(f^g) rather than the raw f^g.
Strips are equal (P | H, ``part_pooling="strict"``) or adaptive-pooling bins ("adaptive").

    import torch
    from df2am.models.df2 import DF2Module

    df2 = DF2Module(channels=512, num_parts=4, num_classes=10)
    f = torch.randn(6, 512, 8, 4)
    g = f.mean((2, 3))
    out = df2(f, g, g)
    out.part_weights.sum(1)  # -> ones(6)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from df2am.errors import Df2amError

__all__ = ["DF2Module", "DF2Output", "BNNeck", "part_pool", "PartCountError", "PartPooling"]

PartPooling = Literal["strict", "adaptive"]
PartAttention = Literal["part", "part_global", "global_vector"]
_POOLINGS: tuple[str, ...] = get_args(PartPooling)
_ATTENTIONS: tuple[str, ...] = get_args(PartAttention)


class PartCountError(Df2amError, ValueError):
    """``model.num_parts`` does not divide the feature-map height."""


def part_pool(feat: torch.Tensor, num_parts: int, mode: PartPooling = "strict") -> torch.Tensor:
    """Patch-wise average pooling (Eq. 5): P horizontal strips → (B, P, C).

    ``mode="strict"``: P must divide the feature height H, so every strip covers the same rows.
    ``mode="adaptive"``: any P; strip p averages rows floor(p·H/P) .. ceil((p+1)·H/P) - 1
    (PyTorch's adaptive pooling bins: they overlap when P does not divide H).
    """
    if mode not in _POOLINGS:
        raise ValueError(f"part pooling must be one of {_POOLINGS}, got {mode!r}")
    height = feat.shape[2]
    if num_parts < 1:
        raise PartCountError(f"model.num_parts must be >= 1, got {num_parts}")
    if mode == "strict" and height % num_parts != 0:
        raise PartCountError(
            f"model.num_parts={num_parts} must divide the feature-map height H={height} "
            f"(input height / 16 with last_stride=1, / 32 with last_stride=2); "
            f"choose a divisor of {height}, change the input height or set "
            f"model.part_pooling=adaptive"
        )
    # (B, C, P, 1) → (B, P, C). adaptive pooling works on any memory format; the result is
    # tiny, so the transpose's copy (if any) costs nothing.
    return F.adaptive_avg_pool2d(feat, (num_parts, 1)).flatten(2).transpose(1, 2)


class BNNeck(nn.BatchNorm1d):
    """BatchNorm1d with its bias frozen at 0 (the BNNeck of "Bag of Tricks", Luo et al. 2019).

    Freezing the shift keeps the normalised feature centred, which suits the cosine metric used
    at test time.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.bias.requires_grad_(False)


def make_classifier(channels: int, num_classes: int) -> nn.Linear:
    """Bias-free identity classifier, initialised N(0, 0.001²) as in the BNNeck baseline."""
    classifier = nn.Linear(channels, num_classes, bias=False)
    nn.init.normal_(classifier.weight, std=0.001)
    return classifier


@dataclass
class DF2Output:
    """Tensors of one DF² forward pass (see :class:`~df2am.models.output.ModelOutput`)."""

    part_feat: torch.Tensor  # f^p, (B, P, C)
    part_weights: torch.Tensor  # ω̃, (B, P)
    fused_feat: torch.Tensor  # f̃, (B, C)
    fused_bn_feat: torch.Tensor  # BN'(f̃), (B, C)
    fused_logits: torch.Tensor  # (B, num_classes)


class DF2Module(nn.Module):
    """Part pooling, local attention and the fused head (Eq. 5–7).

    Args:
        channels: C of the feature map.
        num_parts: P, the number of horizontal strips.
        num_classes: training identities of the fused classifier.
        part_attention: "part" (ω_p = φ(f^p), Sec. 3.3), "part_global" (φ([f^p; f^g])) or
            "global_vector" (one learned ω ∈ R^P, zero-initialised, the same for every image).
        reduction: hidden width of φ is ``max(channels // reduction, 1)``.
        part_pooling: "strict" (P must divide H at run time) or "adaptive" (see
            :func:`part_pool`).
    """

    def __init__(
        self,
        channels: int,
        num_parts: int,
        num_classes: int,
        part_attention: PartAttention = "part",
        reduction: int = 16,
        part_pooling: PartPooling = "strict",
    ) -> None:
        super().__init__()
        if part_attention not in _ATTENTIONS:
            raise ValueError(f"part_attention must be one of {_ATTENTIONS}, got {part_attention!r}")
        if part_pooling not in _POOLINGS:
            raise ValueError(f"part_pooling must be one of {_POOLINGS}, got {part_pooling!r}")
        if num_parts < 1:
            raise PartCountError(f"model.num_parts must be >= 1, got {num_parts}")
        self.num_parts = num_parts
        self.part_attention = part_attention
        self.part_pooling = part_pooling
        self.attention: nn.Sequential | None = None
        self.omega: nn.Parameter | None = None
        if part_attention == "global_vector":
            # Zeros: ω̃ starts uniform (plain averaging of the parts). No φ is built, so no
            # parameter goes unused (DDP would wait for its gradient forever).
            self.omega = nn.Parameter(torch.zeros(num_parts))
        else:
            in_dim = channels if part_attention == "part" else 2 * channels
            hidden = max(channels // reduction, 1)
            # φ: shared by all parts; nn.Linear acts on the last dim so (B, P, C) is handled in
            # one call, with no loop over parts or samples.
            self.attention = nn.Sequential(
                nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1)
            )
        self.bnneck = BNNeck(channels)
        self.classifier = make_classifier(channels, num_classes)

    def forward(
        self, feat_map: torch.Tensor, global_feat: torch.Tensor, bn_global: torch.Tensor
    ) -> DF2Output:
        """Args: feature map f (B, C, H, W), f^g (B, C), BN(f^g) (B, C)."""
        parts = part_pool(feat_map, self.num_parts, self.part_pooling)  # f^p, (B, P, C)
        if self.omega is not None:
            scores = self.omega.expand(parts.shape[0], -1)  # ω, (B, P), identical rows
        else:
            assert self.attention is not None
            if self.part_attention == "part":
                att_in = parts
            else:
                att_in = torch.cat(
                    [parts, global_feat.unsqueeze(1).expand(-1, self.num_parts, -1)], dim=2
                )
            scores = self.attention(att_in).squeeze(2)  # ω, (B, P)
        # softmax in fp32: under autocast the scores may be bf16 and the weights must sum to 1.
        weights = torch.softmax(scores.float(), dim=1)  # ω̃
        f_star = torch.bmm(weights.unsqueeze(1).to(parts.dtype), parts).squeeze(1)  # Σ_p ω̃_p f^p
        fused = bn_global + f_star  # f̃ = BN(f^g) + f*
        fused_bn = self.bnneck(fused)
        return DF2Output(
            part_feat=parts,
            part_weights=weights,
            fused_feat=fused,
            fused_bn_feat=fused_bn,
            fused_logits=self.classifier(fused_bn),
        )
