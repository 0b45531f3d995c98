"""batch_hard_triplet: a hand example, anchor exclusion, and a brute-force reference."""

from __future__ import annotations

import math

import pytest
import torch

from df2am.losses import batch_hard_triplet

# Five 2-d points (ids 0,1,0,1,0) plus a far singleton of id 2:
#   x0=(0,0) id0, x1=(3,0) id1, x2=(0,4) id0, x3=(3,4) id1, x4=(0,1) id0, x5=(10,10) id2
# Distances: d01=3 d02=4 d03=5 d04=1 d12=5 d13=4 d14=√10 d23=3 d24=3 d34=√18; x5 is >= 9.2 away.
# margin 0.3:
#   anchor0: pos {d02=4, d04=1} -> 4; neg {d01=3, d03=5, ...} -> 3; 4-3+0.3 = 1.3
#   anchor1: pos {d13=4}; neg {d01=3, d12=5, d14=√10} -> 3;         1.3
#   anchor2: pos {d02=4, d24=3} -> 4; neg {d12=5, d23=3} -> 3;      1.3
#   anchor3: pos {d13=4}; neg {d03=5, d23=3, d34=√18} -> 3;         1.3
#   anchor4: pos {d04=1, d24=3} -> 3; neg {d14=√10, d34=√18} -> √10; 3.3 - √10
#   anchor5: no positive -> excluded (mean over the 5 valid anchors)
FEAT = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [3.0, 4.0], [0.0, 1.0], [10.0, 10.0]])
LABELS = torch.tensor([0, 1, 0, 1, 0, 2])
EXPECTED = (4 * 1.3 + 3.3 - math.sqrt(10.0)) / 5


def test_hand_example() -> None:
    got = batch_hard_triplet(FEAT, LABELS, margin=0.3)
    assert got.item() == pytest.approx(EXPECTED, abs=1e-5)


def test_hand_example_without_singleton_is_same() -> None:
    # Dropping the excluded anchor (which is never a hardest negative) changes nothing.
    got = batch_hard_triplet(FEAT[:5], LABELS[:5], margin=0.3)
    assert got.item() == pytest.approx(EXPECTED, abs=1e-5)


def test_no_valid_anchor_gives_graph_connected_zero() -> None:
    feat = torch.randn(3, 4, requires_grad=True)
    for labels in (torch.tensor([0, 1, 2]), torch.tensor([5, 5, 5])):  # no pos / no neg
        loss = batch_hard_triplet(feat, labels)
        assert loss.item() == 0.0
        assert loss.requires_grad and loss.grad_fn is not None
        (grad,) = torch.autograd.grad(loss, feat)
        assert torch.equal(grad, torch.zeros_like(feat))


def _brute_force(feat: torch.Tensor, labels: torch.Tensor, margin: float) -> float:
    """Independent reference: Python double loop in float64."""
    x = feat.double().tolist()
    y = labels.tolist()
    n = len(y)

    def dist(i: int, j: int) -> float:
        return math.sqrt(sum((a - b) ** 2 for a, b in zip(x[i], x[j], strict=True)))

    losses = []
    for i in range(n):
        pos = [dist(i, j) for j in range(n) if j != i and y[j] == y[i]]
        neg = [dist(i, j) for j in range(n) if y[j] != y[i]]
        if not pos or not neg:
            continue
        losses.append(max(0.0, max(pos) - min(neg) + margin))
    return sum(losses) / len(losses) if losses else 0.0


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_matches_brute_force(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n = 12
    feat = torch.randn(n, 6, generator=g) * 2.0
    # ids 0..3 with some singletons so the exclusion path is exercised too
    labels = torch.randint(0, 5, (n,), generator=g)
    margin = 0.3 + seed  # large margins make most anchors active
    got = batch_hard_triplet(feat, labels, margin=margin)
    assert got.item() == pytest.approx(_brute_force(feat, labels, margin), abs=1e-4)


def test_gradient_finite_with_duplicates() -> None:
    feat = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [4.0, 6.0]], requires_grad=True)
    loss = batch_hard_triplet(feat, torch.tensor([0, 0, 1, 1]), margin=0.3)
    loss.backward()
    assert torch.isfinite(feat.grad).all()
    # anchor0: pos d01 = 0, neg min(d02=0, d03=5) = 0 -> 0.3; anchor1 the same;
    # anchor2: pos d23 = 5, neg 0 -> 5.3; anchor3: pos 5, neg min(5, 5) -> 0.3. Mean = 6.2 / 4
    assert loss.item() == pytest.approx(6.2 / 4, abs=1e-5)


def test_cross_modality_mining_by_hand() -> None:
    # Rows 0-2 one modality, 3-5 the other, on a line: x = 0, 1, 5 | 0.5, 4, 9, ids 0,1,2 | 0,1,2.
    # Cross mining looks only at the other modality's rows:
    #   anchor 0 (x=0, id0): pos 0.5; negs {4, 9} -> 4: 0.5 - 4 + 0.3 < 0 -> 0
    #   anchor 1 (x=1, id1): pos |1-4| = 3; negs {0.5, 8} -> 0.5: 3 - 0.5 + 0.3 = 2.8
    #   anchor 2 (x=5, id2): pos 4; negs {4.5, 1} -> 1: 4 - 1 + 0.3 = 3.3
    #   anchor 3 (x=.5, id0): pos .5; negs {1, 5} -> distance .5: .5 - .5 + .3 = 0.3
    #   anchor 4 (x=4, id1): pos 3; negs {4, 1} -> 1: 3 - 1 + .3 = 2.3
    #   anchor 5 (x=9, id2): pos 4; negs {9, 8} -> 8: 4 - 8 + .3 < 0 -> 0
    x = torch.tensor([[0.0], [1.0], [5.0], [0.5], [4.0], [9.0]])
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    modality = torch.tensor([0, 0, 0, 1, 1, 1])
    got = batch_hard_triplet(x, labels, 0.3, groups=modality)
    assert got.item() == pytest.approx((2.8 + 3.3 + 0.3 + 2.3) / 6, abs=1e-5)
    # Row 1 moved onto row 0 (same modality, other id): joint mining would now find a
    # negative at distance 0 for anchor 0; cross mining never looks at that pair. By hand:
    # anchor 1 (x=0): pos 4, neg .5 -> 3.8; anchor 3: pos .5, neg .5 -> .3; anchor 4: pos 4,
    # neg 1 -> 3.3; anchor 2 unchanged 3.3; anchors 0 and 5: 0.
    moved = x.clone()
    moved[1] = 0.0
    got = batch_hard_triplet(moved, labels, 0.3, groups=modality)
    assert got.item() == pytest.approx((3.8 + 3.3 + 0.3 + 3.3) / 6, abs=1e-5)
