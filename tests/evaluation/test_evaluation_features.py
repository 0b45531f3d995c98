"""Distances from features, the chunked features path, and trial aggregation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from df2am.errors import EvaluationError
from df2am.evaluation import (
    PROTOCOLS,
    EvalResult,
    aggregate_trials,
    evaluate,
    evaluate_features,
    pairwise_distance,
)


def _unit(rng, n, d=8):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_pairwise_distance_values():
    rng = np.random.default_rng(0)
    a, b = _unit(rng, 5), _unit(rng, 7)
    np.testing.assert_allclose(pairwise_distance(a, b, "cosine"), -a @ b.T, atol=1e-6)
    ref = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    np.testing.assert_allclose(pairwise_distance(a, b, "euclidean"), ref, atol=1e-5)
    # identical rows: the clamp keeps the distance a real 0, never NaN
    same = pairwise_distance(a, a, "euclidean")
    assert not np.isnan(same).any()
    np.testing.assert_allclose(np.diag(same), 0.0, atol=1e-3)
    # torch in -> torch out; row slices give the rows of the full matrix
    full = pairwise_distance(torch.from_numpy(a), torch.from_numpy(b), "euclidean")
    assert isinstance(full, torch.Tensor) and full.dtype == torch.float32
    torch.testing.assert_close(pairwise_distance(torch.from_numpy(a[2:4]), b, "euclidean"),
                               full[2:4])


def test_pairwise_distance_errors():
    a = np.ones((2, 3), dtype=np.float32)
    with pytest.raises(EvaluationError, match="L2-normalised.*row 0"):
        pairwise_distance(a, a, "cosine")
    with pytest.raises(EvaluationError, match="metric: expected one of cosine, euclidean"):
        pairwise_distance(a, a, "manhattan")
    with pytest.raises(EvaluationError, match="feature dimensions differ"):
        pairwise_distance(a, np.ones((2, 4)), "euclidean")
    with pytest.raises(EvaluationError, match="2-D"):
        pairwise_distance(np.ones(3), a, "euclidean")


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_evaluate_features_equals_evaluate_of_the_distance_matrix(metric, protocol):
    rng = np.random.default_rng(1)
    q, g = _unit(rng, 23), _unit(rng, 31)
    q_ids, g_ids = rng.integers(0, 5, 23), rng.integers(0, 5, 31)
    q_cams, g_cams = rng.choice([3, 6], 23), rng.choice([1, 2, 4, 5], 31)
    full = evaluate(pairwise_distance(q, g, metric), q_ids, g_ids, q_cams, g_cams,
                    protocol=protocol, max_rank=10)
    for chunk in (1, 4, None):
        r = evaluate_features(torch.from_numpy(q), g, q_ids, g_ids, q_cams, g_cams,
                              protocol=protocol, metric=metric, max_rank=10, chunk_size=chunk)
        np.testing.assert_array_equal(r.cmc, full.cmc)
        assert r.mAP == pytest.approx(full.mAP, abs=1e-12)
        assert r.mINP == pytest.approx(full.mINP, abs=1e-12)
        assert r.num_valid_queries == full.num_valid_queries


def test_evaluate_features_errors():
    rng = np.random.default_rng(2)
    q, g = _unit(rng, 3), _unit(rng, 4)
    ids = (np.array([0, 1, 2]), np.array([0, 1, 2, 3]))
    with pytest.raises(EvaluationError, match="L2-normalised"):
        evaluate_features(q * 3, g, *ids, None, None, protocol="regdb")
    q_nan = q.copy()
    q_nan[1, 0] = np.nan
    with pytest.raises(EvaluationError, match="query_feats: contains NaN"):
        evaluate_features(q_nan, g, *ids, None, None, protocol="regdb", metric="euclidean")
    with pytest.raises(EvaluationError, match="feature dimensions differ"):
        evaluate_features(q, g[:, :4], *ids, None, None, protocol="regdb")
    with pytest.raises(EvaluationError, match="gallery_ids: expected 4"):
        evaluate_features(q, g, ids[0], ids[1][:3], None, None, protocol="regdb")


def test_aggregate_trials_mean_and_population_std():
    a = EvalResult(np.array([0.2, 0.4, 0.6]), mAP=0.1, mINP=0.05, num_valid_queries=10)
    b = EvalResult(np.array([0.4, 0.8, 1.0]), mAP=0.3, mINP=0.15, num_valid_queries=10)
    c = EvalResult(np.array([0.6, 0.6, 0.8]), mAP=0.5, mINP=0.10, num_valid_queries=10)
    s = aggregate_trials([a, b, c])
    np.testing.assert_allclose(s.cmc_mean, [0.4, 0.6, 0.8])
    # population std (ddof=0) of (0.2, 0.4, 0.6) = sqrt(0.08 / 3)
    np.testing.assert_allclose(s.cmc_std[0], np.sqrt(0.08 / 3))
    assert s.mAP_mean == pytest.approx(0.3)
    assert s.mAP_std == pytest.approx(np.sqrt(0.08 / 3))
    assert s.mINP_mean == pytest.approx(0.1)
    assert s.mINP_std == pytest.approx(np.sqrt(0.005 / 3))
    assert s.num_trials == 3 and s.trials == (a, b, c)
    assert s.mean.mAP == pytest.approx(0.3)


def test_trial_summary_to_dict_layout():
    trials = [EvalResult(np.full(20, v), mAP=v, mINP=v / 2, num_valid_queries=1)
              for v in (0.5, 0.7)]
    d = aggregate_trials(trials).to_dict()
    assert list(d) == ["rank1", "rank1_std", "rank5", "rank5_std", "rank10", "rank10_std",
                       "rank20", "rank20_std", "mAP", "mAP_std", "mINP", "mINP_std"]
    assert d["rank1"] == pytest.approx(60.0)
    assert d["rank1_std"] == pytest.approx(10.0)
    assert d["mINP"] == pytest.approx(30.0)
    assert d["mINP_std"] == pytest.approx(5.0)
    assert aggregate_trials(trials).to_dict(percent=False)["mAP"] == pytest.approx(0.6)
    single = aggregate_trials(trials[:1]).to_dict()
    assert single["mAP_std"] == 0.0


def test_aggregate_trials_errors():
    with pytest.raises(EvaluationError, match="at least one"):
        aggregate_trials([])
    with pytest.raises(EvaluationError, match="same max_rank"):
        aggregate_trials([EvalResult(np.ones(5), 1, 1, 1), EvalResult(np.ones(20), 1, 1, 1)])
