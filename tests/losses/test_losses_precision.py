"""Distances under bf16 autocast: the fp32 cast and disabled autocast keep them accurate."""

from __future__ import annotations

import torch

from df2am.losses import batch_hard_triplet, normalized_euclidean, pairwise_euclidean


def _large_features() -> torch.Tensor:
    # A shared offset of norm 20·√64 = 160 plus small per-sample noise: ‖a‖² ≈ 25600 while the
    # squared distances are ≈ 2·64·0.25 = 32. bf16 keeps 8 significant bits, so ‖a‖² in bf16 is
    # off by ~±100 — the expansion ‖a‖² + ‖b‖² − 2ab then returns garbage unless done in fp32.
    g = torch.Generator().manual_seed(0)
    return 20.0 + 0.5 * torch.randn(16, 64, generator=g)


def test_pairwise_under_bf16_autocast_matches_fp32_reference() -> None:
    feat = _large_features()
    feat_bf16 = feat.bfloat16()
    # reference: exact float64 distances of the same (bf16-rounded) values
    ref = torch.cdist(feat_bf16.double(), feat_bf16.double())
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        got_from_bf16 = pairwise_euclidean(feat_bf16)
        got_from_fp32 = pairwise_euclidean(feat)
    assert got_from_bf16.dtype == torch.float32
    torch.testing.assert_close(got_from_bf16.double(), ref, atol=5e-3, rtol=0)
    ref32 = torch.cdist(feat.double(), feat.double())
    torch.testing.assert_close(got_from_fp32.double(), ref32, atol=5e-3, rtol=0)


def test_naive_autocast_distance_is_badly_wrong() -> None:
    # The same expansion with the matmul left to autocast (what the fp32 block prevents): the
    # error is of the order of the distances themselves. This shows the test above can fail.
    feat = _large_features()
    ref = torch.cdist(feat.double(), feat.double())
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        sq = (feat * feat).sum(1)
        d2 = sq[:, None] + sq[None, :] - 2.0 * (feat @ feat.t())
        naive = d2.float().clamp(min=0).sqrt()
    off_diag = ~torch.eye(16, dtype=torch.bool)
    assert (naive.double() - ref)[off_diag].abs().max() > 1.0


def test_losses_under_autocast_equal_fp32() -> None:
    feat = _large_features()
    labels = torch.arange(16) // 4
    ref_t = batch_hard_triplet(feat, labels, 0.3)
    ref_d = normalized_euclidean(feat)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        t = batch_hard_triplet(feat, labels, 0.3)
        d = normalized_euclidean(feat)
    assert t.dtype == torch.float32 and d.dtype == torch.float32
    torch.testing.assert_close(t, ref_t)
    torch.testing.assert_close(d, ref_d)
