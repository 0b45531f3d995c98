"""Exact ranking of CPU distance chunks with numpy, without sorting whole rows.

Used by :mod:`df2am.evaluation.metrics` for CPU chunks of every dtype numpy compares natively
(float32/64, integers; float16, bfloat16 and 8/16-bit integers arrive as float32, which holds
them exactly). It implements the ``docs/protocols.md`` "Metrics" definitions like the rest of
the package: stable ranking, the gallery filters (none for RegDB, the SYSU camera rooms,
LLCM's same identity *and* camera), identity-deduplicated CMC for SYSU and LLCM, AP and mINP
over the filtered list.

How (and why it is exact):

- **Stable rank without a sort.** The filtered stable position of kept entry ``j`` in a query
  row is one plus the number of kept entries ``e`` with ``(d_e, e) < (d_j, j)``
  lexicographically. Distances are compared in their own dtype: IEEE ``<`` / ``==`` order
  ±0.0 (equal) and ±inf as the floats do, NaN was rejected before, and nothing is rounded.
- **Groups.** Rows are grouped by (filter room, true matches ``m``, dropped entries ``d``).
  The SYSU rule depends only on the query's room, so a group shares one set of kept columns
  (a dense block). The LLCM rule drops only entries of the query's own identity, so its blocks
  keep every column and the ``d`` dropped entries ranked before a match are subtracted from
  its count. Matches and dropped entries come from per-(room, identity) or per-(identity,
  camera) tables of gallery positions: no ``(Q, G)`` mask, no ``nonzero``.
- **Counting kernel** (narrow rows, few matches): per match a ``<`` pass counts the strictly
  closer kept entries and an ``==`` pass finds the rows where the match's distance is tied;
  only those get the tied entries of smaller column added, on that sparse list. Blocks of rows
  are small enough to stay in cache, in buffers reused across blocks and chunks (in a fresh
  process the page faults of large temporaries cost more than the compares).
- **Threshold kernel** (wide rows, many matches; one row at a time): only entries no farther
  than the row's last match can rank before a match. One compare pass lists them (the
  candidates); sorting their distances alone gives each match's count of strictly closer
  entries by binary search, ties again resolved by column on the rare tied matches.
- **AP** is precision ``k / p`` summed match by match in rank order, then divided by ``m``, as
  the torch paths do, so all paths agree to the last bit. **Deduplicated rank**: one plus the
  number of identities (other than the query's) with a kept entry ranked before the first
  match. Per room, each identity's columns are laid out in a padded ``(ids, P')`` table
  (``P'`` a power of two ≤ 8 or a multiple of 8, padding repeats one of the identity's own
  columns, which cannot change an "any"), so the per-identity "any" of the "ranked before" mask
  is one ``take`` and a reinterpretation of each identity's ``P'`` bools as one unsigned
  integer. Galleries where that table would be much wider than the row (a few identities with
  very many images) use a segmented ``logical_or.reduceat`` instead.
"""

from __future__ import annotations

import math

import numpy as np

# Use the padded per-identity table for the deduplicated rank while it is at most this many
# times wider than the kept row; beyond that (very unbalanced identities) use reduceat.
_DEDUP_TABLE_MAX_RATIO = 4

# Rows at least this wide are counted one by one with count_nonzero (a SIMD popcount over the
# whole row, ≈ 6× faster than a row-wise sum at 100,000 columns); narrower blocks use one
# row-wise uint16 sum (≤ 65,535 columns, so it cannot overflow) to avoid per-row calls.
_ROW_COUNT_LOOP_MIN_WIDTH = 4096

# Working set of one block of rows in the counting kernel (values + two masks): fits in L2.
_BLOCK_BYTES = 1 << 20

# Kernel choice per group of rows, from costs measured on SYSU, RegDB and 100,000-wide rows
# (docs/benchmarks.md): counting makes two passes (``<`` and ``==``) per match, plus about two
# passes' worth of gathering and dedup, at about this many ns per byte of a row's values; the
# threshold kernel costs about this many ns per element of the row (its compare, listing and
# the sort of the candidates, typically a third to a half of the row) plus this much per row
# (numpy calls from Python). Tests set the per-row cost to ±inf to force one kernel.
_PASS_NS_PER_BYTE = 0.125
_THRESHOLD_NS_PER_ELEMENT = 3.5
_THRESHOLD_NS_PER_ROW = 20_000.0

