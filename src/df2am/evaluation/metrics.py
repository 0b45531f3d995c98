"""CMC / mAP / mINP for the SYSU-MM01, RegDB and LLCM protocols, vectorised over chunks of queries.

The definitions are those of ``docs/protocols.md`` ("Metrics", "LLCM"), i.e. of the reference
``eval_sysu`` / ``eval_regdb`` / ``eval_llcm`` scripts that published tables come from:

- Ranking: each distance row is sorted ascending with a **stable** sort (ties keep gallery
  order, so results do not depend on the machine).
- SYSU camera rule: map camera 3 to 2 and drop the gallery entries whose mapped camera equals the
  query's mapped camera. With the standard SYSU lists (queries from cams 3/6, gallery from
  cams 1/2/4/5) this drops exactly the cam-2 images for a cam-3 query and nothing for a cam-6
  query, which is what the reference's ``(q_cam == 3) & (g_cam == 2)`` does.
- LLCM rule: drop the gallery entries with the query's identity **and** the query's camera
  number (camera numbers are shared by both modalities); entries of other identities from the
  query's camera stay (as negatives).
- SYSU and LLCM CMC are identity-deduplicated: after the rule, only the first occurrence of each
  gallery id (in rank order) is kept; CMC[k] = share of valid queries whose id is among the
  first k+1 distinct ids. RegDB CMC is image-level, and RegDB applies no camera filter.
- AP over the filtered (not deduplicated) list; mAP = mean over valid queries.
- mINP = mean over valid queries of (number of true matches) / (rank of the last true match).
- A query with no true match after filtering is skipped; if none is valid, an error is raised.

Documented difference from the reference: when a (filtered, deduplicated) list is shorter than
``max_rank``, the reference returns a shorter / ragged CMC; here the cumulative value stays
constant past the end of the list, so ``cmc`` always has length ``max_rank``.

How it is vectorised (memory O(chunk × G), never O(Q × G)): each match's 1-based position in
the filtered stable ranking of its query row is found in one of three exact ways:

- numpy (every CPU chunk of a dtype numpy compares natively — float32/64, integers; float16,
  bfloat16 and small integers as float32, which holds them exactly — see
  :mod:`df2am.evaluation.cpu_counting`; no torch op on this path): per group of rows with the
  same filter and number of matches, either compare-and-count passes per match over
  cache-sized blocks (distances compared in their own dtype, never rounded; exact ties resolved
  by column on their sparse list), or, for wide rows / many matches, a sort of only the
  distances no farther than the row's last match;
- torch counting (CUDA tensors, few matches): the same count on float distances with the
  ``match``/``keep`` masks and ``nonzero``, exact ties resolved by index on their sparse list;
- torch sorting (CUDA tensors otherwise): ``argsort(stable=True)`` of the rows, then
  ``cumsum(keep)`` gives every entry's position.

With the positions of a row's matches in rank order, the k-th match has precision ``k / pos``
(AP, summed match by match in rank order on every path, so all paths agree bit for bit), the
first gives the image-level CMC rank and the last mINP. The deduplicated rank is 1 + the number
of distinct ids with a kept entry ranked before the first true match.

Example::

    >>> import numpy as np
    >>> dist = np.array([[0.1, 0.2, 0.3]])
    >>> r = evaluate(dist, np.array([7]), np.array([5, 7, 7]), np.array([3]),
    ...              np.array([2, 1, 1]), protocol="sysu", max_rank=3)
    >>> r.cmc.tolist(), round(r.mAP, 4), r.mINP, r.num_valid_queries
    ([1.0, 1.0, 1.0], 1.0, 1.0, 1)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

import numpy as np
import torch

from df2am.errors import EvaluationError
from df2am.evaluation import cpu_counting
from df2am.evaluation.distance import (
    Metric,
    as_float_tensor,
    check_metric,
    check_unit_norm,
    distance_rows,
)

__all__ = [
    "CMC_RANKS",
    "DEFAULT_CHUNK_BYTES",
    "METRIC_KEYS",
    "PROTOCOLS",
    "EvalResult",
    "Protocol",
    "default_chunk_size",
    "evaluate",
    "evaluate_features",
]

logger = logging.getLogger(__name__)

Protocol = Literal["sysu", "regdb", "llcm"]
#: The accepted ``protocol`` names.
PROTOCOLS: tuple[str, ...] = get_args(Protocol)


class _Rule(NamedTuple):
    """What one protocol's metric does (protocols.md)."""

    filter: str  # the gallery filter, one of cpu_counting.FILTERS
    dedup: bool  # identity-deduplicated CMC (else image-level)
    no_match: str  # where a skipped query found no true match (error message)
    cameras: str | None  # the camera rule that needs cameras (error message); None: none


