"""AGW's weighted regularisation triplet (WRT) and CAJ's squared-difference variant (ADP):
hand-computed values, an independent transcription of the reference formula, the reference's
quirks, fp32 under autocast, and their use in the combined loss (``loss.triplet_type``,
``loss.id_mode``)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from df2am.config import LossConfig
from df2am.losses import (
    adaptive_weighted_triplet,
    build_loss,
    identity_loss,
    weighted_regularized_triplet,
)
from df2am.models.output import ModelOutput

# Four points on a line, ids 0, 0, 1, 1: D = |x_i - x_j|.
POINTS = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
IDS = torch.tensor([0, 0, 1, 1])


def _by_hand() -> tuple[list[float], list[float]]:
    """d⁺ and d⁻ of each anchor from the formula, with plain floats."""
    x = [0.0, 1.0, 3.0, 7.0]
    ids = [0, 0, 1, 1]
    d_pos, d_neg = [], []
    for i in range(4):
        pos = [abs(x[i] - x[j]) for j in range(4) if ids[j] == ids[i]]  # self included
        neg = [abs(x[i] - x[j]) for j in range(4) if ids[j] != ids[i]]
        s = max(pos)  # positives: shifted by their largest distance
        z = sum(math.exp(d - s) for d in pos) + 1e-6
        d_pos.append(sum(d * math.exp(d - s) for d in pos) / z)
        z = sum(math.exp(-d) for d in neg) + 1e-6  # negatives: shift 0 (see the docstring)
        d_neg.append(sum(d * math.exp(-d) for d in neg) / z)
    return d_pos, d_neg


def test_wrt_by_hand() -> None:
    d_pos, d_neg = _by_hand()
    # Anchor 0: positives at 0 and 1 -> d⁺ = 1/(1 + e^-1); negatives at 3 and 7 ->
    # d⁻ = (3e^-3 + 7e^-7)/(e^-3 + e^-7).
    assert d_pos[0] == pytest.approx(1 / (1 + math.exp(-1)), rel=1e-5)
    assert d_neg[0] == pytest.approx((3 * math.exp(-3) + 7 * math.exp(-7))
                                     / (math.exp(-3) + math.exp(-7)), rel=1e-4)
    want = sum(math.log1p(math.exp(p - n)) for p, n in zip(d_pos, d_neg, strict=True)) / 4
    got = weighted_regularized_triplet(POINTS, IDS)
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(want, rel=1e-6)
    # The same by hand, anchor by anchor (d⁺, d⁻, log(1 + e^(d⁺ − d⁻))):
    #   x=0: 0.7311, 3.0719 → 0.0919     x=1: 0.7311, 2.0719 → 0.2324
    #   x=3: 3.9281, 2.2689 → 1.8334     x=7: 3.9281, 6.2647 → 0.0923     mean 0.5625
    assert float(got) == pytest.approx(0.5625, abs=2e-4)


def test_adp_by_hand() -> None:
    d_pos, d_neg = _by_hand()
    want = 0.0
    for p, n in zip(d_pos, d_neg, strict=True):
        sq = min((p - n) ** 2, 88.0)
        y = -1.0 if p > n else 1.0
        want += math.log1p(math.exp(-y * sq))
    assert float(adaptive_weighted_triplet(POINTS, IDS)) == pytest.approx(want / 4, rel=1e-6)
    # A violated anchor (its positive further than its negatives) is pushed by the squared gap.
    bad = torch.tensor([[0.0], [5.0], [1.0], [1.5]])
    assert float(adaptive_weighted_triplet(bad, IDS)) > math.log(2)


def _reference_wrt(inputs: torch.Tensor, targets: torch.Tensor, alpha: float = 1.0,
                   square: bool = False, gamma: float = 1.0) -> torch.Tensor:
    """The reference's TripletLoss_WRT / TripletLoss_ADP, transcribed from its loss.py."""
    n = inputs.shape[0]
    sq = inputs.pow(2).sum(1, keepdim=True).expand(n, n)
    dist = (sq + sq.t() - 2 * inputs @ inputs.t()).clamp(min=1e-12).sqrt()
    is_pos = targets.expand(n, n).eq(targets.expand(n, n).t()).float()
    is_neg = targets.expand(n, n).ne(targets.expand(n, n).t()).float()
    dist_ap, dist_an = dist * is_pos, dist * is_neg

    def weights(d: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        diff = d - torch.max(d * mask, dim=1, keepdim=True)[0]
        z = torch.sum(torch.exp(diff) * mask, dim=1, keepdim=True) + 1e-6
        return torch.exp(diff) * mask / z

    fp = torch.sum(dist_ap * weights(dist_ap * alpha, is_pos), dim=1)
    cn = torch.sum(dist_an * weights(-dist_an * alpha, is_neg), dim=1)
    if not square:
        return F.soft_margin_loss(cn - fp, torch.ones_like(fp))
    diff_pow = torch.clamp_max((fp - cn).pow(2) * gamma, 88)
    y1 = (fp > cn).float()
    return F.soft_margin_loss(diff_pow, -(y1 + (y1 - 1)))


@pytest.mark.parametrize("scale", [0.3, 3.0])
def test_equals_the_reference_formula_on_random_features(scale: float) -> None:
    g = torch.Generator().manual_seed(0)
    feat = scale * torch.randn(16, 32, generator=g)
    labels = torch.arange(4).repeat_interleave(4)
    # The only difference: the reference's self-distance is sqrt(1e-12) = 1e-6, ours 0.
    torch.testing.assert_close(weighted_regularized_triplet(feat, labels),
                               _reference_wrt(feat, labels), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(adaptive_weighted_triplet(feat, labels),
                               _reference_wrt(feat, labels, square=True), rtol=1e-5, atol=1e-6)
    # Gradients too.
    a = feat.clone().requires_grad_(True)
    b = feat.clone().requires_grad_(True)
    weighted_regularized_triplet(a, labels).backward()
    _reference_wrt(b, labels).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)


def test_far_negatives_are_damped_by_the_reference_epsilon() -> None:
    """The negatives' softmax is not shifted, so far negatives (D = 40) give d⁻ ≈ 0."""
    feat = torch.tensor([[0.0], [1.0], [40.0], [41.0]])
    d_pos = 1 / (1 + math.exp(-1))
    z = math.exp(-40) + math.exp(-41) + 1e-6
    d_neg = (40 * math.exp(-40) + 39 * math.exp(-39)) / (math.exp(-39) + math.exp(-40) + 1e-6)
    want = (2 * math.log1p(math.exp(d_pos - (40 * math.exp(-40) + 41 * math.exp(-41)) / z))
            + 2 * math.log1p(math.exp(d_pos - d_neg))) / 4
    got = weighted_regularized_triplet(feat, IDS)
    assert float(got) == pytest.approx(want, rel=1e-5)
    assert float(got) > 0.9  # ≈ log(1 + e^0.73): the far negatives barely count


def test_fp32_under_autocast_and_finite_gradients_for_coinciding_rows() -> None:
    feat = torch.randn(8, 16, generator=torch.Generator().manual_seed(1))
    feat[1] = feat[0]  # a zero distance off the diagonal
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    plain = weighted_regularized_triplet(feat, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = weighted_regularized_triplet(feat, labels)
        auto_adp = adaptive_weighted_triplet(feat, labels)
    assert auto.dtype == auto_adp.dtype == torch.float32
    torch.testing.assert_close(auto, plain)
    x = feat.clone().requires_grad_(True)
    (weighted_regularized_triplet(x, labels) + adaptive_weighted_triplet(x, labels)).backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())


def test_groups_restrict_pairs_to_the_other_modality() -> None:
    feat = torch.randn(8, 4, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    groups = torch.arange(8) >= 4
    cross = weighted_regularized_triplet(feat, labels, groups=groups)
    # By hand: anchor i's positives/negatives are the other half's rows only.
    d = torch.cdist(feat, feat)
    losses = []
    for i in range(8):
        other = [j for j in range(8) if groups[j] != groups[i]]
        pos = torch.tensor([float(d[i, j]) for j in other if labels[j] == labels[i]])
        neg = torch.tensor([float(d[i, j]) for j in other if labels[j] != labels[i]])
        wp = torch.exp(pos - pos.max()) / (torch.exp(pos - pos.max()).sum() + 1e-6)
        wn = torch.exp(-neg) / (torch.exp(-neg).sum() + 1e-6)
        losses.append(F.softplus((wp * pos).sum() - (wn * neg).sum()))
    torch.testing.assert_close(cross, torch.stack(losses).mean(), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- combined loss

LABELS = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])


def _out() -> ModelOutput:
    g = torch.Generator().manual_seed(3)
    feat = torch.randn(8, 6, generator=g)
    return ModelOutput(global_feat=feat, bn_feat=feat * 2, logits=torch.randn(8, 3, generator=g),
                       part_feat=None, part_weights=None, fused_feat=None, fused_bn_feat=None,
                       fused_logits=None, num_rgb=4)


def _agw(**kw: object) -> LossConfig:
    base = {"use_df2": False, "use_affinity": False, "triplet_type": "wrt",
            "triplet_mode": "joint", "id_mode": "joint"}
    return LossConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_agw_loss_is_joint_ce_plus_joint_wrt() -> None:
    out = _out()
    loss = build_loss(_agw())(out, LABELS)
    assert set(loss.parts) == {"id", "triplet"}
    torch.testing.assert_close(loss.parts["id"], F.cross_entropy(out.logits, LABELS))
    torch.testing.assert_close(loss.parts["triplet"],
                               weighted_regularized_triplet(out.global_feat, LABELS))
    torch.testing.assert_close(loss.total, loss.parts["id"] + loss.parts["triplet"])


@pytest.mark.parametrize("kind", ["wrt", "adp"])
def test_triplet_type_and_modes(kind: str) -> None:
    out = _out()
    fn = weighted_regularized_triplet if kind == "wrt" else adaptive_weighted_triplet
    per = build_loss(_agw(triplet_type=kind, triplet_mode="per_modality",
                          id_mode="per_modality"))(out, LABELS)
    torch.testing.assert_close(
        per.parts["triplet"], fn(out.global_feat[:4], LABELS[:4]) + fn(out.global_feat[4:],
                                                                       LABELS[4:]))
    torch.testing.assert_close(per.parts["id"], identity_loss(out.logits[:4], LABELS[:4])
                               + identity_loss(out.logits[4:], LABELS[4:]))
    cross = build_loss(_agw(triplet_type=kind, triplet_mode="cross"))(out, LABELS)
    torch.testing.assert_close(cross.parts["triplet"],
                               fn(out.global_feat, LABELS, groups=torch.arange(8) >= 4))
    on_bn = build_loss(_agw(triplet_type=kind, triplet_feature="bn_global"))(out, LABELS)
    torch.testing.assert_close(on_bn.parts["triplet"], fn(out.bn_feat, LABELS))


def test_hard_triplet_default_is_unchanged() -> None:
    from df2am.losses import batch_hard_triplet

    out = _out()
    loss = build_loss(LossConfig(use_df2=False, use_affinity=False))(out, LABELS)
    want = (batch_hard_triplet(out.global_feat[:4], LABELS[:4], 0.3)
            + batch_hard_triplet(out.global_feat[4:], LABELS[4:], 0.3))
    torch.testing.assert_close(loss.parts["triplet"], want)
