"""CMC / mAP / mINP for the SYSU-MM01 and RegDB protocols, vectorised over chunks of queries.

The definitions are those of ``docs/protocols.md`` ("Metrics"), i.e. of the reference
``eval_sysu`` / ``eval_regdb`` scripts that published tables come from:

- Ranking: each distance row is sorted ascending with a **stable** sort (ties keep gallery
  order, so results do not depend on the machine).
- SYSU camera rule: map camera 3 to 2 and drop the gallery entries whose mapped camera equals the
  query's mapped camera. With the standard SYSU lists (queries from cams 3/6, gallery from
  cams 1/2/4/5) this drops exactly the cam-2 images for a cam-3 query and nothing for a cam-6
  query, which is what the reference's ``(q_cam == 3) & (g_cam == 2)`` does.
- SYSU CMC is identity-deduplicated: after the camera rule, only the first occurrence of each
  gallery id (in rank order) is kept; CMC[k] = share of valid queries whose id is among the
  first k+1 distinct ids. RegDB CMC is image-level, and RegDB applies no camera filter.
- AP over the filtered (not deduplicated) list; mAP = mean over valid queries.
- mINP = mean over valid queries of (number of true matches) / (rank of the last true match).
- A query with no true match after filtering is skipped; if none is valid, an error is raised.

Documented difference from the reference: when a (filtered, deduplicated) list is shorter than
``max_rank``, the reference returns a shorter / ragged CMC; here the cumulative value stays
constant past the end of the list, so ``cmc`` always has length ``max_rank``.

How it is vectorised (memory O(chunk × G), never O(Q × G)): each match's 1-based position in
the filtered stable ranking of its query row is found in one of three exact ways, chosen per
chunk by the average number of true matches per query (``_COUNT_PATH_MAX_AVG_MATCHES``):

- numpy counting (CPU chunks whose dtype float32 holds exactly, up to 64 matches per query on
  average: SYSU, RegDB, large galleries): the position of entry ``j`` is one plus the number of
  kept entries whose ``(distance, gallery index)`` key is smaller; distances and columns are
  packed into distinct int64 keys, rows grouped by (camera room, number of matches) into dense
  blocks, and each match costs one compare-and-count pass — see
  :mod:`df2am.evaluation._cpu_counting`;
- torch counting (CUDA tensors and other CPU dtypes, few matches): the same count on float
  distances with the ``match``/``keep`` masks and ``nonzero``, exact ties resolved by index on
  their sparse list;
- sorting (otherwise): ``argsort(stable=True)`` of the rows, then ``cumsum(keep)`` gives every
  entry's position.

With the positions of a row's matches in rank order, the k-th match has precision ``k / pos``
(AP), the first gives the image-level CMC rank and the last mINP. The deduplicated SYSU rank is
1 + the number of distinct ids with a kept entry ranked before the first true match (a
per-identity "any" of ``key < first-match key`` in numpy, an ``index_add`` per (query, id) in the
torch counting path, a scatter-min of ranked positions when sorting).

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
from typing import Literal

import numpy as np
import torch

from df2am.errors import EvaluationError
from df2am.evaluation import _cpu_counting
from df2am.evaluation.distance import (
    Metric,
    _as_float_tensor,
    _check_metric,
    _distance,
    check_unit_norm,
)

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "PROTOCOLS",
    "EvalResult",
    "Protocol",
    "default_chunk_size",
    "evaluate",
    "evaluate_features",
]

logger = logging.getLogger(__name__)

Protocol = Literal["sysu", "regdb"]
#: The accepted ``protocol`` names.
PROTOCOLS: tuple[str, ...] = ("sysu", "regdb")

#: Working-memory budget of one chunk of queries when ``chunk_size`` is not given.
DEFAULT_CHUNK_BYTES = 256 * 2**20
# Rough bytes of temporaries per (query, gallery) element of a chunk: int64 sort order and
# gathered ids (8 + 8), gathered cameras (8), positions and scatter source (4 + 4), a few bool
# masks, plus the fp32 distance chunk itself for evaluate_features. Over-estimating only makes
# chunks smaller.
_BYTES_PER_ELEMENT = 48

# The SYSU camera rule: cameras 2 and 3 share a room, so camera 3 is mapped onto 2.
_SYSU_CAMERA_MAP = {3: 2}


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
               for k in (1, 5, 10, 20) if k <= len(self.cmc)}
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


def _labels(x: object, name: str, length: int, device: torch.device) -> torch.Tensor:
    """A 1-D int64 tensor of ids/cameras on ``device``, with its length checked."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        arr = np.asarray(x)
        if arr.dtype == object:
            raise EvaluationError(f"{name}: expected an integer array, got objects")
        t = torch.from_numpy(arr)
    if t.ndim != 1:
        raise EvaluationError(f"{name}: expected a 1-D array, got shape {tuple(t.shape)}")
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise EvaluationError(f"{name}: expected integer labels, got dtype {t.dtype}")
    if t.shape[0] != length:
        raise EvaluationError(f"{name}: expected {length} entries to match the distance "
                              f"matrix, got {t.shape[0]}")
    return t.to(device=device, dtype=torch.int64)


