"""Property tests: the vectorised metrics equal a plain per-query loop of the same definitions
(``eval_reference_loop.py``) on random inputs with many tied distances, for both protocols,
both ranking paths (counting smaller keys / full stable sort) and any chunk size."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from eval_reference_loop import loop_evaluate
from hypothesis import given, settings
from hypothesis import strategies as st

from df2am.errors import EvaluationError
from df2am.evaluation import evaluate, metrics

# Force one ranking path: the threshold on average true matches per query below which the
# sort-free counting path is used.
PATHS = {"count": float("inf"), "sort": -1.0}


def _path(name):
    return mock.patch.object(metrics, "_COUNT_PATH_MAX_AVG_MATCHES", PATHS[name])


@st.composite
def cases(draw):
    num_q = draw(st.integers(1, 8))
    num_g = draw(st.integers(1, 14))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # few distinct distance values -> many ties; few ids -> repeated ids in the gallery
    levels = draw(st.integers(1, 4))
    dist = rng.integers(0, levels, size=(num_q, num_g)).astype(np.float32)
    if draw(st.booleans()):
        # infinite distances tie with each other (and with dropped entries in the counting
        # path's +inf masking): they must still be ordered by gallery index
        dist[dist == levels - 1] = np.inf
    num_ids = draw(st.integers(1, 4))
    q_ids = rng.integers(0, num_ids, num_q)
    g_ids = rng.integers(0, num_ids + 1, num_g)
    # all six SYSU cameras on both sides, so the general "map 3 -> 2, drop same room" rule
    # is exercised beyond the standard cam3/cam6 query lists.
    q_cams = rng.integers(1, 7, num_q)
    g_cams = rng.integers(1, 7, num_g)
    max_rank = draw(st.integers(1, 6))
    chunk = draw(st.integers(1, num_q + 2))
    return dist, q_ids, g_ids, q_cams, g_cams, max_rank, chunk


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("protocol", ["sysu", "regdb"])
@settings(max_examples=120, deadline=None)
@given(case=cases())
def test_vectorised_equals_per_query_loop(protocol, path, case):
    dist, q_ids, g_ids, q_cams, g_cams, max_rank, chunk = case
    expected = loop_evaluate(dist, q_ids, g_ids, q_cams, g_cams, protocol, max_rank)
    if expected is None:
        with _path(path), pytest.raises(EvaluationError, match="no valid query"):
            evaluate(dist, q_ids, g_ids, q_cams, g_cams, protocol=protocol,
                     max_rank=max_rank, chunk_size=chunk)
        return
    with _path(path):
        got = evaluate(dist, q_ids, g_ids, q_cams, g_cams, protocol=protocol,
                       max_rank=max_rank, chunk_size=chunk)
    cmc, m_ap, m_inp, n_valid = expected
    np.testing.assert_allclose(got.cmc, cmc, rtol=0, atol=1e-12)
    assert got.mAP == pytest.approx(m_ap, abs=1e-12)
    assert got.mINP == pytest.approx(m_inp, abs=1e-12)
    assert got.num_valid_queries == n_valid


@pytest.mark.parametrize("protocol", ["sysu", "regdb"])
@settings(max_examples=60, deadline=None)
@given(case=cases(), other_chunk=st.integers(1, 10))
def test_chunk_size_and_path_do_not_change_results(protocol, case, other_chunk):
    dist, q_ids, g_ids, q_cams, g_cams, max_rank, chunk = case
    try:
        a = evaluate(dist, q_ids, g_ids, q_cams, g_cams, protocol=protocol, max_rank=max_rank,
                     chunk_size=chunk)
    except EvaluationError:
        return
    with _path("sort"):
        b = evaluate(dist, q_ids, g_ids, q_cams, g_cams, protocol=protocol,
                     max_rank=max_rank, chunk_size=other_chunk)
    np.testing.assert_array_equal(a.cmc, b.cmc)
    assert (a.mAP, a.mINP, a.num_valid_queries) == (b.mAP, b.mINP, b.num_valid_queries)
