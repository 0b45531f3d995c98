"""Property tests: the vectorised metrics equal a plain per-query loop of the same definitions
(``eval_reference_loop.py``) on random inputs with many tied distances (and signed values,
±0.0, ±inf), for both protocols, every ranking path (numpy counting of packed keys — with the
padded-table and the reduceat identity dedup, row-wise sums and per-row popcounts —, torch
counting with sparse tie fix-up, full stable sort) and any chunk size."""

from __future__ import annotations

import contextlib
from unittest import mock

import numpy as np
import pytest
import torch
from eval_reference_loop import loop_evaluate
from hypothesis import given, settings
from hypothesis import strategies as st

from df2am.errors import EvaluationError
from df2am.evaluation import _cpu_counting, evaluate, metrics

# Force one ranking path: the thresholds on average true matches per query below which a
# sort-free counting path is used, whether CPU chunks use the numpy counting path, and how wide
# its per-identity dedup table may get before it switches to reduceat.
INF = float("inf")
PATHS = {
    "count": {"_COUNT_PATH_MAX_AVG_MATCHES": INF},
    "count-reduceat": {"_COUNT_PATH_MAX_AVG_MATCHES": INF, "_DEDUP_TABLE_MAX_RATIO": 0},
    "count-rowloop": {"_COUNT_PATH_MAX_AVG_MATCHES": INF, "_ROW_COUNT_LOOP_MIN_WIDTH": 0},
    "torch-count": {"_COUNT_PATH_MAX_AVG_MATCHES": INF, "_TORCH_COUNT_PATH_MAX_AVG_MATCHES": INF,
                    "_CPU_COUNTING": False},
    "sort": {"_COUNT_PATH_MAX_AVG_MATCHES": -1.0},
}


@contextlib.contextmanager
def _path(name):
    with contextlib.ExitStack() as stack:
        for attr, value in PATHS[name].items():
            module = metrics if hasattr(metrics, attr) else _cpu_counting
            stack.enter_context(mock.patch.object(module, attr, value))
        yield


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
        # signed values, both zeros (equal as floats: ordered by gallery index), a subnormal
        # and both infinities: the numpy path's integer keys must order them like floats
        palette = np.array([-np.inf, -2.5, -1e-45, -0.0, 0.0, 1e-45, 0.5, np.inf],
                           dtype=np.float32)
        dist = palette[rng.integers(0, len(palette), size=(num_q, num_g))]
    elif draw(st.booleans()):
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


@pytest.mark.parametrize("path", ["count", "count-reduceat"])
def test_identity_with_many_images_uses_a_wide_dedup_table(path):
    # one identity with 12 kept images (dedup table width 16, read as two uint64 per row) and
    # others with 1-3: the deduplicated rank must still count each identity once.
    rng = np.random.default_rng(3)
    g_ids = np.array([0] * 12 + [1, 1, 2, 2, 2])
    # identity 0 never in camera 2, so cam-3 queries keep all 12 of its images
    g_cams = np.where(g_ids == 0, rng.choice([1, 4, 5], g_ids.size),
                      rng.choice([1, 2, 4, 5], g_ids.size))
    with _path(path):
        tables = _cpu_counting.CpuTables(np.array([0, 0]), g_ids, 3, np.array([2, 6]), g_cams)
    for room in tables.rooms:  # the layout this test is about
        assert room.dedup_width == 16
        assert (room.dedup_cols is None) == (path == "count-reduceat")
    q_ids = rng.integers(0, 3, 30)
    q_cams = rng.choice([3, 6], 30)
    dist = rng.integers(0, 6, size=(30, g_ids.size)).astype(np.float32)
    expected = loop_evaluate(dist, q_ids, g_ids, q_cams, g_cams, "sysu", 6)
    with _path(path):
        got = evaluate(dist, q_ids, g_ids, q_cams, g_cams, protocol="sysu", max_rank=6)
    np.testing.assert_allclose(got.cmc, expected[0], rtol=0, atol=1e-12)
    assert got.mAP == pytest.approx(expected[1], abs=1e-12)
    assert got.mINP == pytest.approx(expected[2], abs=1e-12)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "int16", "float64", "int64"])
def test_distance_dtypes_rank_like_float64(dtype):
    # float16/bfloat16/int16 go through the numpy path (exact in float32), float64/int64 through
    # the torch path; all must rank their values exactly.
    rng = np.random.default_rng(4)
    values = rng.integers(-3, 4, size=(20, 15))
    q_ids, g_ids = rng.integers(0, 4, 20), rng.integers(0, 4, 15)
    q_cams, g_cams = rng.choice([3, 6], 20), rng.choice([1, 2, 4, 5], 15)
    dist = torch.from_numpy(values).to(getattr(torch, dtype))
    expected = loop_evaluate(values.astype(np.float64), q_ids, g_ids, q_cams, g_cams, "sysu")
    got = evaluate(dist, q_ids, g_ids, q_cams, g_cams, protocol="sysu")
    np.testing.assert_allclose(got.cmc, expected[0], rtol=0, atol=1e-12)
    assert got.mAP == pytest.approx(expected[1], abs=1e-12)
    assert got.mINP == pytest.approx(expected[2], abs=1e-12)
