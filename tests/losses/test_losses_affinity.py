"""normalized_euclidean, L_A (Eq. 12) and L1 (Eq. 11) on hand examples."""

from __future__ import annotations

import math

import pytest
import torch

from df2am.losses import affinity_l1_loss, affinity_margin_loss, normalized_euclidean

R2 = math.sqrt(2.0)
# f0=(2,0) -> u0=(1,0)      id0
# f1=(0,5) -> u1=(0,1)      id0
# f2=(-3,0) -> u2=(-1,0)    id1
# f3=(1,1) -> u3=(1,1)/√2   id1
FEAT = torch.tensor([[2.0, 0.0], [0.0, 5.0], [-3.0, 0.0], [1.0, 1.0]])
LABELS = torch.tensor([0, 0, 1, 1])
# Distances between unit vectors:
#   d01 = √2, d02 = 2, d03 = √(2-√2), d12 = √2, d13 = √(2-√2), d23 = √(2+√2)
D_NEAR = math.sqrt(2.0 - R2)  # ≈ 0.765
D_FAR = math.sqrt(2.0 + R2)  # ≈ 1.848
EXPECTED_D = torch.tensor(
    [
        [0.0, R2, 2.0, D_NEAR],
        [R2, 0.0, R2, D_NEAR],
        [2.0, R2, 0.0, D_FAR],
        [D_NEAR, D_NEAR, D_FAR, 0.0],
    ]
)


def test_normalized_euclidean_hand() -> None:
    d = normalized_euclidean(FEAT)
    assert d.dtype == torch.float32
    torch.testing.assert_close(d, EXPECTED_D, atol=1e-5, rtol=0)


def test_margin_loss_hand() -> None:
    # m = 1. Positive pairs (0,1), (2,3) contribute D (each twice, i<j and j<i):
    #   2·√2 + 2·√(2+√2). Diagonal contributes 0.
    # Negative pairs contribute [m - D]_+: (0,2): [1-2]_+ = 0, (1,2): [1-√2]_+ = 0,
    #   (0,3) and (1,3): 1 - √(2-√2) each, each twice -> 4·(1 - √(2-√2)).
    # Mean over 4·4 = 16 entries.
    expected = (2 * R2 + 2 * D_FAR + 4 * (1 - D_NEAR)) / 16
    got = affinity_margin_loss(FEAT, LABELS, margin=1.0)
    assert got.item() == pytest.approx(expected, abs=1e-5)


def test_l1_loss_hand() -> None:
    # δ = 1.5. Positives: |D - 0| = D -> 2·√2 + 2·√(2+√2); diagonal 0.
    # Negatives: |D - 1.5|: (0,2): 0.5, (1,2): 1.5-√2, (0,3), (1,3): 1.5-√(2-√2); each twice.
    expected = (2 * R2 + 2 * D_FAR + 2 * (0.5 + (1.5 - R2) + 2 * (1.5 - D_NEAR))) / 16
    got = affinity_l1_loss(FEAT, LABELS, delta=1.5)
    assert got.item() == pytest.approx(expected, abs=1e-5)


def test_margin_loss_zero_when_positives_coincide_and_negatives_beyond_margin() -> None:
    # id0 along +x, id1 along +y, id2 along -x (magnitudes differ, directions coincide):
    # positive distances 0; negative distances √2 or 2, all > m = 1.2 -> every term is 0.
    feat = torch.tensor(
        [[1.0, 0.0], [4.0, 0.0], [0.0, 2.0], [0.0, 8.0], [-0.5, 0.0], [-16.0, 0.0]],
        requires_grad=True,
    )
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    loss = affinity_margin_loss(feat, labels, margin=1.2)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(feat.grad, torch.zeros_like(feat))
    # ...but a margin beyond √2 makes the +x/+y negatives active: 4 ordered (id0,id1) pairs
    # and 4 (id1,id2) pairs at distance √2 give (1.5 - √2) each; the (id0,id2) pairs are at 2.
    loss = affinity_margin_loss(feat.detach(), labels, margin=1.5)
    assert loss.item() == pytest.approx(16 * (1.5 - R2) / 36, abs=1e-5)


def test_normalized_distances_in_range_and_finite_gradient() -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 8, generator=g)
    # duplicates, a scaled copy and an antipodal copy: distances exactly 0 and 2
    feat = torch.cat([base, base[:2], 3.0 * base[2:3], -base[3:4]]).requires_grad_()
    d = normalized_euclidean(feat)
    assert (d >= 0).all() and (d <= 2).all()
    assert torch.equal(torch.diagonal(d), torch.zeros(d.shape[0]))
    ref = torch.cdist(
        torch.nn.functional.normalize(feat.detach().double(), dim=1),
        torch.nn.functional.normalize(feat.detach().double(), dim=1),
    )
    torch.testing.assert_close(d.double(), ref, atol=2e-3, rtol=0)
    assert d[3, 9].item() == pytest.approx(2.0, abs=1e-5)  # antipodal
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1, 2, 3])
    for loss in (
        d.sum(),
        affinity_margin_loss(feat, labels, 0.5),
        affinity_l1_loss(feat, labels, 1.0),
    ):
        (grad,) = torch.autograd.grad(loss, feat)
        assert torch.isfinite(grad).all()


def test_affinity_reductions_scale_by_hand() -> None:
    # Two unit features of different ids at distance d < margin 0.5: each of the two negative
    # pairs costs 0.5 - d, the two diagonal entries 0.
    from df2am.losses.affinity import AFFINITY_REDUCTIONS

    a = torch.tensor([[1.0, 0.0], [math.cos(0.3), math.sin(0.3)]])
    d = float(torch.linalg.vector_norm(a[0] - a[1]))
    labels = torch.tensor([0, 1])
    per_pair = [0.0, 0.5 - d, 0.5 - d, 0.0]
    want = {"pairs": sum(per_pair) / 4, "row": sum(per_pair) / 2, "sum": sum(per_pair)}
    assert set(AFFINITY_REDUCTIONS) == set(want)
    for red, value in want.items():
        assert float(affinity_margin_loss(a, labels, 0.5, red)) == pytest.approx(value, abs=1e-6)
    # L1 with delta 1: |d - 1| for the two negative pairs, 0 on the diagonal.
    l1 = [0.0, 1 - d, 1 - d, 0.0]
    assert float(affinity_l1_loss(a, labels, 1.0, "row")) == pytest.approx(sum(l1) / 2, abs=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        affinity_margin_loss(a, labels, 0.5, "max")
