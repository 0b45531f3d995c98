"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), memory-bounded and with stable ties.

Convention — the community's (zhunzhong07/person-re-ranking ``re_ranking_ranklist.py``, copied
into torchreid ``torchreid/utils/rerank.py``), so re-ranked numbers are comparable with published
ones (docs/protocols.md, "Re-ranking"):

- the q–q, q–g, g–g inputs form the ``(Q+G) × (Q+G)`` matrix ``D``; it is **squared**, cast to
  float32, and row ``i`` of the working matrix is ``D[:, i]² / max(D[:, i]²)`` (the reference
  normalises columns and transposes; for symmetric inputs that is "divide each row by its max";
  for non-symmetric inputs this follows the reference exactly);
- ``R(i)`` = k1-reciprocal neighbours (``j`` in the top-``k1+1`` of ``i`` and vice versa);
  each candidate ``c ∈ R(i)`` adds its ``round(k1/2)``-reciprocal set (``round`` = numpy's
  half-to-even) when more than 2/3 of that set lies in ``R(i)``;
- ``V[i]`` = Gaussian weights ``exp(-d)`` on the expanded set, normalised to sum 1; local query
  expansion replaces ``V[i]`` by the mean of ``V`` over the top-``k2`` neighbours of ``i``
  (skipped when ``k2 == 1``, as in the reference, even if an item is not its own first neighbour);
- Jaccard distance ``1 - s / (2 - s)`` with ``s = Σ_k min(V[i,k], V[j,k])``; the result is
  ``jaccard·(1-λ) + d·λ`` on the query rows and gallery columns.

So the inputs must be **non-negative** distances; a negative entry raises
:class:`~df2am.errors.EvaluationError` instead of being squared. In particular the evaluator's
``"cosine"`` distance ``-q·gᵀ`` must not be passed here: use :func:`rerank_features`, which
builds torchreid's distances itself (``1 - cos``, or squared Euclidean).

Differences from the reference, both deliberate: neighbour lists use a **stable** tie rule
(equal distances: smaller index first; the reference's default argsort may order exact ties
differently), and the weight and Jaccard sums are accumulated in float64 (results agree
with the reference to ~1e-7).

Memory: the reference holds several dense ``(Q+G)²`` float32 matrices and a full argsort. Here,
besides the inputs and the ``Q × G`` output, the peak is ``O(N·K + nnz(V) + chunk·N)`` with
``N = Q+G``, ``K = max(k1+1, k2)``: top-K neighbour lists found block by block with
``argpartition``, ``V`` stored sparse (``nnz(V) ≤ N·k2·s``, ``s`` the largest expanded set, in
practice tens to a few hundred per row), and the Jaccard term computed for groups of query
rows against the gallery through an inverted index, the group size capped by a pair budget.

Usage::

    from df2am.evaluation import evaluate, rerank, rerank_features

    dist = rerank_features(q_feats, g_feats, metric="cosine")      # (Q, G) float32
    res = evaluate(dist, q_ids, g_ids, q_cams, g_cams, protocol="sysu")

    # from your own non-negative distances (e.g. Euclidean): q–g, q–q and g–g matrices
    dist = rerank(d_qg, d_qq, d_gg, k1=20, k2=6, lambda_value=0.3)
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Literal, NamedTuple

import numpy as np
import torch

from df2am.errors import EvaluationError
from df2am.evaluation.distance import as_float_tensor, check_metric

__all__ = ["rerank", "rerank_features"]

# Working-memory budget of one block of rows (and of one Jaccard group's pairs).
_BLOCK_BYTES = 64 << 20
_BYTES_PER_BLOCK_ENTRY = 24   # float64 square + float32 block + partition copy + bool masks
_BYTES_PER_PAIR = 48          # owner, position, value, key and weight of one Jaccard pair


