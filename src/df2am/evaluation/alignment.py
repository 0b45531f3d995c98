"""Modality-alignment diagnostic: are RGB and IR features of one person in the same place?

A cross-modality re-ID model can learn excellent features *inside* each modality and still
fail across them: the two modalities then occupy different regions of the feature space and an
IR query finds only RGB images that are near the IR cluster, not its own identity. The test
protocol's single number cannot tell this failure from plain weak features; this report can.

Given the features of one set of images of both modalities (e.g. the validation identities, or
a test set), it reports, all on L2-normalised features:

* retrieval **within** each modality (``rgb2rgb``, ``ir2ir``: every image queried against the
  other images of its own modality, the query itself and — when cameras are given — every image
  of the query's camera excluded, so near-duplicate frames do not count) and **across** them
  (``ir2rgb``, ``rgb2ir``: every image of one modality against all images of the other):
  Rank-1 and mAP (image-level ranking, stable sort, queries with no true match skipped);
* the **cross-modality distance gap** in the units of the affinity loss L_A (Euclidean distance
  between unit vectors, ∈ [0, 2], so it compares directly with L_A's margin m):
  ``cross_pos_dist`` = mean distance of RGB–IR pairs of the same identity, ``cross_neg_dist`` =
  mean over RGB–IR pairs of different identities, ``cross_gap`` = neg − pos (> 0 is needed,
  and larger is better), and ``within_pos_dist`` (same-identity pairs of one modality) beside it;
* ``centroid_dist``: the distance between the mean RGB and the mean IR unit feature — large
  when the modalities sit in separate sub-spaces, ≈ 0 when they are mixed.

Usage::

    import numpy as np
    from df2am.evaluation import modality_alignment

    rep = modality_alignment(rgb_feats, ir_feats, rgb_ids, ir_ids, rgb_cams, ir_cams)
    rep.to_dict()   # {'rgb2rgb_rank1': ..., 'ir2rgb_mAP': ..., 'cross_gap': ..., ...}
    print(rep.summary())

Rank-1 and mAP are percentages; distances are plain numbers. Memory is bounded: rankings are
computed in chunks of query rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from df2am.errors import EvaluationError

__all__ = ["ALIGNMENT_KEYS", "AlignmentReport", "modality_alignment", "retrieval_stats"]

#: Flat keys of :meth:`AlignmentReport.to_dict`, in display order.
ALIGNMENT_KEYS: tuple[str, ...] = (
    "rgb2rgb_rank1", "rgb2rgb_mAP", "ir2ir_rank1", "ir2ir_mAP",
    "ir2rgb_rank1", "ir2rgb_mAP", "rgb2ir_rank1", "rgb2ir_mAP",
    "cross_pos_dist", "cross_neg_dist", "cross_gap", "within_pos_dist", "centroid_dist",
)

# Bytes of temporaries per (query, gallery) element of a ranking chunk (distance, order, masks).
_BYTES_PER_ELEMENT = 32
_CHUNK_BYTES = 128 * 2**20


@dataclass(frozen=True)
class AlignmentReport:
    """Within- and cross-modality retrieval and distance statistics (see the module doc).

    Retrieval values are percentages (NaN when no query had a true match); distances are
    Euclidean distances between unit vectors (NaN when no such pair exists).
    """

    values: dict[str, float]

    def to_dict(self) -> dict[str, float]:
        """The flat ``ALIGNMENT_KEYS`` → value mapping (a copy)."""
        return dict(self.values)

    def to_json(self) -> dict[str, float | None]:
        """:meth:`to_dict` with NaN (no query or pair to score) as None, which JSON can hold."""
        return {k: None if math.isnan(v) else v for k, v in self.values.items()}

    def summary(self) -> str:
        """One readable line, e.g. for a training log."""
        v = self.values
        return (
            f"R1/mAP within RGB {v['rgb2rgb_rank1']:.1f}/{v['rgb2rgb_mAP']:.1f}, "
            f"within IR {v['ir2ir_rank1']:.1f}/{v['ir2ir_mAP']:.1f}, "
            f"IR→RGB {v['ir2rgb_rank1']:.1f}/{v['ir2rgb_mAP']:.1f}, "
            f"RGB→IR {v['rgb2ir_rank1']:.1f}/{v['rgb2ir_mAP']:.1f}; cross-modality distance "
            f"pos {v['cross_pos_dist']:.3f} neg {v['cross_neg_dist']:.3f} "
            f"gap {v['cross_gap']:+.3f} (within-modality pos {v['within_pos_dist']:.3f}), "
            f"centroid distance {v['centroid_dist']:.3f}"
        )


def _unit(x: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    t = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if t.ndim != 2 or not t.dtype.is_floating_point:
        raise EvaluationError(f"{name}: expected a 2-D float array (N, C), got "
                              f"{tuple(t.shape)} {t.dtype}")
    t = t.to(torch.float64)
    if not torch.isfinite(t).all():
        raise EvaluationError(f"{name}: features contain NaN or inf")
    return torch.nn.functional.normalize(t, dim=1)


def _ints(x: object, name: str, length: int) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != 1 or arr.shape[0] != length or not np.issubdtype(arr.dtype, np.integer):
        raise EvaluationError(f"{name}: expected {length} integer labels, got shape "
                              f"{arr.shape} dtype {arr.dtype}")
    return arr.astype(np.int64)


def retrieval_stats(
    dist: np.ndarray, match: np.ndarray, valid: np.ndarray
) -> tuple[float, float, int]:
    """Rank-1 and mAP (fractions) and the number of scored queries of a ranking.

    Args:
        dist: (Q, G) distances, smaller = more similar.
        match: (Q, G) bool, gallery entry has the query's identity.
        valid: (Q, G) bool, gallery entry takes part in the query's ranking.

    Each row is ranked by a stable ascending sort over its valid entries; a query without a
    valid true match is skipped; (NaN, NaN, 0) when none is left.
    """
    q = dist.shape[0]
    ap_sum, r1_sum, n = 0.0, 0.0, 0
    step = max(1, _CHUNK_BYTES // (_BYTES_PER_ELEMENT * max(1, dist.shape[1])))
    for s in range(0, q, step):
        d = np.where(valid[s:s + step], dist[s:s + step], np.inf)
        order = np.argsort(d, axis=1, kind="stable")
        m = np.take_along_axis(match[s:s + step] & valid[s:s + step], order, axis=1)
        num_pos = m.sum(axis=1)
        ok = num_pos > 0
        if not ok.any():
            continue
        m = m[ok]
        hits = np.cumsum(m, axis=1)
        ranks = np.arange(1, m.shape[1] + 1)
        # Invalid entries are sorted last (inf) and are never matches, so a match's position in
        # the sorted row is its rank in the filtered list.
        ap = (np.where(m, hits / ranks, 0.0).sum(axis=1) / num_pos[ok])
        ap_sum += float(ap.sum())
        r1_sum += float(m[:, 0].sum())
        n += int(ok.sum())
    if n == 0:
        return math.nan, math.nan, 0
    return r1_sum / n, ap_sum / n, n


def modality_alignment(
    rgb_feats: np.ndarray | torch.Tensor,
    ir_feats: np.ndarray | torch.Tensor,
    rgb_ids: object,
    ir_ids: object,
    rgb_cams: object | None = None,
    ir_cams: object | None = None,
) -> AlignmentReport:
    """The alignment report of RGB features (N_rgb, C) and IR features (N_ir, C).

    Args:
        rgb_feats, ir_feats: features (any float dtype, NumPy or torch); L2-normalised here.
        rgb_ids, ir_ids: identity of each row.
        rgb_cams, ir_cams: camera of each row (optional); within-modality retrieval then skips
            gallery images of the query's camera.
    """
    rgb = _unit(rgb_feats, "rgb_feats")
    ir = _unit(ir_feats, "ir_feats")
    if rgb.shape[1] != ir.shape[1]:
        raise EvaluationError(f"rgb_feats has {rgb.shape[1]} channels, ir_feats {ir.shape[1]}")
    if rgb.shape[0] == 0 or ir.shape[0] == 0:
        raise EvaluationError("modality_alignment needs at least one image of each modality")
    r_ids = _ints(rgb_ids, "rgb_ids", rgb.shape[0])
    i_ids = _ints(ir_ids, "ir_ids", ir.shape[0])
    r_cams = None if rgb_cams is None else _ints(rgb_cams, "rgb_cams", rgb.shape[0])
    i_cams = None if ir_cams is None else _ints(ir_cams, "ir_cams", ir.shape[0])

    def euclid(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
        return torch.cdist(a, b).clamp(max=2.0).numpy()

    out: dict[str, float] = {}

    def within(x: torch.Tensor, ids: np.ndarray, cams: np.ndarray | None, key: str) -> np.ndarray:
        d = euclid(x, x)
        valid = ~np.eye(len(ids), dtype=bool)
        if cams is not None:
            valid &= cams[:, None] != cams[None, :]
        match = ids[:, None] == ids[None, :]
        r1, ap, _ = retrieval_stats(d, match, valid)
        out[f"{key}_rank1"], out[f"{key}_mAP"] = 100 * r1, 100 * ap
        return d[match & ~np.eye(len(ids), dtype=bool)]

    pos_r = within(rgb, r_ids, r_cams, "rgb2rgb")
    pos_i = within(ir, i_ids, i_cams, "ir2ir")
    cross = euclid(ir, rgb)
    cmatch = i_ids[:, None] == r_ids[None, :]
    all_valid = np.ones_like(cmatch)
    r1, ap, _ = retrieval_stats(cross, cmatch, all_valid)
    out["ir2rgb_rank1"], out["ir2rgb_mAP"] = 100 * r1, 100 * ap
    r1, ap, _ = retrieval_stats(cross.T, cmatch.T, all_valid.T)
    out["rgb2ir_rank1"], out["rgb2ir_mAP"] = 100 * r1, 100 * ap

    def mean(x: np.ndarray) -> float:
        return float(x.mean()) if x.size else math.nan

    out["cross_pos_dist"] = mean(cross[cmatch])
    out["cross_neg_dist"] = mean(cross[~cmatch])
    out["cross_gap"] = out["cross_neg_dist"] - out["cross_pos_dist"]
    out["within_pos_dist"] = mean(np.concatenate([pos_r, pos_i]))
    out["centroid_dist"] = float(torch.linalg.vector_norm(rgb.mean(0) - ir.mean(0)))
    return AlignmentReport(values={k: out[k] for k in ALIGNMENT_KEYS})
