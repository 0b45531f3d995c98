"""k-reciprocal re-ranking: equal to a dense, loop-based transcription of the algorithm."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from df2am.errors import EvaluationError
from df2am.evaluation import rerank, rerank_features


def dense_rerank(q_g, q_q, g_g, k1, k2, lam):
    """The published algorithm step by step, on dense (Q+G)² arrays, with a stable argsort."""
    Q = q_g.shape[0]
    full = np.block([[q_q, q_g], [q_g.T, g_g]])
    squared = np.square(full).astype(np.float32)
    dist = (squared / squared.max(axis=0)).T          # column-normalised, then transposed
    n = len(dist)
    rank = np.argsort(dist, axis=1, kind="stable")

    def reciprocal(i, k):
        return [j for j in rank[i, :k + 1] if i in rank[j, :k + 1]]

    half = int(np.around(k1 / 2))
    V = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        R = reciprocal(i, k1)
        expanded = set(R)
        for c in R:
            Rc = reciprocal(c, half)
            if len(set(Rc) & set(R)) > 2 / 3 * len(Rc):
                expanded |= set(Rc)
        idx = np.array(sorted(expanded), dtype=int)
        w = np.exp(-dist[i, idx])
        V[i, idx] = w / w.sum()
    if k2 > 1:
        V = np.stack([V[rank[i, :k2]].mean(axis=0) for i in range(n)])
    jaccard = np.empty((Q, n), dtype=np.float32)
    for i in range(Q):
        for j in range(n):
            jaccard[i, j] = 1 - np.minimum(V[i], V[j]).sum() / np.maximum(V[i], V[j]).sum()
    return (jaccard * (1 - lam) + dist[:Q] * lam)[:, Q:]


def split(d, Q):
    return d[:Q, Q:], d[:Q, :Q], d[Q:, Q:]


def euclidean(x):
    return np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("k1", "k2", "lam"), [(20, 6, 0.3), (5, 1, 0.0), (3, 8, 0.7),
                                              (1, 2, 0.5), (6, 3, 1.0)])
def test_rerank_equals_dense_reference(seed, k1, k2, lam):
    rng = np.random.default_rng(seed)
    Q, G = 11 + seed, 29
    d = euclidean(rng.standard_normal((Q + G, 6)))
    want = dense_rerank(*split(d, Q), k1, k2, lam)
    for chunk_size in (None, 4, 1):
        got = rerank(*split(d, Q), k1=k1, k2=k2, lambda_value=lam, chunk_size=chunk_size)
        assert got.dtype == np.float32 and got.shape == (Q, G)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_rerank_equals_dense_reference_on_clustered_and_asymmetric_inputs():
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 6, 70)
    x = 2 * rng.standard_normal((6, 5))[ids] + rng.standard_normal((70, 5))
    d = euclidean(x)
    asym = d * rng.uniform(0.9, 1.1, d.shape)       # the reference normalises columns
    for dist, (k1, k2, lam) in [(d, (8, 4, 0.3)), (asym, (8, 4, 0.3)), (d, (12, 1, 0.1))]:
        want = dense_rerank(*split(dist, 20), k1, k2, lam)
        got = rerank(*split(dist, 20), k1=k1, k2=k2, lambda_value=lam, chunk_size=7)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_ties_are_broken_by_smaller_index():
    rng = np.random.default_rng(3)
    d = rng.integers(1, 4, (30, 30)).astype(np.float64)   # many exact ties
    d = np.minimum(d, d.T)
    np.fill_diagonal(d, 0)
    want = dense_rerank(*split(d, 10), 5, 3, 0.3)
    for chunk_size in (None, 3):
        got = rerank(*split(d, 10), k1=5, k2=3, lambda_value=0.3, chunk_size=chunk_size)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_lambda_one_is_the_row_normalised_squared_distance():
    rng = np.random.default_rng(4)
    d = euclidean(rng.standard_normal((12, 3)))
    q_g, q_q, _ = split(d, 5)
    row_max = np.maximum(q_q.max(axis=1), q_g.max(axis=1))
    np.testing.assert_allclose(rerank(*split(d, 5), k1=3, lambda_value=1.0),
                               q_g**2 / row_max[:, None] ** 2, rtol=1e-6)


def test_k1_1_k2_1_by_hand():
    # q0–g0 and q1–g1 are mutual nearest neighbours: with k1 = 1 each V row lives on its pair,
    # V[q0] = (p, 1-p) on (q0, g0), V[g0] = (1-p', p'), p = 1 / (1 + exp(-u)), u = d² / row max².
    x = np.array([0.0, 5.0, 0.1, 5.2])          # q0, q1, g0, g1
    d = np.abs(x[:, None] - x[None])
    got = rerank(*split(d, 2), k1=1, k2=1, lambda_value=0.25)
    u_q0, u_g0 = 0.01 / 5.2**2, 0.01 / 5.1**2
    p, p2 = 1 / (1 + np.exp(-u_q0)), 1 / (1 + np.exp(-u_g0))
    s = (1 - p2) + (1 - p)                       # Σ min over the shared support {q0, g0}
    assert got[0, 0] == pytest.approx(0.75 * (1 - s / (2 - s)) + 0.25 * u_q0, abs=1e-6)
    # disjoint supports: Jaccard distance exactly 1
    assert got[0, 1] == pytest.approx(0.75 + 0.25 * 5.2**2 / 5.2**2, abs=1e-6)
    assert got[1, 0] == pytest.approx(0.75 + 0.25 * 4.9**2 / 5.0**2, abs=1e-6)


def test_two_clusters_reranking_moves_the_true_match_to_rank_1():
    # q0 sits at the edge of identity A; a B image (g0) is nearer to it than its true match
    # (g4), but g4 shares q0's neighbourhood (the other A queries) and g0 does not.
    queries = np.array([0.0, -0.3, -0.5, -0.7])        # all identity A
    gallery = np.array([0.9, 2.0, 2.1, 2.2, -1.0])     # B, B, B, B, A
    x = np.r_[queries, gallery]
    d = np.abs(x[:, None] - x[None])
    q_g = split(d, 4)[0]
    assert np.argmin(q_g[0]) == 0
    got = rerank(*split(d, 4), k1=4, k2=2, lambda_value=0.3)
    assert np.argmin(got[0]) == 4
    np.testing.assert_allclose(got, dense_rerank(*split(d, 4), 4, 2, 0.3), rtol=0, atol=1e-6)


def test_rerank_features():
    rng = np.random.default_rng(5)
    q, g = rng.standard_normal((9, 4)), rng.standard_normal((17, 4))
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    x = np.r_[qn, gn]
    one_minus_cos = np.maximum(1 - x @ x.T, 0)
    np.fill_diagonal(one_minus_cos, 0)
    want = rerank(*split(one_minus_cos, 9), k1=5, k2=3)
    # cosine normalises the features itself; torch inputs work too
    np.testing.assert_allclose(rerank_features(q, g, k1=5, k2=3), want, atol=1e-5)
    got = rerank_features(torch.from_numpy(qn).float(), torch.from_numpy(gn).float(), k1=5, k2=3)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # for unit features ‖a-b‖² = 2(1 - cos): the factor cancels in the row normalisation
    np.testing.assert_allclose(rerank_features(qn, gn, metric="euclidean", k1=5, k2=3), want,
                               atol=1e-5)
    # distance matrices given as torch tensors
    t = torch.from_numpy(one_minus_cos)
    np.testing.assert_allclose(rerank(*split(t, 9), k1=5, k2=3), want, atol=1e-6)


def _valid():
    d = euclidean(np.random.default_rng(6).standard_normal((10, 3)))
    return split(d, 4)


@pytest.mark.parametrize(("change", "match"), [
    (lambda a: (a[0][:, :5], a[1], a[2]), r"g_g: expected shape \(5, 5\)"),
    (lambda a: (a[0], a[1][:3], a[2]), r"q_q: expected shape \(4, 4\)"),
    (lambda a: (a[0][0], a[1], a[2]), "q_g: expected a 2-D"),
    (lambda a: (a[0][:0], a[1][:0, :0], a[2]), "at least one query"),
    (lambda a: (np.where(a[0] > 1, np.nan, a[0]), a[1], a[2]), "q_g: contains NaN"),
    (lambda a: (a[0], a[1], a[2] + np.inf), "g_g: contains NaN or infinite"),
    (lambda a: (-a[0], a[1], a[2]), r"q_g: .*non-negative.*-q·gᵀ"),
    (lambda a: (a[0].astype(str), a[1], a[2]), "q_g: expected numeric"),
    (lambda a: (a[0] * 0, a[1] * 0, a[2]), "query 0 squares to 0"),
])
def test_input_errors(change, match):
    with pytest.raises(EvaluationError, match=match):
        rerank(*change(_valid()), k1=3)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"k1": 0}, "k1: expected 1 <= k1"), ({"k1": 10}, r"k1: .*Q \+ G = 10"),
    ({"k1": 2.0}, "k1: expected an integer"), ({"k1": True}, "k1: expected an integer"),
    ({"k2": 0}, "k2: expected 1 <= k2"), ({"k2": 11}, "k2: expected"),
    ({"lambda_value": -0.1}, r"lambda_value: expected a number in \[0, 1\]"),
    ({"lambda_value": 1.5}, "lambda_value"), ({"lambda_value": float("nan")}, "lambda_value"),
    ({"chunk_size": 0}, "chunk_size: expected None or an integer >= 1"),
])
def test_parameter_errors(kwargs, match):
    with pytest.raises(EvaluationError, match=match):
        rerank(*_valid(), **{"k1": 3, **kwargs})


def test_rerank_features_errors():
    q, g = np.ones((3, 4)), np.ones((5, 4))
    with pytest.raises(EvaluationError, match="metric: expected one of cosine, euclidean"):
        rerank_features(q, g, metric="manhattan")
    with pytest.raises(EvaluationError, match="feature dimensions differ"):
        rerank_features(q, np.ones((5, 3)))
    with pytest.raises(EvaluationError, match="gallery_feats: .*zero feature"):
        rerank_features(q, np.zeros((5, 4)))
    with pytest.raises(EvaluationError, match="query_feats: expected a 2-D"):
        rerank_features(np.ones(4), g)