class _Csr(NamedTuple):
    """Rows of a sparse matrix: row ``r`` is ``indices/data[indptr[r]:indptr[r+1]]``."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray


# ---------------------------------------------------------------------------- validation


def _as_distance(x, name: str) -> np.ndarray:
    """A 2-D, finite, non-negative float numpy array (torch tensors are copied to the CPU)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = (x if x.dtype == torch.float64 else x.float()).numpy()
    x = np.asarray(x)
    if x.ndim != 2:
        raise EvaluationError(f"{name}: expected a 2-D distance matrix, got shape {x.shape}")
    if x.dtype.kind not in "fiu":
        raise EvaluationError(f"{name}: expected numeric distances, got dtype {x.dtype}")
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    if x.size == 0:
        return x
    lo, hi = x.min(), x.max()      # NaN propagates into both; no boolean copy of x
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise EvaluationError(f"{name}: contains NaN or infinite distances")
    if lo < 0:
        pos = tuple(int(p) for p in np.unravel_index(np.argmin(x), x.shape))
        raise EvaluationError(
            f"{name}: re-ranking squares the distances, so they must be non-negative, but entry "
            f"{pos} is {float(lo):.4g}; the evaluator's 'cosine' distance -q·gᵀ is negative — "
            f"pass 1 - cos or a Euclidean distance, or use rerank_features")
    return x


