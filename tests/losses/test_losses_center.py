"""Cross-modality centre terms (loss.center_weight / center_mode) against hand computations."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from df2am.losses.center import cross_modality_center_loss, cross_modality_prototype_loss


def test_center_distance_by_hand() -> None:
    # Rows [RGB; IR]: id 0 has RGB rows (1,0),(1,0) and IR row (0,1); id 1 RGB (0,1), IR (0,1).
    feat = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 3.0], [0.0, 5.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 0, 1])
    # id 0: centres (1,0) vs (0,1) → √2; id 1: (0,1) vs (0,1) → 0; mean over both ids.
    value = cross_modality_center_loss(feat, labels, num_rgb=3)
    torch.testing.assert_close(value, torch.tensor(math.sqrt(2) / 2), atol=1e-5, rtol=0)


def test_center_ignores_ids_missing_a_modality() -> None:
    feat = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    labels = torch.tensor([0, 1, 0])  # id 1 only in RGB
    torch.testing.assert_close(cross_modality_center_loss(feat, labels, 2), torch.tensor(0.0),
                               atol=1e-5, rtol=0)


def test_prototype_loss_by_hand() -> None:
    torch.manual_seed(0)
    feat = torch.randn(8, 5)
    labels = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    k, tau = 4, 0.5
    unit = F.normalize(feat, dim=1)
    total = 0.0
    for rows, other in ((range(4, 8), range(0, 4)), (range(0, 4), range(4, 8))):
        centres = [F.normalize(sum(unit[j] for j in other if labels[j] == c), dim=0)
                   for c in (0, 1)]
        ces = []
        for i in rows:
            logits = torch.stack([unit[i] @ c for c in centres]) / tau
            ces.append(-torch.log_softmax(logits, 0)[labels[i]])
        total = total + torch.stack(ces).mean()
    expected = total / 2
    value = cross_modality_prototype_loss(feat, labels, k, temperature=tau)
    torch.testing.assert_close(value, expected, atol=1e-5, rtol=0)


def test_losses_have_gradients_and_fp32_under_autocast() -> None:
    feat = torch.randn(8, 6, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = cross_modality_center_loss(feat.bfloat16(), labels, 4)
        b = cross_modality_prototype_loss(feat.bfloat16(), labels, 4)
    assert a.dtype == torch.float32 and b.dtype == torch.float32
    (a + b).backward()
    assert feat.grad is not None and torch.isfinite(feat.grad).all()