FILTERS = ("none", "room", "id_cam")


def _padded_width(p: int) -> int:
    """Bools per identity in the dedup table: 1, 2, 4, 8 (one uint8..uint64) or 8·k."""
    if p <= 1:
        return 1
    if p <= 8:
        return 1 << (p - 1).bit_length()
    return -(-p // 8) * 8


class _Room:
    """The gallery columns kept for queries of one filter room, with per-identity lookups.

    ``kept`` is None when every column is kept (RegDB, LLCM, SYSU cam-6 queries). ``match_pos``
    and ``drop_pos`` hold, per selector (an identity; for LLCM an (identity, camera) pair), the
    kept-row positions of its true matches and of the entries the rule drops, ascending.
    """

    def __init__(self, kept: np.ndarray | None, kept_ids: np.ndarray, num_ids: int) -> None:
        self.kept = kept
        self.keep_mask: np.ndarray | None = None  # over all gallery columns (threshold kernel)
        self.width = int(kept_ids.size)
        self.counts = np.bincount(kept_ids, minlength=num_ids)  # kept columns per identity
        # Positions (within the kept row) grouped by identity, ascending inside each identity.
        order = np.argsort(kept_ids, kind="stable")
        starts = np.cumsum(self.counts) - self.counts
        p = int(self.counts.max()) if num_ids and self.width else 0

        def table(width: int) -> np.ndarray:
            # (U, width) positions; slots past an identity's count repeat its first position
            # (identities without kept columns get position 0; they are never read).
            slot = np.minimum(np.arange(width)[None, :],
                              np.maximum(self.counts - 1, 0)[:, None])
            return order[np.minimum(starts[:, None] + slot, max(self.width - 1, 0))]

        # A row with m matches reads the first m entries of its identity's row: all real.
        self.own_pos = table(p) if self.width else np.zeros((num_ids, 0), dtype=np.int64)
        self.match_pos = self.own_pos
        self.drop_pos = np.zeros((num_ids, 0), dtype=np.int64)
        present = self.counts > 0
        self.dedup_width = _padded_width(p)
        n_present = int(present.sum())
        self.dedup_cols: np.ndarray | None = None
        if self.width and n_present * self.dedup_width <= _DEDUP_TABLE_MAX_RATIO * self.width:
            self.dedup_cols = np.ascontiguousarray(table(self.dedup_width)[present]).ravel()
        self.dedup_perm = order
        self.dedup_starts = starts[present]

    def gallery_cols(self, pos: np.ndarray) -> np.ndarray:
        """Gallery columns of kept-row positions."""
        return pos if self.kept is None else self.kept[pos]


def _first_slots(table: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per row, the entries of ``table`` where ``mask`` holds, moved to the front in order."""
    order = np.argsort(~mask, axis=1, kind="stable")
    return np.take_along_axis(table, order, axis=1)


class CpuTables:
    """Per-evaluation lookups for :func:`rank_chunk`, built once from the compact labels.

    Args:
        q_ids: (Q,) compact query identities, -1 where the identity is not in the gallery.
        g_ids: (G,) compact gallery identities in ``0..num_ids-1``.
        rule: gallery filter: ``"none"`` (RegDB), ``"room"`` (SYSU: drop the gallery entries
            whose camera equals the query's; pass cameras mapped 3 → 2), ``"id_cam"`` (LLCM:
            drop the entries with the query's identity and camera).
        q_cams, g_cams: cameras for ``"room"`` / ``"id_cam"``.
    """

    def __init__(self, q_ids: np.ndarray, g_ids: np.ndarray, num_ids: int, rule: str,
                 q_cams: np.ndarray | None = None, g_cams: np.ndarray | None = None) -> None:
        assert rule in FILTERS and (rule == "none" or (q_cams is not None and g_cams is not None))
        self.q_ids, self.g_ids = q_ids, g_ids
        present = q_ids >= 0
        own = np.where(present, q_ids, 0)
        self.q_sel = own  # row of each query in its room's match/drop tables
        self.q_drop = np.zeros(q_ids.shape, dtype=np.int64)
        if rule == "room":
            values, self.q_room = np.unique(q_cams, return_inverse=True)
            self.q_room = self.q_room.reshape(-1)
            self.rooms = []
            for value in values:
                keep = g_cams != value
                kept = np.flatnonzero(keep)
                room = _Room(None if kept.size == g_ids.size else kept, g_ids[kept], num_ids)
                room.keep_mask = None if room.kept is None else keep
                self.rooms.append(room)
            counts = np.stack([room.counts for room in self.rooms])  # (rooms, U)
            m = counts[self.q_room, own]
        else:
            self.q_room = np.zeros(q_ids.shape, dtype=np.int64)
            room = _Room(None, g_ids, num_ids)
            self.rooms = [room]
            m = room.counts[own]
            if rule == "id_cam":
                m = self._split_by_camera(room, own, q_cams, g_cams)
        #: true matches of each query after the rule (0: the query is skipped)
        self.q_count = np.where(present, m, 0)
        self.scratch = _Scratch()

    def _split_by_camera(self, room: _Room, own: np.ndarray, q_cams: np.ndarray,
                         g_cams: np.ndarray) -> np.ndarray:
        """LLCM: per (identity, camera) of the queries, the own-identity columns in another
        camera (true matches) and in the query's camera (dropped). Returns matches per query."""
        cam_values, cam_codes = np.unique(np.concatenate([q_cams, g_cams]), return_inverse=True)
        cam_codes = cam_codes.reshape(-1)
        q_code, g_code = cam_codes[:own.size], cam_codes[own.size:]
        pairs, self.q_sel = np.unique(own * cam_values.size + q_code, return_inverse=True)
        self.q_sel = self.q_sel.reshape(-1)
        pair_id, pair_cam = pairs // cam_values.size, pairs % cam_values.size
        cols = room.own_pos[pair_id]  # (P, p): every column of the pair's identity (kept = all)
        real = np.arange(cols.shape[1])[None, :] < room.counts[pair_id][:, None]
        same_cam = real & (g_code[cols] == pair_cam[:, None])
        match = real & ~same_cam
        room.match_pos = _first_slots(cols, match)
        room.drop_pos = _first_slots(cols, same_cam)[:, :int(same_cam.sum(axis=1).max(initial=0))]
        self.q_drop = same_cam.sum(axis=1)[self.q_sel]
        return match.sum(axis=1)[self.q_sel]


class _Scratch:
    """Work buffers reused across blocks, groups and chunks of one evaluation: first-touch page
    faults of fresh temporaries cost more than the compares that fill them."""

    def __init__(self) -> None:
        self._bufs: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        dtype = np.dtype(dtype)
        size = math.prod(shape) * dtype.itemsize
        buf = self._bufs.get(name)
        if buf is None or buf.size < size:
            buf = self._bufs[name] = np.empty(max(size, 64), dtype=np.uint8)
        return buf[:size].view(dtype).reshape(shape)


# --------------------------------------------------------------------------------------------
# counting kernel


def _block_values(dist: np.ndarray, rows: np.ndarray, room: _Room, scratch: _Scratch
                  ) -> np.ndarray:
    """The kept columns of ``dist[rows]``, gathered into a reused buffer."""
    values = scratch.get("values", (rows.size, room.width), dist.dtype)
    if room.kept is None:
        return np.take(dist, rows, axis=0, out=values, mode="clip")
    full = scratch.get("full", (rows.size, dist.shape[1]), dist.dtype)
    np.take(dist, rows, axis=0, out=full, mode="clip")
    return np.take(full, room.kept, axis=1, out=values, mode="clip")


def _count_rows(mask: np.ndarray) -> np.ndarray:
    """Number of True per row of a 2-D bool array."""
    if mask.shape[1] >= min(_ROW_COUNT_LOOP_MIN_WIDTH, 65536):
        return np.fromiter((np.count_nonzero(row) for row in mask), dtype=np.int64,
                           count=mask.shape[0])
    return np.add.reduce(mask.view(np.uint8), axis=1, dtype=np.uint16)


def _ranked_before(values: np.ndarray, v: np.ndarray, j: np.ndarray, scratch: _Scratch
                   ) -> np.ndarray:
    """Mask of the entries ``e`` with ``(values[r, e], e) < (v[r], j[r])``: ranked before
    ``(v, j)`` in the stable order."""
    below = scratch.get("below", values.shape, bool)
    np.less(values, v[:, None], out=below)
    # Every row equals v at its own column j; rows with more equal entries (rare with real
    # features) also rank the tied ones of smaller column first.
    eq = scratch.get("eq", values.shape, bool)
    np.equal(values, v[:, None], out=eq)
    if np.count_nonzero(eq) > values.shape[0]:
        tied = np.flatnonzero(_count_rows(eq) > 1)
        below[tied] |= eq[tied] & (np.arange(values.shape[1]) < j[tied, None])
    return below


def _lex_less(a: np.ndarray, a_col: np.ndarray, b: np.ndarray, b_col: np.ndarray) -> np.ndarray:
    """``(a, a_col) < (b, b_col)`` for small (n, k) × (n, l) arrays → (n, k, l)."""
    a, a_col = a[:, :, None], a_col[:, :, None]
    b, b_col = b[:, None, :], b_col[:, None, :]
    return (a < b) | ((a == b) & (a_col < b_col))


def _count_block(values: np.ndarray, room: _Room, mp: np.ndarray, dp: np.ndarray, dedup: bool,
                 scratch: _Scratch) -> tuple[np.ndarray, np.ndarray | None]:
    """Sorted 1-based positions (n, m) of each row's matches, and the dedup rank if asked."""
    n, m = mp.shape
    mk = np.take_along_axis(values, mp, axis=1)  # (n, m) match distances
    # Put each row's matches in rank order ((distance, column): mp is ascending and the sort
    # stable), so positions come out sorted and slot 0's "ranked before" mask is the dedup's.
    order = np.argsort(mk, axis=1, kind="stable")
    mk, mp = np.take_along_axis(mk, order, axis=1), np.take_along_axis(mp, order, axis=1)
    pos = np.empty((n, m), dtype=np.int64)
    rank = None
    for t in range(m):
        before = _ranked_before(values, mk[:, t], mp[:, t], scratch)
        pos[:, t] = _count_rows(before)
        if t == 0 and dedup:
            # The query's identity first appears at its first match: count identities before.
            rank = _distinct_ids_before(before, room) + 1
    if dp.shape[1]:
        # LLCM: the dropped own-identity entries ranked before a match are not in its list,
        # and the query's own identity counted in the dedup only through such an entry.
        dropped_before = _lex_less(np.take_along_axis(values, dp, axis=1), dp, mk, mp)
        pos -= dropped_before.sum(axis=1)
        if dedup:
            rank -= dropped_before[:, :, 0].any(axis=1)
    return pos + 1, rank


def _distinct_ids_before(before: np.ndarray, room: _Room) -> np.ndarray:
    """Per row, the number of identities with at least one True column in ``before``."""
    if room.dedup_cols is None:
        grouped = before[:, room.dedup_perm]
        return np.logical_or.reduceat(grouped, room.dedup_starts, axis=1).sum(axis=1)
    per_id = np.take(before, room.dedup_cols, axis=1)
    w = room.dedup_width
    if w <= 8:
        # The w bools of one identity are w adjacent bytes: nonzero as one integer iff any.
        packed = per_id.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[w])
        return np.count_nonzero(packed, axis=1)
    packed = per_id.view(np.uint64).reshape(before.shape[0], -1, w // 8)
    return packed.any(axis=2).sum(axis=1)


def _count_group(dist: np.ndarray, rows: np.ndarray, room: _Room, m: int, d: int,
                 sel: np.ndarray, dedup: bool, scratch: _Scratch
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """Positions (and dedup ranks) of ``rows``, block by block with the counting kernel."""
    per_element = dist.dtype.itemsize + 2  # values + "below" and "eq" masks
    step = max(1, _BLOCK_BYTES // (per_element * max(room.width, 1)))
    parts = []
    for s in range(0, rows.size, step):
        values = _block_values(dist, rows[s:s + step], room, scratch)
        parts.append(_count_block(values, room, room.match_pos[sel[s:s + step], :m],
                                  room.drop_pos[sel[s:s + step], :d], dedup, scratch))
    pos = np.concatenate([p for p, _ in parts])
    return pos, (np.concatenate([r for _, r in parts]) if dedup else None)


# --------------------------------------------------------------------------------------------
# threshold kernel


def _threshold_row(row: np.ndarray, m_cols: np.ndarray, d_cols: np.ndarray,
                   keep_mask: np.ndarray | None, g_ids: np.ndarray, dedup: bool
                   ) -> tuple[np.ndarray, int]:
    """Sorted 1-based positions of one row's matches (columns ``m_cols``) and its dedup rank.

    Only entries no farther than the last match can rank before a match, so the kept ones of
    those (the candidates, in column order) are all that is sorted — by value alone, which any
    dtype does exactly: a match's position is one plus the candidates strictly closer, plus
    those tied with it at a smaller column (counted on the rare tied matches only).
    """
    mv = row[m_cols]
    mask = row <= mv.max()
    if keep_mask is not None:
        mask &= keep_mask
    mask[d_cols] = False  # LLCM: the query's own identity in its own camera
    cand = np.flatnonzero(mask)
    cv = row[cand]
    sv = np.sort(cv)  # distances alone: ties among them need no order
    lt = np.searchsorted(sv, mv, side="left")
    tied = np.searchsorted(sv, mv, side="right") - lt > 1
    pos = lt + 1
    for t in np.flatnonzero(tied):
        pos[t] += np.count_nonzero(cv[:np.searchsorted(cand, m_cols[t])] == mv[t])
    if not dedup:
        return np.sort(pos), 0
    # Identities with a kept entry ranked before the first match (never the query's own).
    t1 = int(pos.argmin())
    before = cv < mv[t1]
    if tied[t1]:
        before |= (cv == mv[t1]) & (cand < m_cols[t1])
    return np.sort(pos), np.unique(g_ids[cand[before]]).size + 1


def _threshold_group(dist: np.ndarray, rows: np.ndarray, room: _Room, m: int, d: int,
                     sel: np.ndarray, g_ids: np.ndarray, dedup: bool
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """Like :func:`_count_group`, one row at a time with :func:`_threshold_row`."""
    m_cols = room.gallery_cols(room.match_pos[sel, :m])
    d_cols = room.gallery_cols(room.drop_pos[sel, :d])
    pos = np.empty((rows.size, m), dtype=np.int64)
    rank = np.empty(rows.size, dtype=np.int64)
    for i, r in enumerate(rows):
        pos[i], rank[i] = _threshold_row(dist[r], m_cols[i], d_cols[i], room.keep_mask, g_ids,
                                         dedup)
    return pos, (rank if dedup else None)


# --------------------------------------------------------------------------------------------
# entry point


def _use_threshold(width: int, m: int, itemsize: int) -> bool:
    """Whether the threshold kernel is expected to be cheaper than counting for one row."""
    count_ns = width * 2 * (m + 1) * itemsize * _PASS_NS_PER_BYTE
    return count_ns > _THRESHOLD_NS_PER_ROW + width * _THRESHOLD_NS_PER_ELEMENT


def _ap_inp(pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AP and INP from sorted 1-based positions (n, m), summed as the torch paths do."""
    m = pos.shape[1]
    pos_f = pos.astype(np.float64)
    ap = np.zeros(pos.shape[0], dtype=np.float64)
    for k in range(m):
        ap += (k + 1) / pos_f[:, k]
    ap /= m
    return ap, m / pos_f[:, -1]


def rank_chunk(dist: np.ndarray, rows: slice, tables: CpuTables, dedup: bool
               ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Rank the chunk ``dist`` (C, G) of queries ``rows`` (any real dtype; no NaN).

    Returns ``(ap, inp, cmc_rank)`` arrays per group of valid queries (queries without a true
    match are left out); ``dedup`` selects the identity-deduplicated CMC rank.
    """
    count = tables.q_count[rows]
    valid = np.flatnonzero(count > 0)
    if valid.size == 0:
        return []
    room_of, drop = tables.q_room[rows][valid], tables.q_drop[rows][valid]
    m_span, d_span = int(count.max()) + 1, int(drop.max()) + 1
    group = (room_of * m_span + count[valid]) * d_span + drop
    order = np.argsort(group, kind="stable")
    sorted_group = group[order]
    cuts = np.flatnonzero(sorted_group[1:] != sorted_group[:-1]) + 1
    sel = tables.q_sel[rows]
    out = []
    for members in np.split(valid[order], cuts):
        first = members[0]
        room = tables.rooms[int(tables.q_room[rows][first])]
        m, d = int(count[first]), int(tables.q_drop[rows][first])
        if _use_threshold(room.width, m, dist.dtype.itemsize):
            pos, rank = _threshold_group(dist, members, room, m, d, sel[members],
                                         tables.g_ids, dedup)
        else:
            pos, rank = _count_group(dist, members, room, m, d, sel[members], dedup,
                                     tables.scratch)
        ap, inp = _ap_inp(pos)
        out.append((ap, inp, pos[:, 0] if rank is None else rank))
    return out
