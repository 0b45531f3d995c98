"""The modality-alignment diagnostic against hand-computed and brute-force values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from df2am.errors import EvaluationError
from df2am.evaluation import ALIGNMENT_KEYS, modality_alignment

# Two ids, two images each per modality, each image from its own camera.
RGB_IDS = np.array([0, 0, 1, 1])
RGB_CAMS = np.array([1, 2, 1, 2])
IR_IDS = np.array([0, 0, 1, 1])
IR_CAMS = np.array([3, 6, 3, 6])


def _eye(rows: list[int], dim: int = 4) -> np.ndarray:
    return np.eye(dim)[rows]


def test_aligned_modalities_score_perfectly() -> None:
    # RGB and IR images of one id share one direction: everything is found, gap = sqrt(2).
    rep = modality_alignment(_eye([0, 0, 1, 1]), _eye([0, 0, 1, 1]), RGB_IDS, IR_IDS,
                             RGB_CAMS, IR_CAMS).to_dict()
    for key in ("rgb2rgb", "ir2ir", "ir2rgb", "rgb2ir"):
        assert rep[f"{key}_rank1"] == pytest.approx(100.0)
        assert rep[f"{key}_mAP"] == pytest.approx(100.0)
    assert rep["cross_pos_dist"] == pytest.approx(0.0, abs=1e-7)
    assert rep["cross_neg_dist"] == pytest.approx(math.sqrt(2))
    assert rep["cross_gap"] == pytest.approx(math.sqrt(2))
    assert rep["within_pos_dist"] == pytest.approx(0.0, abs=1e-7)
    assert rep["centroid_dist"] == pytest.approx(0.0, abs=1e-7)
    assert list(rep) == list(ALIGNMENT_KEYS)


def test_modalities_in_separate_subspaces() -> None:
    # RGB ids on e0/e1, IR ids on e2/e3: perfect inside each modality, but every cross pair is
    # at sqrt(2), so the ranking is the (stable) gallery order.
    rep = modality_alignment(_eye([0, 0, 1, 1]), _eye([2, 2, 3, 3]), RGB_IDS, IR_IDS,
                             RGB_CAMS, IR_CAMS).to_dict()
    assert rep["rgb2rgb_mAP"] == pytest.approx(100.0)
    assert rep["ir2ir_rank1"] == pytest.approx(100.0)
    # id-0 queries: matches at ranks 1, 2 (AP 1); id-1 queries: ranks 3, 4 (AP (1/3 + 2/4)/2).
    assert rep["ir2rgb_rank1"] == pytest.approx(50.0)
    assert rep["ir2rgb_mAP"] == pytest.approx(100 * (1 + 5 / 12) / 2)
    assert rep["rgb2ir_mAP"] == pytest.approx(100 * (1 + 5 / 12) / 2)
    assert rep["cross_pos_dist"] == pytest.approx(math.sqrt(2))
    assert rep["cross_neg_dist"] == pytest.approx(math.sqrt(2))
    assert rep["cross_gap"] == pytest.approx(0.0, abs=1e-7)
    # mean RGB (.5, .5, 0, 0), mean IR (0, 0, .5, .5): distance 1.
    assert rep["centroid_dist"] == pytest.approx(1.0)


def test_camera_exclusion_within_a_modality() -> None:
    # RGB id 0 has two near-identical frames of camera 1 and one far frame of camera 2; without
    # the camera rule the near duplicate would be a free Rank-1 hit.
    rgb = np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.9, 0.1]])
    ids, cams = np.array([0, 0, 0, 1]), np.array([1, 1, 2, 2])
    rep = modality_alignment(rgb, rgb[:2], ids, ids[:2], cams, None).to_dict()
    with_cams = rep["rgb2rgb_rank1"]
    rep = modality_alignment(rgb, rgb[:2], ids, ids[:2], None, None).to_dict()
    # With cameras: cam-1 queries see only cam-2 images, where id 1 (0.9, 0.1) is nearer than
    # id 0 (0, 1): both cam-1 queries miss; the cam-2 id-0 query sees only cam-1 images and
    # hits; the id-1 query has no match in cam 1 and is skipped -> 1 of 3.
    assert with_cams == pytest.approx(100 / 3)
    # Without: the two cam-1 frames find each other (2 hits); the cam-2 id-0 query (0, 1) is
    # nearer to id 1's (0.9, 0.1) (distance 1.33) than to (1, 0) (1.41): a miss -> 2 of 3.
    assert rep["rgb2rgb_rank1"] == pytest.approx(200 / 3)


def _brute(dist: np.ndarray, match: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    r1, aps = [], []
    for i in range(dist.shape[0]):
        cols = [j for j in range(dist.shape[1]) if valid[i, j]]
        cols.sort(key=lambda j: (dist[i, j], j))
        hits = [bool(match[i, j]) for j in cols]
        if not any(hits):
            continue
        found, precisions = 0, []
        for rank, h in enumerate(hits, start=1):
            if h:
                found += 1
                precisions.append(found / rank)
        r1.append(float(hits[0]))
        aps.append(sum(precisions) / found)
    return 100 * float(np.mean(r1)), 100 * float(np.mean(aps))


def test_matches_a_per_query_loop_on_random_features() -> None:
    rng = np.random.default_rng(3)
    rgb, ir = rng.normal(size=(40, 8)), rng.normal(size=(30, 8))
    r_ids, i_ids = rng.integers(0, 6, 40), rng.integers(0, 6, 30)
    r_cams, i_cams = rng.choice([1, 2, 4, 5], 40), rng.choice([3, 6], 30)
    rep = modality_alignment(torch.from_numpy(rgb).float(), ir, r_ids, i_ids, r_cams,
                             i_cams).to_dict()
    ru = rgb / np.linalg.norm(rgb, axis=1, keepdims=True)
    iu = ir / np.linalg.norm(ir, axis=1, keepdims=True)

    def d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))

    cross = d(iu, ru)
    m = i_ids[:, None] == r_ids[None]
    r1, ap = _brute(cross, m, np.ones_like(m))
    assert rep["ir2rgb_rank1"] == pytest.approx(r1, abs=1e-4)
    assert rep["ir2rgb_mAP"] == pytest.approx(ap, abs=1e-4)
    r1, ap = _brute(cross.T, m.T, np.ones_like(m.T))
    assert rep["rgb2ir_mAP"] == pytest.approx(ap, abs=1e-4)
    within = d(ru, ru)
    valid = (r_cams[:, None] != r_cams[None]) & ~np.eye(40, dtype=bool)
    r1, ap = _brute(within, r_ids[:, None] == r_ids[None], valid)
    assert rep["rgb2rgb_rank1"] == pytest.approx(r1, abs=1e-4)
    assert rep["rgb2rgb_mAP"] == pytest.approx(ap, abs=1e-4)
    assert rep["cross_pos_dist"] == pytest.approx(cross[m].mean(), abs=1e-6)
    assert rep["cross_neg_dist"] == pytest.approx(cross[~m].mean(), abs=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rgb_feats": np.zeros((4, 3))}, "channels"),
        ({"rgb_ids": np.array([0, 1])}, "rgb_ids"),
        ({"ir_feats": np.full((4, 4), np.nan)}, "NaN"),
        ({"ir_cams": np.array([0.5, 1, 2, 3])}, "ir_cams"),
    ],
)
def test_bad_input_is_a_clear_error(kwargs: dict, message: str) -> None:
    args = {"rgb_feats": _eye([0, 0, 1, 1]), "ir_feats": _eye([0, 0, 1, 1]),
            "rgb_ids": RGB_IDS, "ir_ids": IR_IDS, "rgb_cams": RGB_CAMS, "ir_cams": IR_CAMS}
    args.update(kwargs)
    with pytest.raises(EvaluationError, match=message):
        modality_alignment(**args)
