"""DF² module (Eq. 5–7) against hand-written computations."""

from __future__ import annotations

import pytest
import torch

from df2am.errors import Df2amError
from df2am.models.df2 import DF2Module, PartCountError, part_pool


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


# --------------------------------------------------------------------------- adaptive strips

# Rows each strip averages at H = 16, written out by hand from PyTorch's adaptive bins
# floor(p·H/P) .. ceil((p+1)·H/P) - 1.
_ADAPTIVE_ROWS_H16 = {
    3: [[0, 1, 2, 3, 4, 5], [5, 6, 7, 8, 9, 10], [10, 11, 12, 13, 14, 15]],
    5: [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9], [9, 10, 11, 12], [12, 13, 14, 15]],
}


@pytest.mark.parametrize("num_parts", [3, 5])
def test_adaptive_part_pool_matches_hand_computed_bins(num_parts: int) -> None:
    torch.manual_seed(2)
    feat = torch.randn(2, 3, 16, 8, dtype=torch.float64)
    parts = part_pool(feat, num_parts, "adaptive")
    assert parts.shape == (2, num_parts, 3)
    for p, rows in enumerate(_ADAPTIVE_ROWS_H16[num_parts]):
        expected = feat[:, :, rows, :].mean(dim=(2, 3))
        torch.testing.assert_close(parts[:, p], expected)
    with pytest.raises(PartCountError, match="part_pooling=adaptive"):
        part_pool(feat, num_parts)  # strict (the default) still refuses


@pytest.mark.parametrize("num_parts", [1, 2, 4, 8, 16])
def test_adaptive_equals_strict_when_p_divides_h(num_parts: int) -> None:
    feat = torch.randn(2, 4, 16, 3)
    torch.testing.assert_close(
        part_pool(feat, num_parts, "adaptive"), part_pool(feat, num_parts, "strict"),
        rtol=0, atol=0,
    )


def test_part_pool_rejects_unknown_mode_and_zero_parts() -> None:
    with pytest.raises(ValueError, match="pooling"):
        part_pool(torch.randn(1, 2, 4, 2), 2, "overlap")  # type: ignore[arg-type]
    with pytest.raises(PartCountError):
        part_pool(torch.randn(1, 2, 4, 2), 0, "adaptive")


def test_df2_module_threads_part_pooling() -> None:
    feat = torch.randn(3, 16, 16, 2)
    g = feat.mean(dim=(2, 3))
    out = DF2Module(16, 3, num_classes=4, part_pooling="adaptive")(feat, g, g)
    torch.testing.assert_close(out.part_feat, part_pool(feat, 3, "adaptive"))
    with pytest.raises(PartCountError):
        DF2Module(16, 3, num_classes=4)(feat, g, g)
    with pytest.raises(ValueError, match="part_pooling"):
        DF2Module(16, 3, num_classes=4, part_pooling="soft")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- global ω vector


def _global_vector_df2(P: int = 4, C: int = 8) -> DF2Module:
    torch.manual_seed(3)
    return DF2Module(C, P, num_classes=5, part_attention="global_vector")


def test_global_vector_has_one_zero_vector_and_no_mlp() -> None:
    df2 = _global_vector_df2()
    assert df2.attention is None
    assert df2.omega is not None and df2.omega.shape == (4,)
    torch.testing.assert_close(df2.omega.detach(), torch.zeros(4), rtol=0, atol=0)
    names = [n for n, _ in df2.named_parameters()]
    assert "omega" in names and not any(n.startswith("attention") for n in names)
    # The per-part modes keep φ and hold no ω.
    assert DF2Module(8, 4, num_classes=5).omega is None


def test_global_vector_weights_uniform_at_init_identical_rows_sum_to_one() -> None:
    df2 = _global_vector_df2()
    feat = torch.randn(6, 8, 8, 2)
    g = feat.mean(dim=(2, 3))
    bn_g = torch.randn(6, 8)
    out = df2(feat, g, bn_g)
    assert out.part_weights.shape == (6, 4)
    torch.testing.assert_close(out.part_weights, torch.full((6, 4), 0.25))
    # Uniform ω̃: f* is the plain mean of the strips.
    torch.testing.assert_close(out.fused_feat, bn_g + out.part_feat.mean(1))
    with torch.no_grad():
        df2.omega.copy_(torch.tensor([1.0, -2.0, 0.5, 0.0]))  # type: ignore[union-attr]
    w = df2(feat, g, bn_g).part_weights
    torch.testing.assert_close(w.sum(1), torch.ones(6))
    assert bool((w == w[:1]).all())  # one ω̃ for every image
    torch.testing.assert_close(w[0], torch.softmax(torch.tensor([1.0, -2.0, 0.5, 0.0]), 0))


def test_global_vector_gets_gradients() -> None:
    df2 = _global_vector_df2()
    feat = torch.randn(5, 8, 8, 2)
    g = feat.mean(dim=(2, 3))
    out = df2(feat, g, g)
    torch.nn.functional.cross_entropy(out.fused_logits, torch.tensor([0, 1, 2, 3, 4])).backward()
    assert df2.omega is not None and df2.omega.grad is not None
    assert float(df2.omega.grad.abs().sum()) > 0
    unused = [n for n, p in df2.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []
