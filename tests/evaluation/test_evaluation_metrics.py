"""Hand-computed cases for each protocol rule (protocols.md, "Metrics")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from df2am.errors import Df2amError, EvaluationError
from df2am.evaluation import PROTOCOLS, EvalResult, default_chunk_size, evaluate


def _one(dist, q_id, g_ids, q_cam, g_cams, protocol, max_rank=5, **kw) -> EvalResult:
    return evaluate(np.array([dist], dtype=np.float32), np.array([q_id]), np.array(g_ids),
                    np.array([q_cam]), np.array(g_cams), protocol=protocol,
                    max_rank=max_rank, **kw)


def test_sysu_cmc_is_identity_deduplicated():
    # ranked ids: 2, 2, 3, 1  -> distinct ids 2, 3, 1: the true id is 3rd (image rank 4).
    r = _one([0.1, 0.2, 0.3, 0.4], 1, [2, 2, 3, 1], 6, [1, 1, 1, 1], "sysu")
    np.testing.assert_allclose(r.cmc, [0, 0, 1, 1, 1])
    assert r.mAP == pytest.approx(1 / 4)
    assert r.mINP == pytest.approx(1 / 4)
    assert r.num_valid_queries == 1


def test_regdb_cmc_is_image_level():
    # same ranking: RegDB counts images, so the true match is at rank 4.
    r = _one([0.1, 0.2, 0.3, 0.4], 1, [2, 2, 3, 1], 1, [2, 2, 2, 2], "regdb")
    np.testing.assert_allclose(r.cmc, [0, 0, 0, 1, 1])
    assert r.mAP == pytest.approx(1 / 4)


def test_cam3_query_drops_every_cam2_gallery_image():
    # gallery (rank order): id1 cam2, id2 cam2, id2 cam1, id1 cam1, id1 cam4
    dist = [0.1, 0.2, 0.3, 0.4, 0.5]
    g_ids, g_cams = [1, 2, 2, 1, 1], [2, 2, 1, 1, 4]
    r3 = _one(dist, 1, g_ids, 3, g_cams, "sysu")
    # filtered: id2(c1), id1(c1), id1(c4) -> dedup rank 2; AP = (1/2 + 2/3) / 2; mINP = 2/3
    np.testing.assert_allclose(r3.cmc, [0, 1, 1, 1, 1])
    assert r3.mAP == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert r3.mINP == pytest.approx(2 / 3)
    # a cam6 query drops nothing: matches at 1, 4, 5 -> AP = (1 + 2/4 + 3/5) / 3, mINP = 3/5
    r6 = _one(dist, 1, g_ids, 6, g_cams, "sysu")
    np.testing.assert_allclose(r6.cmc, [1, 1, 1, 1, 1])
    assert r6.mAP == pytest.approx((1 + 2 / 4 + 3 / 5) / 3)
    assert r6.mINP == pytest.approx(3 / 5)
    # RegDB applies no camera rule even with the same cameras.
    rr = _one(dist, 1, g_ids, 3, g_cams, "regdb")
    assert rr.mAP == pytest.approx(r6.mAP)


def test_llcm_drops_only_same_identity_same_camera():
    # query: id 1 from camera 2. Gallery in rank order (id, camera):
    #   g0 (1, 2)  same id, same camera      -> LLCM drops it
    #   g1 (5, 2)  other id, same camera     -> LLCM keeps it: a negative ranked first
    #   g2 (1, 4)  true match
    #   g3 (5, 1)  negative (id 5 again)
    #   g4 (7, 3)  negative
    #   g5 (1, 3)  true match (camera 3 is not the query's camera 2)
    dist = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    g_ids, g_cams = [1, 5, 1, 5, 7, 1], [2, 2, 4, 1, 3, 3]
    r = _one(dist, 1, g_ids, 2, g_cams, "llcm")
    # kept list: g1(5) g2(1) g3(5) g4(7) g5(1): matches at positions 2 and 5
    #   AP = (1/2 + 2/5) / 2 = 0.45, mINP = 2/5; distinct ids 5, 1, 7 -> true id 2nd
    np.testing.assert_array_equal(r.cmc, [0, 1, 1, 1, 1])
    assert r.mAP == (1 / 2 + 2 / 5) / 2
    assert r.mINP == 2 / 5
    assert r.num_valid_queries == 1
    # The SYSU room rule (camera 3 -> room 2) instead drops every camera-2/3 entry, whatever
    # its id: g0, g1, g4, g5 go, leaving g2(1) g3(5): the match is first.
    s = _one(dist, 1, g_ids, 2, g_cams, "sysu")
    np.testing.assert_array_equal(s.cmc, [1, 1, 1, 1, 1])
    assert (s.mAP, s.mINP) == (1.0, 1.0)
    # RegDB drops nothing: matches at 1, 3, 6.
    rr = _one(dist, 1, g_ids, 2, g_cams, "regdb")
    assert rr.mAP == (1 + 2 / 3 + 3 / 6) / 3
    # A query whose only matches share its camera has none left: skipped, and with no other
    # query that is the "no valid query" error naming the LLCM rule.
    with pytest.raises(EvaluationError, match="no valid query.*LLCM rule"):
        _one([0.1, 0.2], 1, [1, 5], 2, [2, 1], "llcm")


def test_invalid_query_is_skipped_not_counted_as_a_miss():
    # query 0 (cam3, id1): its only match is in cam2 -> invalid, skipped.
    # query 1 (cam6, id2): match at rank 1.
    dist = np.array([[0.1, 0.2, 0.3], [0.3, 0.1, 0.2]])
    r = evaluate(dist, np.array([1, 2]), np.array([1, 2, 3]), np.array([3, 6]),
                 np.array([2, 1, 4]), protocol="sysu", max_rank=3)
    assert r.num_valid_queries == 1
    np.testing.assert_allclose(r.cmc, [1, 1, 1])
    assert r.mAP == pytest.approx(1.0)
    # a query whose id is absent from the gallery is skipped too (RegDB)
    r = evaluate(dist, np.array([9, 2]), np.array([1, 2, 3]), None, None, protocol="regdb",
                 max_rank=3)
    assert r.num_valid_queries == 1


def test_no_valid_query_is_an_error():
    with pytest.raises(EvaluationError, match="no valid query"):
        _one([0.1, 0.2], 1, [1, 2], 3, [2, 1], "sysu")
    with pytest.raises(EvaluationError, match="no valid query"):
        _one([0.1, 0.2], 7, [1, 2], 1, [2, 2], "regdb")


def test_ties_are_resolved_by_gallery_order():
    # all distances tie: a stable sort keeps gallery order 2, 1, 1
    r = _one([0.5, 0.5, 0.5], 1, [2, 1, 1], 1, [2, 2, 2], "regdb", max_rank=3)
    np.testing.assert_allclose(r.cmc, [0, 1, 1])
    assert r.mAP == pytest.approx((1 / 2 + 2 / 3) / 2)
    # reversing the gallery order reverses the tie-break: match first
    r = _one([0.5, 0.5, 0.5], 1, [1, 1, 2], 1, [2, 2, 2], "regdb", max_rank=3)
    np.testing.assert_allclose(r.cmc, [1, 1, 1])
    assert r.mAP == pytest.approx(1.0)


def test_minp_uses_the_hardest_match():
    # matches at ranks 1 and 4 of 5: mINP = 2 / 4; AP = (1 + 2/4) / 2
    r = _one([0.1, 0.2, 0.3, 0.4, 0.5], 1, [1, 2, 3, 1, 4], 1, [2] * 5, "regdb")
    assert r.mINP == pytest.approx(0.5)
    assert r.mAP == pytest.approx(0.75)
    np.testing.assert_allclose(r.cmc, [1, 1, 1, 1, 1])


def test_cmc_is_constant_past_a_short_list():
    # 3 gallery images, 2 distinct ids, max_rank 5: the curve keeps its last value.
    r = _one([0.1, 0.2, 0.3], 1, [2, 2, 1], 6, [1, 1, 1], "sysu", max_rank=5)
    np.testing.assert_allclose(r.cmc, [0, 1, 1, 1, 1])
    assert len(r.cmc) == 5


def test_averages_over_queries():
    dist = np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])
    q_ids, g_ids = np.array([1, 1]), np.array([1, 2, 1, 2])
    r = evaluate(dist, q_ids, g_ids, None, None, protocol="regdb", max_rank=4)
    # query 0: matches at 1, 3 -> AP (1 + 2/3)/2, INP 2/3; query 1: order 3,2,1,0 -> ids 2,1,2,1
    # matches at 2, 4 -> AP (1/2 + 2/4)/2 = 1/2, INP 2/4
    assert r.mAP == pytest.approx(((1 + 2 / 3) / 2 + 0.5) / 2)
    assert r.mINP == pytest.approx((2 / 3 + 0.5) / 2)
    np.testing.assert_allclose(r.cmc, [0.5, 1, 1, 1])


def test_torch_input_and_chunking_give_the_same_result():
    rng = np.random.default_rng(0)
    dist = rng.integers(0, 4, size=(13, 17)).astype(np.float32)
    q_ids, g_ids = rng.integers(0, 4, 13), rng.integers(0, 4, 17)
    q_cams, g_cams = rng.choice([3, 6], 13), rng.choice([1, 2, 4, 5], 17)
    base = evaluate(dist, q_ids, g_ids, q_cams, g_cams, protocol="sysu")
    for chunk in (1, 2, 5, 13, 100):
        r = evaluate(torch.from_numpy(dist), torch.from_numpy(q_ids), g_ids,
                     torch.from_numpy(q_cams), g_cams, protocol="sysu", chunk_size=chunk)
        np.testing.assert_array_equal(r.cmc, base.cmc)
        assert (r.mAP, r.mINP, r.num_valid_queries) == (base.mAP, base.mINP,
                                                         base.num_valid_queries)
    # a non-contiguous (transposed) array is ranked the same as its contiguous copy
    r = evaluate(np.ascontiguousarray(dist.T).T, q_ids, g_ids, q_cams, g_cams, protocol="sysu",
                 chunk_size=4)
    assert r.mAP == base.mAP


def test_to_dict_gives_percent_keys():
    r = EvalResult(np.linspace(0.05, 1.0, 20), mAP=0.5, mINP=0.25, num_valid_queries=3)
    d = r.to_dict()
    assert list(d) == ["rank1", "rank5", "rank10", "rank20", "mAP", "mINP"]
    assert d["rank1"] == pytest.approx(5.0)
    assert d["rank20"] == pytest.approx(100.0)
    assert d["mAP"] == pytest.approx(50.0)
    assert r.to_dict(percent=False)["mINP"] == pytest.approx(0.25)
    assert list(EvalResult(np.ones(5), 1.0, 1.0, 1).to_dict()) == ["rank1", "rank5", "mAP",
                                                                    "mINP"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"distmat": np.zeros((2, 3, 1))}, "2-D"),
        ({"query_ids": np.array([1])}, "query_ids: expected 2 entries"),
        ({"gallery_ids": np.array([1, 2])}, "gallery_ids: expected 3 entries"),
        ({"query_cams": np.array([3, 6, 6])}, "query_cams: expected 2 entries"),
        ({"gallery_cams": np.array([[1, 2, 4]])}, "gallery_cams: expected a 1-D"),
        ({"gallery_cams": None}, "needs query_cams and gallery_cams"),
        ({"gallery_cams": None, "protocol": "llcm"}, "'llcm' needs query_cams and gallery_cams"),
        ({"query_cams": torch.tensor([3.0, 6.0])}, "query_cams: expected integer labels"),
        ({"query_ids": torch.tensor([[1, 2]])}, "query_ids: expected a 1-D"),
        ({"query_ids": np.array([1, None])}, "query_ids: expected an integer array"),
        ({"query_ids": np.array([1.0, 2.0])}, "integer labels"),
        ({"distmat": np.array([[0.1, np.nan, 0.3], [0.1, 0.2, 0.3]])}, "NaN.*row 0"),
        ({"protocol": "market"}, "protocol: expected one of sysu, regdb, llcm"),
        ({"max_rank": 0}, "max_rank"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_errors_have_clear_messages(kwargs, match):
    args = {"distmat": np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]]),
            "query_ids": np.array([1, 2]), "gallery_ids": np.array([1, 2, 3]),
            "query_cams": np.array([3, 6]), "gallery_cams": np.array([1, 2, 4]),
            "protocol": "sysu"}
    args.update(kwargs)
    with pytest.raises(EvaluationError, match=match) as info:
        evaluate(args.pop("distmat"), args.pop("query_ids"), args.pop("gallery_ids"),
                 args.pop("query_cams"), args.pop("gallery_cams"), **args)
    assert isinstance(info.value, Df2amError)


def test_nan_in_a_later_chunk_names_its_row():
    dist = np.zeros((5, 3))
    dist[3, 1] = np.nan
    with pytest.raises(EvaluationError, match="row 3"):
        evaluate(dist, np.arange(5), np.arange(3), None, None, protocol="regdb", chunk_size=2)


def test_default_chunk_size_bounds_memory():
    assert default_chunk_size(301) >= 3803  # the SYSU test set fits in one chunk
    big = default_chunk_size(100_000)
    assert 1 <= big <= 100
    assert default_chunk_size(10**12) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_matches_cpu():
    rng = np.random.default_rng(1)
    dist = rng.integers(0, 5, size=(50, 40)).astype(np.float32)
    q_ids, g_ids = rng.integers(0, 6, 50), rng.integers(0, 6, 40)
    q_cams, g_cams = rng.choice([1, 3, 6], 50), rng.choice([1, 2, 4, 5], 40)
    for protocol in PROTOCOLS:
        cpu = evaluate(dist, q_ids, g_ids, q_cams, g_cams, protocol=protocol, chunk_size=7)
        gpu = evaluate(torch.from_numpy(dist).cuda(), torch.from_numpy(q_ids).cuda(), g_ids,
                       q_cams, torch.from_numpy(g_cams).cuda(), protocol=protocol, chunk_size=7)
        np.testing.assert_array_equal(cpu.cmc, gpu.cmc)
        assert cpu.mAP == pytest.approx(gpu.mAP, abs=1e-12)
        assert cpu.mINP == pytest.approx(gpu.mINP, abs=1e-12)