def _sysu_cameras(cams: np.ndarray) -> np.ndarray:
    mapped = cams.copy()
    for src, dst in _SYSU_CAMERA_MAP.items():
        mapped[cams == src] = dst
    return mapped


def default_chunk_size(num_gallery: int, budget_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Queries per chunk so that one chunk's temporaries stay within ``budget_bytes``."""
    return max(1, budget_bytes // (_BYTES_PER_ELEMENT * max(1, num_gallery)))


class _Prepared:
    """Gallery-side labels in the compact form the chunk ranker needs (computed once)."""

    def __init__(self, query_ids: torch.Tensor, gallery_ids: torch.Tensor,
                 query_cams: torch.Tensor | None, gallery_cams: torch.Tensor | None,
                 protocol: str, max_rank: int) -> None:
        self.protocol = protocol
        self.max_rank = max_rank
        device = gallery_ids.device
        # Label bookkeeping is O(Q + G) work on small arrays: done once in numpy (torch's
        # intra-op threads only add wake-up latency here), then moved to the ranking device.
        q_np, g_np = query_ids.cpu().numpy(), gallery_ids.cpu().numpy()
        # Compact gallery ids 0..U-1 so the dedup scatter has U columns, not max(id) columns.
        uniq, g_compact = np.unique(g_np, return_inverse=True)
        self.num_ids = int(uniq.size)
        if self.num_ids:
            idx = np.minimum(np.searchsorted(uniq, q_np), self.num_ids - 1)
            present = uniq[idx] == q_np
        else:
            idx = np.zeros_like(q_np)
            present = np.zeros(q_np.shape, dtype=bool)
        # -1 never equals a compact gallery id: such a query has no match and is skipped.
        self.q_ids_np = np.where(present, idx, -1).astype(np.int64)
        self.g_ids_np = g_compact.reshape(-1).astype(np.int64)
        self.q_ids = torch.from_numpy(self.q_ids_np).to(device)
        self.g_ids = torch.from_numpy(self.g_ids_np).to(device)
        self.q_cams_np = self.g_cams_np = None
        if protocol == "sysu":
            assert query_cams is not None and gallery_cams is not None
            self.q_cams_np = _sysu_cameras(query_cams.cpu().numpy())
            self.g_cams_np = _sysu_cameras(gallery_cams.cpu().numpy())
            self.q_cams = torch.from_numpy(self.q_cams_np).to(device)
            self.g_cams = torch.from_numpy(self.g_cams_np).to(device)
        self._cpu_tables: _cpu_counting.CpuTables | None = None

    def cpu_tables(self) -> _cpu_counting.CpuTables:
        """The numpy lookups of the CPU counting path (built on first use; CPU labels only)."""
        if self._cpu_tables is None:
            self._cpu_tables = _cpu_counting.CpuTables(
                self.q_ids_np, self.g_ids_np, self.num_ids, self.q_cams_np, self.g_cams_np)
        return self._cpu_tables


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
            what = ("after the SYSU camera rule (a cam-3 query ignores cam-2 gallery images)"
                    if protocol == "sysu" else "in the gallery")
            raise EvaluationError(
                f"no valid query: none of the {self.num_queries} queries has a true match "
                f"{what}; check that query_ids and gallery_ids share identities and that "
                f"query/gallery are not swapped")
        cmc = np.cumsum(self.hist) / self.num_valid
        ap_sum = math.fsum(np.concatenate(self.aps).tolist())
        inp_sum = math.fsum(np.concatenate(self.inps).tolist())
        return EvalResult(cmc=cmc.astype(np.float64), mAP=ap_sum / self.num_valid,
                          mINP=inp_sum / self.num_valid, num_valid_queries=self.num_valid)


def _check_nan(dist: torch.Tensor, rows: slice) -> None:
    if not dist.dtype.is_floating_point:
        return
    # One cheap reduction first: the sum is finite unless there is a NaN or an inf; only then
    # look for the NaN itself (infinite distances are allowed and rank last/first).
    if bool(torch.isfinite(dist.sum())):
        return
    nan_rows = torch.isnan(dist).any(dim=1)
    if bool(nan_rows.any()):
        bad = int(nan_rows.nonzero()[0, 0]) + (rows.start or 0)
        raise EvaluationError(f"distmat: contains NaN distances (first in query row {bad}); "
                              f"NaN cannot be ranked — check the features for NaN/inf")


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


def _distinct_before(masked: torch.Tensor, keep: torch.Tensor, g_ids: torch.Tensor,
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
        tied = (c < j[r]) & keep[r, c]  # an +inf tie may be a dropped entry
        earlier[r[tied], g_ids[c[tied]]] = True
    return _row_count(earlier)


# Average true matches per query up to which a counting path (O(matches × G) compares) is
# used instead of a full stable sort. SYSU single-shot has at most 4 matches per query, RegDB
# 10, large galleries more. On the CPU the numpy counting path (_cpu_counting) costs about one
# cheap pass over the row per match, against ≈ 40-90 ns per element for torch's stable argsort
# (G = 300 .. 100,000, 1 thread), so it pays up to far more matches than the torch counting path
# (CUDA tensors, and CPU dtypes that float32 cannot hold exactly), which makes 3+ passes of
# slower torch compares per match and is capped by _TORCH_COUNT_PATH_MAX_AVG_MATCHES.
_COUNT_PATH_MAX_AVG_MATCHES = 64.0
_TORCH_COUNT_PATH_MAX_AVG_MATCHES = 6.0
# Whether CPU chunks of a float32-exact dtype use the numpy counting path (tests switch it off
# to exercise the torch counting path that CUDA tensors use).
_CPU_COUNTING = True
# Distance dtypes that convert to float32 exactly: the numpy path packs float32 keys.
_FLOAT32_EXACT = (torch.float32, torch.float16, torch.bfloat16, torch.uint8, torch.int8,
                  torch.int16)


def _rank_chunk(dist: torch.Tensor, rows: slice, prep: _Prepared, acc: _Accumulator) -> None:
    """Rank one chunk of distance rows (C, G) for queries ``rows`` and add to ``acc``.

    Two exact ways to get the filtered rank position of every true match, chosen by cost:
    counting smaller ``(distance, index)`` keys when matches are few, else a stable argsort.
    """
    C, G = dist.shape
    device = dist.device
    acc.num_queries += C
    if C == 0 or G == 0:
        return
    sysu = prep.protocol == "sysu"
    if _CPU_COUNTING and device.type == "cpu" and dist.dtype in _FLOAT32_EXACT:
        tables = prep.cpu_tables()
        if int(tables.q_count[rows].sum()) <= _COUNT_PATH_MAX_AVG_MATCHES * C:
            arr = dist.detach().to(torch.float32).numpy()
            # The NaN screen's cheap sum in numpy too (single-threaded, like the rest of it).
            with np.errstate(invalid="ignore", over="ignore"):  # inf + -inf is fine here
                finite = bool(np.isfinite(arr.sum()))
            if not finite:
                _check_nan(dist, rows)
            for ap, inp, rank in _cpu_counting.rank_chunk(arr, rows, tables, dedup=sysu):
                acc.add(ap, inp, rank)
            return
    _check_nan(dist, rows)
    q_ids = prep.q_ids[rows]
    keep = None
    match = prep.g_ids[None, :] == q_ids[:, None]  # (C, G), gallery order
    if sysu:
        keep = prep.g_cams[None, :] != prep.q_cams[rows][:, None]
        match &= keep
    m_rows, m_cols = match.nonzero(as_tuple=True)  # row-major: per row, by gallery index
    del match
    counts = torch.bincount(m_rows, minlength=C)
    valid = counts > 0
    n_valid = int(valid.sum())
    if n_valid == 0:
        return
    starts = torch.cumsum(counts, 0) - counts

    if m_rows.numel() <= min(_COUNT_PATH_MAX_AVG_MATCHES, _TORCH_COUNT_PATH_MAX_AVG_MATCHES) * C:
        masked = dist if keep is None else torch.where(keep, dist, float("inf"))
        pos = _positions_by_counting(masked, keep, m_rows, m_cols)
        # Order each row's matches by rank (positions within a row are distinct).
        perm = torch.argsort(m_rows * (G + 1) + pos)
        m_cols, pos = m_cols[perm], pos[perm]
        first = starts[valid]
        if sysu:
            j = m_cols[first]
            if n_valid == C:  # the usual case: no row copies needed
                rows_m, rows_k, v = masked, keep, masked.gather(1, j[:, None])[:, 0]
            else:
                vrows = valid.nonzero()[:, 0]
                rows_m, rows_k, v = masked[vrows], keep[vrows], masked[vrows, j]
            rank = _distinct_before(rows_m, rows_k, prep.g_ids, prep.num_ids, v, j) + 1
        else:
            rank = pos[first]
    else:
        order = torch.argsort(dist, dim=1, stable=True)  # (C, G) ranked gallery indices
        ranked_ids = prep.g_ids[order]
        match = ranked_ids == q_ids[:, None]
        if sysu:
            keep = prep.g_cams[order] != prep.q_cams[rows][:, None]
            match &= keep
        del order
        m_rows, m_cols = match.nonzero(as_tuple=True)  # row-major: per row, by rank
        del match
        # 1-based position of each kept entry in the filtered list.
        pos = (torch.cumsum(keep, dim=1, dtype=torch.int32)[m_rows, m_cols].long()
               if sysu else m_cols + 1)
        first = starts[valid]
        if sysu:
            # Deduplicated CMC: where does each gallery id first appear among kept entries?
            col = torch.arange(G, device=device, dtype=torch.int64)
            src = torch.where(keep, col[None, :], torch.full_like(col, G)[None, :])
            first_seen = torch.full((C, prep.num_ids), G, dtype=torch.int64, device=device)
            first_seen.scatter_reduce_(1, ranked_ids, src, reduce="amin", include_self=True)
            del src, keep, ranked_ids
            # The true id first appears at its first kept match; count ids seen earlier.
            rank = (first_seen[valid] < m_cols[first][:, None]).sum(dim=1) + 1
        else:
            rank = pos[first]

    m_pos = pos.to(torch.float64)
    ordinal = torch.arange(m_rows.numel(), device=device) - starts[m_rows] + 1
    # AP = mean over the true matches of precision at their rank (k-th match at position p: k/p).
    ap = torch.zeros(C, dtype=torch.float64, device=device)
    ap.index_add_(0, m_rows, ordinal.to(torch.float64) / m_pos)
    cnt = counts[valid].to(torch.float64)
    ap = ap[valid] / cnt
    last = first + counts[valid] - 1
    # mINP: number of true matches / position of the hardest (last) one.
    inp = cnt / m_pos[last]

    in_range = rank <= prep.max_rank
    hist = torch.bincount(rank[in_range] - 1, minlength=prep.max_rank)
    acc.hist += hist.cpu().numpy()
    acc.aps.append(ap.cpu().numpy())
    acc.inps.append(inp.cpu().numpy())
    acc.num_valid += n_valid


def _chunk_tensor(distmat: np.ndarray | torch.Tensor, rows: slice) -> torch.Tensor:
    if isinstance(distmat, torch.Tensor):
        return distmat[rows]
    # Copies only this chunk when the full array is not C-contiguous (or is a memmap).
    return torch.from_numpy(np.ascontiguousarray(distmat[rows]))


def _prepare(num_q: int, num_g: int, query_ids: object, gallery_ids: object,
             query_cams: object, gallery_cams: object, protocol: str, max_rank: int,
             chunk_size: int | None, device: torch.device) -> _Prepared:
    _check_protocol(protocol)
    _check_options(max_rank, chunk_size)
    q_ids = _labels(query_ids, "query_ids", num_q, device)
    g_ids = _labels(gallery_ids, "gallery_ids", num_g, device)
    q_cams = g_cams = None
    if protocol == "sysu":
        if query_cams is None or gallery_cams is None:
            raise EvaluationError("protocol 'sysu' needs query_cams and gallery_cams "
                                  "(the camera-3/camera-2 rule), got None")
        q_cams = _labels(query_cams, "query_cams", num_q, device)
        g_cams = _labels(gallery_cams, "gallery_cams", num_g, device)
    else:
        # RegDB ignores cameras; still catch lists that do not belong to this matrix.
        if query_cams is not None:
            _labels(query_cams, "query_cams", num_q, device)
        if gallery_cams is not None:
            _labels(gallery_cams, "gallery_cams", num_g, device)
    return _Prepared(q_ids, g_ids, q_cams, g_cams, protocol, max_rank)


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
        query_cams, gallery_cams: integer camera numbers (SYSU: 1–6); may be ``None`` for
            RegDB, which applies no camera filter.
        protocol: ``"sysu"`` (camera rule + identity-deduplicated CMC) or ``"regdb"``
            (image-level CMC, no filter). See the module docstring / protocols.md.
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
            _rank_chunk(_chunk_tensor(distmat, rows), rows, prep, acc)
    return acc.result(protocol)


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
    _check_metric(metric)
    q = _as_float_tensor(query_feats, "query_feats")
    g = _as_float_tensor(gallery_feats, "gallery_feats").to(q.device)
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
    # The fp32 distance block is one more (C, G) buffer on top of the ranking temporaries.
    step = chunk_size or default_chunk_size(num_g, DEFAULT_CHUNK_BYTES * 48 // 52)
    logger.debug("evaluate_features: %d x %d (D=%d, %s), %d queries per chunk on %s",
                 num_q, num_g, q.shape[1], metric, step, q.device)
    acc = _Accumulator(max_rank)
    with torch.no_grad():
        for start in range(0, num_q, step):
            rows = slice(start, min(start + step, num_q))
            _rank_chunk(_distance(q[rows], g, metric), rows, prep, acc)
    return acc.result(protocol)