_RULES: dict[str, _Rule] = {
    "sysu": _Rule("room", True, "after the SYSU camera rule (a cam-3 query ignores cam-2 "
                  "gallery images)", "the camera-3/camera-2 rule"),
    "regdb": _Rule("none", False, "in the gallery", None),
    "llcm": _Rule("id_cam", True, "after the LLCM rule (a query ignores the gallery images of "
                  "its own identity from its own camera)", "the same-identity-and-camera rule"),
}
assert tuple(_RULES) == PROTOCOLS

#: Working-memory budget of one chunk of queries when ``chunk_size`` is not given.
DEFAULT_CHUNK_BYTES = 256 * 2**20
# Rough bytes of temporaries per (query, gallery) element of a chunk: int64 sort order and
# gathered ids (8 + 8), gathered cameras (8), positions and scatter source (4 + 4), a few bool
# masks, plus the fp32 distance chunk itself for evaluate_features. Over-estimating only makes
# chunks smaller.
_BYTES_PER_ELEMENT = 48
# evaluate_features on the CPU: the numpy kernels work in small blocks, so a chunk costs its
# fp32 distances (a reused buffer for cosine, a fresh one per chunk for euclidean) and little
# else; larger chunks make the matrix product more efficient.
_CPU_FEATURE_BYTES_PER_ELEMENT = 8

# The SYSU camera rule: cameras 2 and 3 share a room, so camera 3 is mapped onto 2.
_SYSU_CAMERA_MAP = {3: 2}


#: The CMC ranks every report states (Rank-1/5/10/20).
CMC_RANKS: tuple[int, ...] = (1, 5, 10, 20)
#: The metric keys of every results file and table (percent), in this order; the one list.
METRIC_KEYS: tuple[str, ...] = (*(f"rank{k}" for k in CMC_RANKS), "mAP", "mINP")


@dataclass(frozen=True)
class EvalResult:
    """Metrics of one evaluation, as fractions in [0, 1].

    Attributes:
        cmc: float64 array of length ``max_rank``; ``cmc[k]`` = Rank-(k+1) accuracy.
        mAP: mean average precision over valid queries.
        mINP: mean inverse negative penalty over valid queries.
        num_valid_queries: queries with at least one true match after filtering.
    """

    cmc: np.ndarray
    mAP: float  # noqa: N815 - the field's standard name
    mINP: float  # noqa: N815
    num_valid_queries: int

    @property
    def rank1(self) -> float:
        """Rank-1 accuracy (fraction)."""
        return float(self.cmc[0])

    def to_dict(self, percent: bool = True) -> dict[str, float]:
        """``rank1, rank5, rank10, rank20`` (those ≤ ``max_rank``), ``mAP``, ``mINP``.

        Percentages (×100) by default, fractions with ``percent=False``.
        """
        scale = 100.0 if percent else 1.0
        out = {f"rank{k}": float(self.cmc[k - 1]) * scale
               for k in CMC_RANKS if k <= len(self.cmc)}
        out["mAP"] = self.mAP * scale
        out["mINP"] = self.mINP * scale
        return out


# --------------------------------------------------------------------------------------------
# input handling


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise EvaluationError(f"protocol: expected one of {', '.join(PROTOCOLS)}, "
                              f"got {protocol!r}")


def _check_options(max_rank: int, chunk_size: int | None) -> None:
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise EvaluationError(f"max_rank: expected a positive integer, got {max_rank!r}")
    if chunk_size is not None and (isinstance(chunk_size, bool)
                                   or not isinstance(chunk_size, (int, np.integer))
                                   or chunk_size < 1):
        raise EvaluationError(f"chunk_size: expected a positive integer or None, "
                              f"got {chunk_size!r}")


