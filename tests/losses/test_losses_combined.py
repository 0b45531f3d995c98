"""DF2AMLoss / build_loss: the Eq. 4 combination and the five Table 3 switch settings."""

from __future__ import annotations

import math

import pytest
import torch

from df2am.config import LossConfig
from df2am.errors import ConfigError
from df2am.losses import (
    DF2AMLoss,
    LossOutput,
    affinity_l1_loss,
    affinity_margin_loss,
    batch_hard_triplet,
    build_loss,
)
from df2am.models.output import ModelOutput

LAMBDA = 0.7
ZETA = 1.9
NUM_CLASSES = 3
# Rows [RGB; IR]: 4 RGB rows then 4 IR rows, ids 0,0,1,1 in each modality.
LABELS = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
K = 4


def _output(global_feat: torch.Tensor | None = None, df2: bool = True) -> ModelOutput:
    b = LABELS.shape[0]
    if global_feat is None:
        global_feat = torch.randn(b, 5, generator=torch.Generator().manual_seed(0))
    # Zero logits: uniform softmax over 3 classes -> CE = ln 3 for every row (any smoothing).
    logits = torch.zeros(b, NUM_CLASSES)
    # Fused logits: ln 2 at the true class, 0 elsewhere -> p_true = 2 / (2 + 1 + 1) = 1/2,
    # so CE = ln 2 for every row.
    fused = torch.zeros(b, NUM_CLASSES)
    fused[torch.arange(b), LABELS] = math.log(2.0)
    return ModelOutput(
        global_feat=global_feat,
        bn_feat=global_feat,
        logits=logits,
        part_feat=None,
        part_weights=None,
        fused_feat=None,
        fused_bn_feat=None,
        fused_logits=fused if df2 else None,
        num_rgb=K,
    )


def _cfg(baseline: bool, df2: bool, affinity: bool, **kw: object) -> LossConfig:
    return LossConfig(
        use_baseline=baseline,
        use_df2=df2,
        use_affinity=affinity,
        lambda_df2=LAMBDA,
        zeta_affinity=ZETA,
        affinity_margin=0.5,
        **kw,  # type: ignore[arg-type]
    )


SETTINGS = {
    # name: (use_baseline, use_df2, use_affinity) -> expected parts keys
    "baseline": ((True, False, False), {"id", "triplet"}),
    "baseline+df2": ((True, True, False), {"id", "triplet", "df2"}),
    "baseline+am": ((True, False, True), {"id", "triplet", "affinity"}),
    "df2+am w/o L_B": ((False, True, True), {"df2", "affinity"}),
    "full": ((True, True, True), {"id", "triplet", "df2", "affinity"}),
}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_ablation_switches(name: str) -> None:
    (baseline, df2, affinity), keys = SETTINGS[name]
    out = _output()
    res = build_loss(_cfg(baseline, df2, affinity))(out, LABELS)
    assert isinstance(res, LossOutput)
    assert set(res.parts) == keys

    f = out.global_feat
    # Hand-combined terms: L_ID = ln 3 per modality; L_D = ln 2 per modality (see _output).
    expected_parts = {
        "id": 2 * math.log(3.0),
        "triplet": (
            batch_hard_triplet(f[:K], LABELS[:K], 0.3) + batch_hard_triplet(f[K:], LABELS[K:], 0.3)
        ).item(),
        "df2": LAMBDA * 2 * math.log(2.0),
        "affinity": ZETA * affinity_margin_loss(f, LABELS, 0.5).item(),
    }
    for key in keys:
        assert res.parts[key].item() == pytest.approx(expected_parts[key], abs=1e-5), key
    assert res.total.item() == pytest.approx(sum(expected_parts[k] for k in keys), abs=1e-5)
    assert res.total.item() == pytest.approx(sum(p.item() for p in res.parts.values()), abs=1e-6)
    # the triplet and affinity terms are not trivially zero in this example
    assert expected_parts["triplet"] > 0.1 and expected_parts["affinity"] > 0.1


def test_l1_affinity_variant() -> None:
    out = _output()
    res = DF2AMLoss(_cfg(False, False, True, affinity_type="l1", affinity_delta=1.3))(out, LABELS)
    expected = ZETA * affinity_l1_loss(out.global_feat, LABELS, 1.3).item()
    assert res.parts["affinity"].item() == pytest.approx(expected, abs=1e-6)
    assert res.parts["affinity"].item() != pytest.approx(
        ZETA * affinity_margin_loss(out.global_feat, LABELS, 0.5).item(), abs=1e-3
    )


