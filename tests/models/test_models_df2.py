"""DF² module (Eq. 5–7) against hand-written computations."""

from __future__ import annotations

import pytest
import torch

from df2am.errors import Df2amError
from df2am.models.df2 import DF2Module, part_pool


def test_part_pool_matches_manual_strip_means() -> None:
    torch.manual_seed(0)
    feat = torch.randn(3, 5, 8, 2)
    parts = part_pool(feat, 4)
    assert parts.shape == (3, 4, 5)
    for p in range(4):
        expected = feat[:, :, 2 * p : 2 * p + 2, :].mean(dim=(2, 3))
        torch.testing.assert_close(parts[:, p], expected)


def test_part_pool_channels_last_equals_contiguous() -> None:
    feat = torch.randn(2, 6, 4, 2)
    torch.testing.assert_close(
        part_pool(feat.to(memory_format=torch.channels_last), 2), part_pool(feat, 2)
    )


@pytest.mark.parametrize("num_parts", [3, 5])
def test_part_pool_rejects_non_divisor(num_parts: int) -> None:
    with pytest.raises(Df2amError, match=rf"num_parts={num_parts}.*H=4"):
        part_pool(torch.randn(1, 2, 4, 2), num_parts)
    with pytest.raises(ValueError):  # also a ValueError for callers that catch that
        part_pool(torch.randn(1, 2, 4, 2), num_parts)


@pytest.mark.parametrize("mode", ["part", "part_global"])
def test_df2_forward_matches_equations(mode: str) -> None:
    torch.manual_seed(1)
    C, P = 32, 4
    df2 = DF2Module(C, P, num_classes=7, part_attention=mode)
    feat = torch.randn(5, C, 8, 2)
    g = feat.mean(dim=(2, 3))
    bn_g = torch.randn(5, C)
    out = df2(feat, g, bn_g)

    # Independent computation of Eq. 5-7.
    parts = torch.stack([feat[:, :, 2 * p : 2 * p + 2].mean(dim=(2, 3)) for p in range(P)], 1)
    lin1, lin2 = df2.attention[0], df2.attention[2]
    att_in = parts if mode == "part" else torch.cat([parts, g[:, None].expand(-1, P, -1)], 2)
    scores = torch.relu(att_in @ lin1.weight.T + lin1.bias) @ lin2.weight.T + lin2.bias
    w = torch.softmax(scores[..., 0], dim=1)
    fused = bn_g + (w[..., None] * parts).sum(1)
    bn = df2.bnneck
    fused_bn = (fused - fused.mean(0)) / torch.sqrt(fused.var(0, unbiased=False) + bn.eps)

    torch.testing.assert_close(out.part_feat, parts)
    torch.testing.assert_close(out.part_weights, w)
    torch.testing.assert_close(out.fused_feat, fused)
    torch.testing.assert_close(out.fused_bn_feat, fused_bn, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        out.fused_logits, fused_bn @ df2.classifier.weight.T, atol=1e-5, rtol=1e-4
    )
    assert df2.attention[0].in_features == (C if mode == "part" else 2 * C)


def test_df2_head_is_bias_free_with_frozen_bnneck_bias() -> None:
    df2 = DF2Module(16, 2, num_classes=3)
    assert df2.classifier.bias is None
    assert not df2.bnneck.bias.requires_grad
    assert float(df2.classifier.weight.detach().std()) < 0.01  # N(0, 0.001²) init


def test_df2_rejects_unknown_attention() -> None:
    with pytest.raises(ValueError, match="part_attention"):
        DF2Module(16, 2, num_classes=3, part_attention="global")  # type: ignore[arg-type]