def _labels(x: object, name: str, length: int) -> np.ndarray:
    """A 1-D int64 numpy array of ids/cameras, with its length checked.

    Labels are O(Q + G) bookkeeping: numpy on the CPU for every path (torch's intra-op threads
    only add wake-up latency here); the torch paths move them to their device when needed.
    """
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.ndim != 1:
            raise EvaluationError(f"{name}: expected a 1-D array, got shape {tuple(t.shape)}")
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise EvaluationError(f"{name}: expected integer labels, got dtype {t.dtype}")
        arr = t.cpu().numpy()
    else:
        arr = np.asarray(x)
        if arr.dtype == object:
            raise EvaluationError(f"{name}: expected an integer array, got objects")
        if arr.ndim != 1:
            raise EvaluationError(f"{name}: expected a 1-D array, got shape {arr.shape}")
        if arr.dtype.kind not in "iu":
            raise EvaluationError(f"{name}: expected integer labels, got dtype {arr.dtype}")
    if arr.shape[0] != length:
        raise EvaluationError(f"{name}: expected {length} entries to match the distance "
                              f"matrix, got {arr.shape[0]}")
    return arr.astype(np.int64, copy=False)


def _sysu_cameras(cams: np.ndarray) -> np.ndarray:
    mapped = cams.copy()
    for src, dst in _SYSU_CAMERA_MAP.items():
        mapped[cams == src] = dst
    return mapped