def test_label_smoothing_applies_to_id_and_df2() -> None:
    # ε = 0.3, N = 3: targets 0.8 (true) / 0.1 (others). Fused p = [1/2, 1/4, 1/4]:
    # CE = 0.8·ln 2 + 0.2·ln 4 = 1.2·ln 2 per modality. Zero logits: CE = ln 3 regardless.
    res = build_loss(_cfg(True, True, False, label_smoothing=0.3))(_output(), LABELS)
    assert res.parts["df2"].item() == pytest.approx(LAMBDA * 2 * 1.2 * math.log(2.0), abs=1e-5)
    assert res.parts["id"].item() == pytest.approx(2 * math.log(3.0), abs=1e-5)


# 1-d features: RGB 0,1 (id0), 3,4 (id1); IR 10,11 (id0), 13,14 (id1).
LINE = torch.tensor([0.0, 1.0, 3.0, 4.0, 10.0, 11.0, 13.0, 14.0]).unsqueeze(1)


def test_per_modality_vs_joint_triplet() -> None:
    # Per modality: every anchor's hardest positive is at 1, hardest negative at >= 2:
    #   1 - 2 + 0.3 < 0 -> L_BH^RGB = L_BH^IR = 0.
    # Joint: the modality gap makes cross-modality positives the hardest ones, e.g.
    #   anchor 0 (id0): pos {1, 10, 11} -> 11, neg {3, 4, 13, 14} -> 3: 11 - 3 + 0.3 = 8.3
    #   per anchor 8.3, 8.3, 9.3, 7.3, 7.3, 9.3, 8.3, 8.3 -> mean 66.4 / 8 = 8.3
    out = _output(LINE)
    per = build_loss(_cfg(True, False, False, triplet_mode="per_modality"))(out, LABELS)
    joint = build_loss(_cfg(True, False, False, triplet_mode="joint"))(out, LABELS)
    assert per.parts["triplet"].item() == pytest.approx(0.0, abs=1e-6)
    assert joint.parts["triplet"].item() == pytest.approx(8.3, abs=1e-5)
    # the identity part stays per modality in both modes: 2 ln 3
    assert per.parts["id"].item() == pytest.approx(2 * math.log(3.0), abs=1e-6)
    assert joint.parts["id"].item() == pytest.approx(2 * math.log(3.0), abs=1e-6)


def test_backward_reaches_every_input() -> None:
    out = _output()
    for t in (out.global_feat, out.logits, out.fused_logits):
        t.requires_grad_()
    res = build_loss(_cfg(True, True, True))(out, LABELS)
    res.total.backward()
    for t in (out.global_feat, out.logits, out.fused_logits):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_df2_without_fused_logits_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="df2_module"):
        build_loss(_cfg(True, True, False))(_output(df2=False), LABELS)
    # without L_D the DF²-less output is fine
    res = build_loss(_cfg(True, False, True))(_output(df2=False), LABELS)
    assert set(res.parts) == {"id", "triplet", "affinity"}


def test_bad_inputs() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        build_loss(_cfg(False, False, False))
    with pytest.raises(ValueError, match="labels"):
        build_loss(_cfg(True, True, True))(_output(), LABELS[:5])


def test_loss_feature_switches_pick_the_bn_feature() -> None:
    # bn_feat differs from global_feat: the switches decide which one the metric terms see.
    out = _output()
    out.bn_feat = torch.randn(out.global_feat.shape, generator=torch.Generator().manual_seed(1))
    base = _cfg(True, True, True)
    parts = DF2AMLoss(base)(out, LABELS).parts
    assert float(parts["affinity"]) == pytest.approx(
        ZETA * float(affinity_margin_loss(out.global_feat, LABELS, 0.5)))
    on_bn = DF2AMLoss(_cfg(True, True, True, affinity_feature="bn_global",
                           triplet_feature="bn_global"))(out, LABELS).parts
    assert float(on_bn["affinity"]) == pytest.approx(
        ZETA * float(affinity_margin_loss(out.bn_feat, LABELS, 0.5)))
    want_tri = batch_hard_triplet(out.bn_feat[:K], LABELS[:K], 0.3) + batch_hard_triplet(
        out.bn_feat[K:], LABELS[K:], 0.3)
    assert float(on_bn["triplet"]) == pytest.approx(float(want_tri))
    assert float(on_bn["id"]) == pytest.approx(float(parts["id"]))  # CE terms untouched
    row = DF2AMLoss(_cfg(True, True, True, affinity_reduction="row"))(out, LABELS).parts
    assert float(row["affinity"]) == pytest.approx(8 * float(parts["affinity"]), rel=1e-5)