def _check_int(value, name: str, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise EvaluationError(f"{name}: expected an integer, got {value!r}")
    if not low <= value <= high:
        raise EvaluationError(f"{name}: expected {what}, got {value}")
    return int(value)


def _check_params(k1, k2, lambda_value, chunk_size, n: int) -> tuple[int, int, float, int]:
    k1 = _check_int(k1, "k1", 1, n - 1, f"1 <= k1 < Q + G = {n} (k1 + 1 neighbours per item)")
    k2 = _check_int(k2, "k2", 1, n, f"1 <= k2 <= Q + G = {n}")
    if (isinstance(lambda_value, bool) or not isinstance(lambda_value, Real)
            or not 0.0 <= lambda_value <= 1.0):
        raise EvaluationError(f"lambda_value: expected a number in [0, 1], got {lambda_value!r}")
    if chunk_size is None:
        chunk = max(1, _BLOCK_BYTES // (_BYTES_PER_BLOCK_ENTRY * n))
    else:
        chunk = _check_int(chunk_size, "chunk_size", 1, 2**62, "None or an integer >= 1")
    return k1, k2, float(lambda_value), chunk


# ------------------------------------------------------------------- the working matrix


class _Distances:
    """Rows of the squared, normalised ``(Q+G)²`` matrix, built block by block on demand."""

    def __init__(self, q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray):
        self.q_g, self.q_q, self.g_g = q_g, q_q, g_g
        self.Q, self.G = q_g.shape
        self.N = self.Q + self.G
        # Column maxima of D (squaring and rounding are monotone: max of squares = square of max).
        col_max = np.concatenate([np.maximum(q_q.max(axis=0), q_g.max(axis=1)),
                                  np.maximum(q_g.max(axis=0), g_g.max(axis=0))])
        self.scale = np.square(col_max).astype(np.float32)
        if not (self.scale > 0).all():
            i = int(np.argmin(self.scale))
            who = f"query {i}" if i < self.Q else f"gallery item {i - self.Q}"
            raise EvaluationError(f"q_q/q_g/g_g: every distance of {who} squares to 0, so its "
                                  f"row cannot be normalised; distinct items need positive "
                                  f"distances")

    def block(self, a: int, b: int) -> np.ndarray:
        """Rows ``a:b`` (all queries or all gallery) as float32 ``(b-a, N)``."""
        Q = self.Q
        if b <= Q:
            parts = (self.q_q[:, a:b].T, self.q_g[a:b])
        else:
            parts = (self.q_g[:, a - Q:b - Q].T, self.g_g[:, a - Q:b - Q].T)
        out = np.concatenate([np.square(p).astype(np.float32) for p in parts], axis=1)
        out /= self.scale[a:b, None]
        return out

    def ranges(self, step: int) -> list[tuple[int, int]]:
        """Row blocks of at most ``step`` rows that never straddle the query/gallery border."""
        return ([(a, min(a + step, self.Q)) for a in range(0, self.Q, step)]
                + [(a, min(a + step, self.N)) for a in range(self.Q, self.N, step)])


def _stable_topk(block: np.ndarray, k: int) -> np.ndarray:
    """Per row, the indices of the ``k`` smallest entries ordered by (value, index)."""
    if k >= block.shape[1]:
        return np.argsort(block, axis=1, kind="stable")[:, :k]
    kth = np.partition(block, k - 1, axis=1)[:, k - 1]
    inside = block <= kth[:, None]
    plain = inside.sum(axis=1) == k      # no tie straddles the k-th place
    out = np.empty((len(block), k), dtype=np.int64)
    cols = np.nonzero(inside[plain])[1].reshape(-1, k)     # ascending index within a row
    order = np.argsort(np.take_along_axis(block[plain], cols, axis=1), axis=1, kind="stable")
    out[plain] = np.take_along_axis(cols, order, axis=1)
    for r in np.flatnonzero(~plain):
        cand = np.flatnonzero(inside[r])
        out[r] = cand[np.argsort(block[r, cand], kind="stable")[:k]]
    return out


# ------------------------------------------------------------------ k-reciprocal encoding


def _reciprocal(lists: np.ndarray, a: int, b: int) -> np.ndarray:
    """``mask[r, t]``: item ``a+r`` is in the list of its ``t``-th neighbour ``lists[a+r, t]``."""
    ids = np.arange(a, b)[:, None, None]
    return (lists[lists[a:b]] == ids).any(axis=2)


def _encode_block(block: np.ndarray, a: int, top: np.ndarray, half_top: np.ndarray,
                  half_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expanded k-reciprocal sets of rows ``a:a+len(block)`` and their Gaussian weights."""
    c, n = block.shape
    rec = _reciprocal(top, a, a + c)
    r_idx, t_idx = np.nonzero(rec)
    in_r = np.zeros((c, n), dtype=bool)
    in_r[r_idx, top[a + r_idx, t_idx]] = True
    # A candidate's half-k1 set is added when more than 2/3 of it already lies in R(i).
    cand = top[a + r_idx, t_idx]
    c_set, c_mask = half_top[cand], half_mask[cand]
    inter = (in_r[r_idx[:, None], c_set] & c_mask).sum(axis=1)
    ok = inter > (2.0 / 3.0) * c_mask.sum(axis=1)
    expanded = in_r.copy()
    rows = np.broadcast_to(r_idx[ok, None], c_set[ok].shape)[c_mask[ok]]
    expanded[rows, c_set[ok][c_mask[ok]]] = True
    rows, cols = np.nonzero(expanded)
    w = np.exp(-block[rows, cols])
    total = np.bincount(rows, weights=w, minlength=c).astype(np.float32)
    return rows, cols, w / total[rows]


def _to_csr(n_rows: int, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> _Csr:
    """CSR from entries already sorted by row."""
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return _Csr(indptr, cols.astype(np.int64), vals.astype(np.float32))


def _gather(m: _Csr, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entries of ``m[rows]``: (position in ``rows``, column, value), rows in the given order."""
    starts = m.indptr[rows]
    counts = m.indptr[rows + 1] - starts
    owner = np.repeat(np.arange(len(rows)), counts)
    first = np.cumsum(counts) - counts
    pos = np.repeat(starts - first, counts) + np.arange(int(counts.sum()))
    return owner, m.indices[pos], m.data[pos]


def _encode(dist: _Distances, top: np.ndarray, k1: int, step: int) -> _Csr:
    """Sparse ``V`` (one row per item) of the k-reciprocal encoding."""
    half = int(np.around(k1 / 2.0)) + 1     # numpy's half-to-even, as in the reference
    half_top = top[:, :half]
    half_mask = np.concatenate([_reciprocal(half_top, a, b) for a, b in dist.ranges(step)])
    parts = [_encode_block(dist.block(a, b), a, top, half_top, half_mask)
             for a, b in dist.ranges(step)]
    offsets = [a for a, _ in dist.ranges(step)]
    rows = np.concatenate([r + o for (r, _, _), o in zip(parts, offsets, strict=True)])
    return _to_csr(dist.N, rows, np.concatenate([p[1] for p in parts]),
                   np.concatenate([p[2] for p in parts]))


def _expand_queries(v: _Csr, neighbours: np.ndarray, step: int) -> _Csr:
    """Local query expansion: row ``i`` becomes the mean of ``v`` over ``neighbours[i]``."""
    n, k2 = neighbours.shape
    rows, cols, vals = [], [], []
    for a in range(0, n, step):
        nb = neighbours[a:a + step]
        owner, c, x = _gather(v, nb.ravel())
        key = (owner // k2) * n + c
        order = np.argsort(key, kind="stable")
        key, x = key[order], x[order]
        first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        rows.append(key[first] // n + a)
        cols.append(key[first] % n)
        vals.append(np.add.reduceat(x, first) / np.float32(k2))
    return _to_csr(n, np.concatenate(rows), np.concatenate(cols), np.concatenate(vals))


# ------------------------------------------------------------------------------ Jaccard


def _groups(costs: np.ndarray, max_rows: int, max_cost: float) -> list[tuple[int, int]]:
    """Consecutive row groups of at most ``max_rows`` rows and ``max_cost`` total cost."""
    out, start, acc = [], 0, 0.0
    for i, cost in enumerate(costs.tolist()):
        if i > start and (i - start >= max_rows or acc + cost > max_cost):
            out.append((start, i))
            start, acc = i, 0.0
        acc += cost
    out.append((start, len(costs)))
    return out


def _jaccard_rows(v: _Csr, by_col: _Csr, a: int, b: int, G: int) -> np.ndarray:
    """Jaccard distances of query rows ``a:b`` to every gallery item, float32 ``(b-a, G)``."""
    owner, cols, vals = _gather(v, np.arange(a, b))
    pair, gal, gal_vals = _gather(by_col, cols)   # gallery items sharing column ``cols[pair]``
    mins = np.minimum(vals[pair], gal_vals)
    s = np.bincount(owner[pair] * G + gal, weights=mins, minlength=(b - a) * G)
    s = s.reshape(b - a, G).astype(np.float32)
    return 1 - s / (2.0 - s)


def _jaccard_terms(v: _Csr, Q: int, step: int):
    """Yield ``(a, b, jaccard rows a:b)`` for groups of query rows."""
    n = len(v.indptr) - 1
    G = n - Q
    # Inverted index of the gallery rows: for each column, the gallery items using it.
    g_start = v.indptr[Q]
    g_rows = np.repeat(np.arange(G), np.diff(v.indptr[Q:]))
    g_cols, g_vals = v.indices[g_start:], v.data[g_start:]
    order = np.argsort(g_cols, kind="stable")
    by_col = _to_csr(n, g_cols[order], g_rows[order], g_vals[order])
    # A query row costs one pair per (shared column, gallery item) entry.
    q_end = v.indptr[Q]
    q_owner = np.repeat(np.arange(Q), np.diff(v.indptr[:Q + 1]))
    col_count = np.diff(by_col.indptr)
    costs = np.bincount(q_owner, weights=col_count[v.indices[:q_end]], minlength=Q)
    for a, b in _groups(costs, step, _BLOCK_BYTES / _BYTES_PER_PAIR):
        yield a, b, _jaccard_rows(v, by_col, a, b, G)


# ---------------------------------------------------------------------------------- API


def rerank(q_g, q_q, g_g, *, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
           chunk_size: int | None = None) -> np.ndarray:
    """k-reciprocal re-ranked query × gallery distances (smaller = more similar).

    Follows the community implementation (module docstring): the inputs are squared and each
    row of the combined matrix is divided by its maximum, so with Euclidean input distances the
    algorithm works on squared Euclidean distances, and with torchreid's squared-Euclidean
    inputs on ``‖a-b‖⁴``. Ties in the neighbour lists: smaller index first.

    Args:
        q_g: ``(Q, G)`` non-negative query–gallery distances (numpy or torch).
        q_q: ``(Q, Q)`` query–query distances.
        g_g: ``(G, G)`` gallery–gallery distances.
        k1: size of the k-reciprocal neighbourhoods; needs ``Q + G > k1``.
        k2: size of the local query expansion (1 = none); at most ``Q + G``.
        lambda_value: weight of the (normalised, squared) original distance, in [0, 1].
        chunk_size: rows per block (default: from a 64 MiB budget); smaller = less memory.

    Returns:
        float32 ``(Q, G)`` numpy array.

    Memory: ``O(N·K + nnz(V) + chunk·N)`` beyond the inputs and the output, ``N = Q+G``,
    ``K = max(k1+1, k2)`` — never an ``N × N`` array (see the module docstring).

    Raises:
        EvaluationError: shapes that do not fit together, NaN/inf or negative distances, an
            item whose distances are all 0, or ``k1``/``k2``/``lambda_value``/``chunk_size``
            out of range.
    """
    q_g = _as_distance(q_g, "q_g")
    q_q, g_g = _as_distance(q_q, "q_q"), _as_distance(g_g, "g_g")
    Q, G = q_g.shape
    if Q == 0 or G == 0:
        raise EvaluationError(f"q_g: expected at least one query and one gallery item, got "
                              f"shape {q_g.shape}")
    if q_q.shape != (Q, Q):
        raise EvaluationError(f"q_q: expected shape ({Q}, {Q}) to match q_g {q_g.shape}, got "
                              f"{q_q.shape}")
    if g_g.shape != (G, G):
        raise EvaluationError(f"g_g: expected shape ({G}, {G}) to match q_g {q_g.shape}, got "
                              f"{g_g.shape}")
    k1, k2, lam, step = _check_params(k1, k2, lambda_value, chunk_size, Q + G)
    dist = _Distances(q_g, q_q, g_g)
    K = max(k1 + 1, k2)
    top = np.concatenate([_stable_topk(dist.block(a, b), K) for a, b in dist.ranges(step)])
    v = _encode(dist, top[:, :k1 + 1], k1, step)
    if k2 > 1:
        v = _expand_queries(v, top[:, :k2], step)
    out = np.empty((Q, G), dtype=np.float32)
    for a, b, jac in _jaccard_terms(v, Q, step):
        original = np.square(q_g[a:b]).astype(np.float32) / dist.scale[a:b, None]
        out[a:b] = jac * (1 - lam) + original * lam
    return out


def rerank_features(query_feats, gallery_feats, *,
                    metric: Literal["cosine", "euclidean"] = "cosine", k1: int = 20, k2: int = 6,
                    lambda_value: float = 0.3, chunk_size: int | None = None) -> np.ndarray:
    """:func:`rerank` of features, with the distances torchreid's engine passes to re-ranking.

    - ``"cosine"``: ``1 - cos(a, b)`` (features are L2-normalised here, so any scale works);
      the algorithm then works on ``(1 - cos)²``.
    - ``"euclidean"``: squared Euclidean ``‖a - b‖²``; the algorithm works on ``‖a - b‖⁴``.

    For L2-normalised features the two agree up to rounding (``‖a - b‖² = 2(1 - cos)`` and
    the factor 2 cancels in the row normalisation). Self-distances are set to exactly 0.
    Distances are computed in float32 on the features' device; the three matrices
    (``(Q+G)²`` floats) are then re-ranked on the CPU.

    Raises:
        EvaluationError: unknown metric, non-2-D inputs, different feature dimensions, a
            zero feature with ``"cosine"``, or the errors of :func:`rerank`.
    """
    check_metric(metric)
    q = as_float_tensor(query_feats, "query_feats").detach()
    g = as_float_tensor(gallery_feats, "gallery_feats").detach().to(q.device)
    if q.shape[1] != g.shape[1]:
        raise EvaluationError(f"rerank_features: feature dimensions differ: query_feats has "
                              f"{q.shape[1]}, gallery_feats has {g.shape[1]}")
    if metric == "cosine":
        for name, t in (("query_feats", q), ("gallery_feats", g)):
            if t.shape[0] and float(t.norm(dim=1).min()) == 0.0:
                raise EvaluationError(f"{name}: metric='cosine' is undefined for a zero "
                                      f"feature vector")
        q, g = torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(g, dim=1)

    def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if metric == "cosine":
            d = 1.0 - a @ b.T
        else:
            d = a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1)[None, :] - 2.0 * (a @ b.T)
        return d.clamp_(min=0.0)     # rounding can make near-duplicates slightly negative

    q_q, g_g = distance(q, q), distance(g, g)
    q_q.fill_diagonal_(0.0)
    g_g.fill_diagonal_(0.0)
    return rerank(distance(q, g), q_q, g_g, k1=k1, k2=k2, lambda_value=lambda_value,
                  chunk_size=chunk_size)
