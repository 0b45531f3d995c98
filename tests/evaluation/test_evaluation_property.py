"""Property tests: the vectorised metrics equal a plain per-query loop of the same definitions
(``eval_reference_loop.py``) bit for bit, on random inputs with many tied distances (and signed
values, ±0.0, ±inf), for every protocol, every ranking path (numpy counting — with the
padded-table and the reduceat identity dedup, row-wise sums and per-row popcounts, one row per
block —, the numpy threshold kernel, torch counting with sparse tie fix-up, full stable sort),
float32 / float64 / int64 distances as numpy arrays or torch tensors, and any chunk size."""

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
from df2am.evaluation import PROTOCOLS, cpu_counting, evaluate, metrics

# Force one ranking path: whether CPU chunks use the numpy path, which numpy kernel it uses
# (the threshold kernel's per-row cost at +inf: always counting; at -inf: always threshold),
# how wide the per-identity dedup table may get before it switches to reduceat, and the torch
# counting threshold.
INF = float("inf")
COUNT = {"_THRESHOLD_NS_PER_ROW": INF}
PATHS = {
    "count": COUNT,
    "count-reduceat": {**COUNT, "_DEDUP_TABLE_MAX_RATIO": 0},
    "count-rowloop": {**COUNT, "_ROW_COUNT_LOOP_MIN_WIDTH": 0},
    "count-row-blocks": {**COUNT, "_BLOCK_BYTES": 0},
    "threshold": {"_THRESHOLD_NS_PER_ROW": -INF},
    "torch-count": {"_CPU_COUNTING": False, "_TORCH_COUNT_PATH_MAX_AVG_MATCHES": INF},
    "sort": {"_CPU_COUNTING": False, "_TORCH_COUNT_PATH_MAX_AVG_MATCHES": -1.0},
}


@contextlib.contextmanager
def _path(name):
    with contextlib.ExitStack() as stack:
        for attr, value in PATHS[name].items():
            module = metrics if hasattr(metrics, attr) else cpu_counting
            assert hasattr(module, attr), attr
            stack.enter_context(mock.patch.object(module, attr, value))
        yield


def assert_same(got, expected):
    """Bit-for-bit equality with the loop's ``(cmc, mAP, mINP, num_valid)``."""
    cmc, m_ap, m_inp, n_valid = expected
    np.testing.assert_array_equal(got.cmc, cmc)
    assert (got.mAP, got.mINP, got.num_valid_queries) == (m_ap, m_inp, n_valid)


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
    # every dtype is compared natively; ints cannot hold ±inf or 0.5
    dtypes = ["float32", "float64"] + (["int64"] if np.all(np.isin(dist, np.arange(4))) else [])
    dist = dist.astype(draw(st.sampled_from(dtypes)))
    return dist, q_ids, g_ids, q_cams, g_cams, max_rank, chunk


def _as_input(dist, as_torch):
    return torch.from_numpy(dist) if as_torch else dist


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("protocol", PROTOCOLS)
@settings(max_examples=100, deadline=None)
@given(case=cases(), as_torch=st.booleans())
def test_vectorised_equals_per_query_loop(protocol, path, case, as_torch):
    dist, q_ids, g_ids, q_cams, g_cams, max_rank, chunk = case
    expected = loop_evaluate(dist, q_ids, g_ids, q_cams, g_cams, protocol, max_rank)
    if expected is None:
        with _path(path), pytest.raises(EvaluationError, match="no valid query"):
            evaluate(_as_input(dist, as_torch), q_ids, g_ids, q_cams, g_cams, protocol=protocol,
                     max_rank=max_rank, chunk_size=chunk)
        return
    with _path(path):
        got = evaluate(_as_input(dist, as_torch), q_ids, g_ids, q_cams, g_cams,
                       protocol=protocol, max_rank=max_rank, chunk_size=chunk)
    assert_same(got, expected)


@pytest.mark.parametrize("protocol", PROTOCOLS)
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
        tables = cpu_counting.CpuTables(np.array([0, 0]), g_ids, 3, "room", np.array([2, 6]),
                                         np.where(g_cams == 3, 2, g_cams))
    for room in tables.rooms:  # the layout this test is about
        assert room.dedup_width == 16
        assert (room.dedup_cols is None) == (path == "count-reduceat")
    q_ids = rng.integers(0, 3, 30)
    q_cams = rng.choice([3, 6], 30)
    dist = rng.integers(0, 6, size=(30, g_ids.size)).astype(np.float32)
    expected = loop_evaluate(dist, q_ids, g_ids, q_cams, g_cams, "sysu", 6)
    with _path(path):
        got = evaluate(dist, q_ids, g_ids, q_cams, g_cams, protocol="sysu", max_rank=6)
    assert_same(got, expected)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "int16", "float64", "int64", "int32",
                                   "uint8"])
def test_distance_dtypes_rank_like_float64(dtype):
    # float16/bfloat16/int16/uint8 are ranked as float32 (exact), float64/int64/int32 in their
    # own dtype; all must rank their values exactly.
    rng = np.random.default_rng(4)
    values = rng.integers(-3, 4, size=(20, 15))
    if dtype == "uint8":
        values += 3  # uint8 cannot hold negative distances
    q_ids, g_ids = rng.integers(0, 4, 20), rng.integers(0, 4, 15)
    q_cams, g_cams = rng.choice([3, 6], 20), rng.choice([1, 2, 4, 5], 15)
    dist = torch.from_numpy(values).to(getattr(torch, dtype))
    expected = loop_evaluate(values.astype(np.float64), q_ids, g_ids, q_cams, g_cams, "sysu")
    got = evaluate(dist, q_ids, g_ids, q_cams, g_cams, protocol="sysu")
    assert_same(got, expected)
    if dtype != "bfloat16":  # the same values as a numpy array
        assert_same(evaluate(dist.numpy(), q_ids, g_ids, q_cams, g_cams, protocol="sysu"),
                    expected)