def default_chunk_size(num_gallery: int, budget_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Queries per chunk so that one chunk's temporaries stay within ``budget_bytes``."""
    return max(1, budget_bytes // (_BYTES_PER_ELEMENT * max(1, num_gallery)))


class _Prepared:
    """Labels in the compact form the chunk rankers need (computed once per evaluation)."""

    def __init__(self, query_ids: np.ndarray, gallery_ids: np.ndarray,
                 query_cams: np.ndarray | None, gallery_cams: np.ndarray | None,
                 protocol: str, max_rank: int, device: torch.device) -> None:
        self.protocol = protocol
        self.filter = _RULES[protocol].filter
        self.dedup = _RULES[protocol].dedup
        self.max_rank = max_rank
        self.device = device
        # Compact gallery ids 0..U-1 so the dedup tables have U columns, not max(id) columns.
        uniq, g_compact = np.unique(gallery_ids, return_inverse=True)
        self.num_ids = int(uniq.size)
        if self.num_ids:
            idx = np.minimum(np.searchsorted(uniq, query_ids), self.num_ids - 1)
            present = uniq[idx] == query_ids
        else:
            idx = np.zeros_like(query_ids)
            present = np.zeros(query_ids.shape, dtype=bool)
        # -1 never equals a compact gallery id: such a query has no match and is skipped.
        self.q_ids_np = np.where(present, idx, -1).astype(np.int64)
        self.g_ids_np = g_compact.reshape(-1).astype(np.int64)
        self.q_cams_np = self.g_cams_np = None
        if self.filter != "none":
            assert query_cams is not None and gallery_cams is not None
            rooms = self.filter == "room"
            self.q_cams_np = _sysu_cameras(query_cams) if rooms else query_cams
            self.g_cams_np = _sysu_cameras(gallery_cams) if rooms else gallery_cams
        self._cpu_tables: cpu_counting.CpuTables | None = None
        self._torch: tuple[torch.Tensor, ...] | None = None

    def cpu_tables(self) -> cpu_counting.CpuTables:
        """The numpy lookups of the CPU path (built on first use)."""
        if self._cpu_tables is None:
            self._cpu_tables = cpu_counting.CpuTables(
                self.q_ids_np, self.g_ids_np, self.num_ids, self.filter, self.q_cams_np,
                self.g_cams_np)
        return self._cpu_tables

    def torch_labels(self) -> tuple[torch.Tensor, ...]:
        """``(q_ids, g_ids, q_cams, g_cams)`` on the ranking device (cameras None for RegDB);
        built on first use, so the numpy path never touches torch."""
        if self._torch is None:
            self._torch = tuple(
                None if a is None else torch.from_numpy(a).to(self.device)
                for a in (self.q_ids_np, self.g_ids_np, self.q_cams_np, self.g_cams_np))
        return self._torch


class _Accumulator:
    """Sums over valid queries, accumulated chunk by chunk in float64 / int64."""

    def __init__(self, max_rank: int) -> None:
        self.hist = np.zeros(max_rank, dtype=np.int64)  # valid queries whose CMC rank is k+1
        # Per-query values, summed once at the end with math.fsum (exactly rounded), so the
        # result does not depend on how the queries were chunked.
        self.aps: list[np.ndarray] = []
        self.inps: list[np.ndarray] = []
        self.num_valid = 0
        self.num_queries = 0

    def add(self, ap: np.ndarray, inp: np.ndarray, rank: np.ndarray) -> None:
        """Add the per-query AP, INP and 1-based CMC rank of some valid queries."""
        in_range = rank <= len(self.hist)
        self.hist += np.bincount(rank[in_range] - 1, minlength=len(self.hist))
        self.aps.append(ap)
        self.inps.append(inp)
        self.num_valid += int(rank.size)

    def result(self, protocol: str) -> EvalResult:
        if self.num_valid == 0:
            raise EvaluationError(
                f"no valid query: none of the {self.num_queries} queries has a true match "
                f"{_RULES[protocol].no_match}; check that query_ids and gallery_ids share "
                f"identities and that query/gallery are not swapped")
        cmc = np.cumsum(self.hist) / self.num_valid
        ap_sum = math.fsum(np.concatenate(self.aps).tolist())
        inp_sum = math.fsum(np.concatenate(self.inps).tolist())
        return EvalResult(cmc=cmc.astype(np.float64), mAP=ap_sum / self.num_valid,
                          mINP=inp_sum / self.num_valid, num_valid_queries=self.num_valid)


def _nan_error(row: int) -> EvaluationError:
    return EvaluationError(f"distmat: contains NaN distances (first in query row {row}); "
                           f"NaN cannot be ranked — check the features for NaN/inf")


def _check_nan(dist: torch.Tensor, rows: slice) -> None:
    if not dist.dtype.is_floating_point:
        return
    # One cheap reduction first: the sum is finite unless there is a NaN or an inf; only then
    # look for the NaN itself (infinite distances are allowed and rank last/first).
    if bool(torch.isfinite(dist.sum())):
        return
    nan_rows = torch.isnan(dist).any(dim=1)
    if bool(nan_rows.any()):
        raise _nan_error(int(nan_rows.nonzero()[0, 0]) + (rows.start or 0))


def _check_nan_numpy(dist: np.ndarray, rows: slice) -> None:
    """:func:`_check_nan` for the numpy path (single-threaded, no torch)."""
    if dist.dtype.kind != "f":
        return
    with np.errstate(invalid="ignore", over="ignore"):  # inf + -inf is fine here
        if np.isfinite(dist.sum()):
            return
    nan_rows = np.isnan(dist).any(axis=1)
    if nan_rows.any():
        raise _nan_error(int(np.flatnonzero(nan_rows)[0]) + (rows.start or 0))


# --------------------------------------------------------------------------------------------
# torch paths (CUDA tensors; CPU only when the numpy path is switched off or cannot hold the
# dtype)


def _row_count(mask: torch.Tensor) -> torch.Tensor:
    """Number of True per row, int32 (summing the uint8 view avoids an int64 copy)."""
    return mask.view(torch.uint8).sum(dim=1, dtype=torch.int32)


def _positions_by_counting(masked: torch.Tensor, keep: torch.Tensor | None,
                           m_rows: torch.Tensor, m_cols: torch.Tensor) -> torch.Tensor:
    """1-based position in the filtered stable ranking of each listed (kept) gallery entry.

    The stable order ranks entry ``e`` before ``j`` iff ``(d_e, e) < (d_j, j)``
    lexicographically, so the position of ``j`` is one plus the number of kept entries with a
    smaller ``(distance, index)`` key — no sort needed. ``masked`` holds the distances with
    dropped entries set to +inf, so one ``<`` counts the strictly closer kept entries; exact
    ties (rare with real features) are resolved by gallery index on their sparse list. Work is
    O(len(m_rows) × G), in blocks that keep the (block, G) temporaries within the chunk budget.
    """
    G = masked.shape[1]
    out = torch.empty(m_rows.numel(), dtype=torch.int64, device=masked.device)
    step = max(1, DEFAULT_CHUNK_BYTES // (8 * G))
    for s in range(0, m_rows.numel(), step):
        r, j = m_rows[s:s + step], m_cols[s:s + step]
        d = masked.index_select(0, r)  # (n, G): the query row of each listed entry
        v = d.gather(1, j[:, None])
        lt = _row_count(d < v)
        pos = lt.long() + 1
        # Ties: every entry ties with itself; rows with more (equal distances) are resolved
        # on the sparse list of tied entries, counting kept ones with a smaller gallery index.
        tied_rows = (_row_count(d <= v) - lt > 1).nonzero()[:, 0]
        if tied_rows.numel():
            tr, tc = (d[tied_rows] == v[tied_rows]).nonzero(as_tuple=True)
            tr = tied_rows[tr]
            earlier = tc < j[tr]
            if keep is not None:
                earlier &= keep[r[tr], tc]  # an +inf tie may be a dropped entry
            pos.index_add_(0, tr[earlier], torch.ones_like(tr[earlier]))
        out[s:s + step] = pos
    return out


def _distinct_before(masked: torch.Tensor, keep: torch.Tensor | None, g_ids: torch.Tensor,
                     num_ids: int, v: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """Per row, the number of distinct gallery ids among kept entries ranked before key
    ``(v, j)`` in the stable order. ``masked`` = distances with dropped entries at +inf; its
    rows correspond to ``v``/``j``.

    An id is ranked before ``(v, j)`` iff its smallest kept distance is ``< v``, or it has a
    kept entry with distance exactly ``v`` and a smaller gallery index (a tie, handled on the
    sparse list of tied entries).
    """
    C = masked.shape[0]
    # Per (row, id): how many kept entries of that id are strictly closer than v.
    closer = torch.zeros((C, num_ids), dtype=torch.int32, device=masked.device)
    closer.index_add_(1, g_ids, (masked < v[:, None]).to(torch.int32))
    earlier = closer > 0  # (C, U)
    eq = masked == v[:, None]
    # Every row ties with its own first match; only rows with more ties need the sparse pass.
    tied_rows = (_row_count(eq) > 1).nonzero()[:, 0]
    if tied_rows.numel():
        r, c = eq[tied_rows].nonzero(as_tuple=True)
        r = tied_rows[r]
        tied = c < j[r]
        if keep is not None:
            tied &= keep[r, c]  # an +inf tie may be a dropped entry
        earlier[r[tied], g_ids[c[tied]]] = True
    return _row_count(earlier)


def _torch_keep(rule: str, same_id: torch.Tensor, q_cams: torch.Tensor | None,
                g_cams: torch.Tensor | None) -> torch.Tensor | None:
    """(C, G) mask of the gallery entries each query keeps (None: all); ``same_id`` and
    ``g_cams`` (G,) or (C, G) in the same column order."""
    if rule == "none":
        return None
    same_cam = g_cams == q_cams[:, None]
    return ~same_cam if rule == "room" else ~(same_id & same_cam)


# Average true matches per query up to which the torch counting path (3+ passes of torch
# compares per match, O(matches × G)) is used instead of torch's stable argsort.
_TORCH_COUNT_PATH_MAX_AVG_MATCHES = 6.0
# Whether CPU chunks use the numpy path (tests switch it off to exercise the torch paths that
# CUDA tensors use).
_CPU_COUNTING = True
# Torch dtypes the numpy path takes as float32 (exact), and those numpy holds natively.
_TORCH_AS_FLOAT32 = (torch.float16, torch.bfloat16, torch.uint8, torch.int8, torch.int16)
_TORCH_NATIVE = (torch.float32, torch.float64, torch.int32, torch.int64)


def _torch_counting(dist: torch.Tensor, keep: torch.Tensor | None, m_rows: torch.Tensor,
                    m_cols: torch.Tensor, starts: torch.Tensor, valid: torch.Tensor,
                    prep: _Prepared, g_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions by counting: ``(pos, rank)``, each row's matches in rank order."""
    G = dist.shape[1]
    masked = dist if keep is None else torch.where(keep, dist, float("inf"))
    pos = _positions_by_counting(masked, keep, m_rows, m_cols)
    # Order each row's matches by rank (positions within a row are distinct).
    perm = torch.argsort(m_rows * (G + 1) + pos)
    m_cols, pos = m_cols[perm], pos[perm]
    first = starts[valid]
    if not prep.dedup:
        return pos, pos[first]
    j = m_cols[first]
    if bool(valid.all()):  # the usual case: no row copies needed
        rows_m, rows_k, v = masked, keep, masked.gather(1, j[:, None])[:, 0]
    else:
        vrows = valid.nonzero()[:, 0]
        rows_m, v = masked[vrows], masked[vrows, j]
        rows_k = None if keep is None else keep[vrows]
    rank = _distinct_before(rows_m, rows_k, g_ids, prep.num_ids, v, j) + 1
    return pos, rank


def _torch_sorting(dist: torch.Tensor, rows: slice, starts: torch.Tensor, valid: torch.Tensor,
                   prep: _Prepared) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions by a stable sort: ``(pos, rank)``, each row's matches in rank order."""
    C, G = dist.shape
    q_ids, g_ids, q_cams, g_cams = prep.torch_labels()
    order = torch.argsort(dist, dim=1, stable=True)  # (C, G) ranked gallery indices
    ranked_ids = g_ids[order]
    match = ranked_ids == q_ids[rows][:, None]
    keep = _torch_keep(prep.filter, match, None if q_cams is None else q_cams[rows],
                       None if g_cams is None else g_cams[order])
    if keep is not None:
        match &= keep
    del order
    m_rows, m_cols = match.nonzero(as_tuple=True)  # row-major: per row, by rank
    del match
    # 1-based position of each kept entry in the filtered list.
    pos = (m_cols + 1 if keep is None
           else torch.cumsum(keep, dim=1, dtype=torch.int32)[m_rows, m_cols].long())
    first = starts[valid]
    if not prep.dedup:
        return pos, pos[first]
    # Deduplicated CMC: where does each gallery id first appear among kept entries?
    col = torch.arange(G, device=dist.device, dtype=torch.int64)
    src = col[None, :].expand(C, G) if keep is None else torch.where(
        keep, col[None, :], torch.full_like(col, G)[None, :])
    first_seen = torch.full((C, prep.num_ids), G, dtype=torch.int64, device=dist.device)
    first_seen.scatter_reduce_(1, ranked_ids, src, reduce="amin", include_self=True)
    # The true id first appears at its first kept match; count ids seen earlier.
    rank = (first_seen[valid] < m_cols[first][:, None]).sum(dim=1) + 1
    return pos, rank


def _rank_chunk_torch(dist: torch.Tensor, rows: slice, prep: _Prepared,
                      acc: _Accumulator) -> None:
    """The torch paths for one chunk: counting when matches are few, else a stable argsort."""
    C = dist.shape[0]
    device = dist.device
    _check_nan(dist, rows)
    q_ids, g_ids, q_cams, g_cams = prep.torch_labels()
    match = g_ids[None, :] == q_ids[rows][:, None]  # (C, G), gallery order
    keep = _torch_keep(prep.filter, match, None if q_cams is None else q_cams[rows], g_cams)
    if keep is not None:
        match &= keep
    m_rows, m_cols = match.nonzero(as_tuple=True)  # row-major: per row, by gallery index
    del match
    counts = torch.bincount(m_rows, minlength=C)
    valid = counts > 0
    n_valid = int(valid.sum())
    if n_valid == 0:
        return
    starts = torch.cumsum(counts, 0) - counts
    # Both ways list each row's matches in rank order: m_rows (row-major) stays valid.
    if m_rows.numel() <= _TORCH_COUNT_PATH_MAX_AVG_MATCHES * C:
        pos, rank = _torch_counting(dist, keep, m_rows, m_cols, starts, valid, prep, g_ids)
    else:
        del keep, m_cols
        pos, rank = _torch_sorting(dist, rows, starts, valid, prep)

    m_pos = pos.to(torch.float64)
    ordinal = torch.arange(m_rows.numel(), device=device) - starts[m_rows] + 1
    # AP = mean over the true matches of precision at their rank (k-th match at position p: k/p).
    ap = torch.zeros(C, dtype=torch.float64, device=device)
    ap.index_add_(0, m_rows, ordinal.to(torch.float64) / m_pos)
    cnt = counts[valid].to(torch.float64)
    ap = ap[valid] / cnt
    last = starts[valid] + counts[valid] - 1
    # mINP: number of true matches / position of the hardest (last) one.
    inp = cnt / m_pos[last]

    in_range = rank <= prep.max_rank
    hist = torch.bincount(rank[in_range] - 1, minlength=prep.max_rank)
    acc.hist += hist.cpu().numpy()
    acc.aps.append(ap.cpu().numpy())
    acc.inps.append(inp.cpu().numpy())
    acc.num_valid += n_valid


# --------------------------------------------------------------------------------------------
# chunk dispatch


def _numpy_chunk(dist: np.ndarray | torch.Tensor) -> np.ndarray | None:
    """The chunk as a numpy array for the numpy path, or None for the torch paths."""
    if not _CPU_COUNTING:
        return None
    if isinstance(dist, np.ndarray):
        if dist.dtype.itemsize <= 2:  # float16 and 8/16-bit integers: exact in float32
            return dist.astype(np.float32)
        return dist
    if dist.device.type != "cpu":
        return None
    if dist.dtype in _TORCH_AS_FLOAT32:
        return dist.detach().to(torch.float32).numpy()
    if dist.dtype in _TORCH_NATIVE:
        return dist.detach().numpy()
    return None


def _rank_chunk(dist: np.ndarray | torch.Tensor, rows: slice, prep: _Prepared,
                acc: _Accumulator) -> None:
    """Rank one chunk of distance rows (C, G) for queries ``rows`` and add to ``acc``."""
    C, G = dist.shape
    acc.num_queries += C
    if C == 0 or G == 0:
        return
    arr = _numpy_chunk(dist)
    if arr is not None:
        _check_nan_numpy(arr, rows)
        for ap, inp, rank in cpu_counting.rank_chunk(arr, rows, prep.cpu_tables(),
                                                      prep.dedup):
            acc.add(ap, inp, rank)
        return
    if isinstance(dist, np.ndarray):
        dist = torch.from_numpy(np.ascontiguousarray(dist))
    _rank_chunk_torch(dist, rows, prep, acc)


def _prepare(num_q: int, num_g: int, query_ids: object, gallery_ids: object,
             query_cams: object, gallery_cams: object, protocol: str, max_rank: int,
             chunk_size: int | None, device: torch.device) -> _Prepared:
    _check_protocol(protocol)
    _check_options(max_rank, chunk_size)
    q_ids = _labels(query_ids, "query_ids", num_q)
    g_ids = _labels(gallery_ids, "gallery_ids", num_g)
    q_cams = g_cams = None
    rule = _RULES[protocol]
    if rule.cameras is not None:
        if query_cams is None or gallery_cams is None:
            raise EvaluationError(f"protocol {protocol!r} needs query_cams and gallery_cams "
                                  f"({rule.cameras}), got None")
        q_cams = _labels(query_cams, "query_cams", num_q)
        g_cams = _labels(gallery_cams, "gallery_cams", num_g)
    else:
        # RegDB ignores cameras; still catch lists that do not belong to this matrix.
        if query_cams is not None:
            _labels(query_cams, "query_cams", num_q)
        if gallery_cams is not None:
            _labels(gallery_cams, "gallery_cams", num_g)
    return _Prepared(q_ids, g_ids, q_cams, g_cams, protocol, max_rank, device)


def _chunk(distmat: np.ndarray | torch.Tensor, rows: slice) -> np.ndarray | torch.Tensor:
    if isinstance(distmat, torch.Tensor):
        return distmat[rows]
    # A view for arrays; reads only this chunk of a memmap.
    return np.asarray(distmat[rows])


def evaluate(distmat: np.ndarray | torch.Tensor, query_ids: np.ndarray | torch.Tensor,
             gallery_ids: np.ndarray | torch.Tensor,
             query_cams: np.ndarray | torch.Tensor | None,
             gallery_cams: np.ndarray | torch.Tensor | None, *, protocol: Protocol,
             max_rank: int = 20, chunk_size: int | None = None) -> EvalResult:
    """CMC, mAP and mINP of a query × gallery distance matrix under ``protocol``.

    Args:
        distmat: ``(Q, G)`` distances, smaller = more similar (numpy array, memmap or torch
            tensor; a CUDA tensor is ranked on its GPU). Never copied whole.
        query_ids, gallery_ids: integer identities, lengths ``Q`` and ``G``.
        query_cams, gallery_cams: integer camera numbers (SYSU: 1–6; LLCM: 1–9, shared by both
            modalities); required by SYSU and LLCM, may be ``None`` for RegDB, which applies no
            camera filter.
        protocol: ``"sysu"`` (camera-room rule + identity-deduplicated CMC), ``"regdb"``
            (image-level CMC, no filter) or ``"llcm"`` (drop same identity *and* camera +
            identity-deduplicated CMC). See the module docstring / protocols.md.
        max_rank: length of the returned CMC curve.
        chunk_size: queries ranked at once; default keeps one chunk's temporaries under
            :data:`DEFAULT_CHUNK_BYTES`. Results do not depend on it.

    Returns:
        :class:`EvalResult` with fractions in [0, 1].

    Raises:
        EvaluationError: bad protocol/options, shape or length mismatches, NaN distances, or
            no query with a true match.
    """
    if isinstance(distmat, torch.Tensor):
        device = distmat.device
        shape = tuple(distmat.shape)
        dtype_ok = not (distmat.dtype.is_complex or distmat.dtype == torch.bool)
    else:
        if not hasattr(distmat, "shape") or not hasattr(distmat, "dtype"):
            distmat = np.asarray(distmat)
        device = torch.device("cpu")
        shape = tuple(distmat.shape)
        dtype_ok = distmat.dtype.kind in "fiu"
    if len(shape) != 2:
        raise EvaluationError(f"distmat: expected a 2-D (num_query, num_gallery) matrix, got "
                              f"shape {shape}")
    if not dtype_ok:
        raise EvaluationError(f"distmat: expected real-valued distances, got dtype "
                              f"{distmat.dtype}")
    num_q, num_g = shape
    prep = _prepare(num_q, num_g, query_ids, gallery_ids, query_cams, gallery_cams, protocol,
                    max_rank, chunk_size, device)
    step = chunk_size or default_chunk_size(num_g)
    logger.debug("evaluate: %d x %d, protocol=%s, %d queries per chunk on %s",
                 num_q, num_g, protocol, step, device)
    acc = _Accumulator(max_rank)
    with torch.no_grad():
        for start in range(0, num_q, step):
            rows = slice(start, min(start + step, num_q))
            _rank_chunk(_chunk(distmat, rows), rows, prep, acc)
    return acc.result(protocol)


def _feature_chunks(q: torch.Tensor, g: torch.Tensor, metric: str, step: int):
    """``(rows, distances)`` per chunk of queries. On the CPU the distances of every chunk go
    into one reused buffer: fresh (C, G) results would page-fault on every chunk."""
    num_q = q.shape[0]
    buf = None
    reuse = q.device.type == "cpu"
    for start in range(0, num_q, step):
        rows = slice(start, min(start + step, num_q))
        if not reuse:
            yield rows, distance_rows(q[rows], g, metric)
            continue
        if buf is None:
            buf = torch.empty((min(step, num_q), g.shape[0]), dtype=torch.float32)
        yield rows, distance_rows(q[rows], g, metric, out=buf[:rows.stop - start])


def evaluate_features(query_feats: np.ndarray | torch.Tensor,
                      gallery_feats: np.ndarray | torch.Tensor,
                      query_ids: np.ndarray | torch.Tensor, gallery_ids: np.ndarray | torch.Tensor,
                      query_cams: np.ndarray | torch.Tensor | None,
                      gallery_cams: np.ndarray | torch.Tensor | None, *, protocol: Protocol,
                      metric: Metric = "cosine", max_rank: int = 20,
                      chunk_size: int | None = None) -> EvalResult:
    """Like :func:`evaluate`, computing the distances chunk by chunk from features.

    Only one ``(chunk_size, G)`` block of distances exists at a time, so a query × gallery
    matrix too large for memory is never built. The result equals
    ``evaluate(pairwise_distance(query_feats, gallery_feats, metric), ...)`` up to the float
    rounding of the matrix product (which can only matter for near-exact ties).

    Features are ranked in fp32 on ``query_feats``' device (a CUDA tensor → GPU).

    Args:
        query_feats: ``(Q, D)`` features.
        gallery_feats: ``(G, D)`` features.
        metric: ``"cosine"`` (``-q·gᵀ`` of L2-normalised features, as the reference) or
            ``"euclidean"``; see :func:`df2am.evaluation.pairwise_distance`.
        Other arguments: as :func:`evaluate`.
    """
    check_metric(metric)
    q = as_float_tensor(query_feats, "query_feats")
    g = as_float_tensor(gallery_feats, "gallery_feats").to(q.device)
    if q.shape[1] != g.shape[1]:
        raise EvaluationError(f"evaluate_features: feature dimensions differ: query_feats has "
                              f"{q.shape[1]}, gallery_feats has {g.shape[1]}")
    if bool(torch.isnan(q).any()) or bool(torch.isnan(g).any()):
        which = "query_feats" if bool(torch.isnan(q).any()) else "gallery_feats"
        raise EvaluationError(f"{which}: contains NaN values; NaN distances cannot be ranked")
    if metric == "cosine":
        check_unit_norm(q, "query_feats")
        check_unit_norm(g, "gallery_feats")
    num_q, num_g = q.shape[0], g.shape[0]
    prep = _prepare(num_q, num_g, query_ids, gallery_ids, query_cams, gallery_cams, protocol,
                    max_rank, chunk_size, q.device)
    if chunk_size:
        step = chunk_size
    elif q.device.type == "cpu" and _CPU_COUNTING:
        step = max(1, DEFAULT_CHUNK_BYTES // (_CPU_FEATURE_BYTES_PER_ELEMENT * max(1, num_g)))
    else:
        # The fp32 distance block is one more (C, G) buffer on top of the ranking temporaries.
        step = default_chunk_size(num_g, DEFAULT_CHUNK_BYTES * 48 // 52)
    logger.debug("evaluate_features: %d x %d (D=%d, %s), %d queries per chunk on %s",
                 num_q, num_g, q.shape[1], metric, step, q.device)
    acc = _Accumulator(max_rank)
    with torch.no_grad():
        for rows, dist in _feature_chunks(q, g, metric, step):
            _rank_chunk(dist, rows, prep, acc)
    return acc.result(protocol)
