"""Sort-free, exact ranking of a CPU distance chunk with numpy (few true matches per query).

Used by :mod:`df2am.evaluation.metrics` for CPU chunks whose dtype converts exactly to float32
when queries have few true matches (SYSU-MM01: at most 4 in single-shot, RegDB: 10). It
implements the same ``docs/protocols.md`` "Metrics" definitions as the rest of the package:
stable ranking, the SYSU camera rule, identity-deduplicated SYSU CMC, AP and mINP over the
filtered list.

How (and why it is exact):

- **Keys.** The filtered stable rank of gallery entry ``j`` in a query row is one plus the
  number of kept entries ``e`` with ``(d_e, e) < (d_j, j)`` lexicographically. Each float32
  distance is mapped to an int32 that orders like the float (sign-magnitude → two's complement,
  with ``-0.0`` folded onto ``+0.0`` since they compare equal as floats) and packed with its
  column into one int64 key ``value << 32 | column``. The lexicographic comparison becomes one
  integer ``<``, so exact ties need no special case and all keys of a row are distinct.
- **Groups.** Rows are grouped by (camera room, number of true matches ``m``). The SYSU rule
  depends only on the query's room, so a group shares one set of kept gallery columns and is a
  dense ``(rows, kept)`` block; every row has exactly ``m`` matches, found from a per-room table
  of each identity's kept columns (no ``(Q, G)`` match mask, no ``nonzero``).
- **Counting.** ``m`` compare-and-count passes over the block give each match's 0-based
  position: work is O(total true matches × G) — no sort, no per-query loop. Sorting the ``m``
  positions of a row gives AP (k-th match at position p: precision k/p, summed in rank order as
  the sorting path does, so both paths agree to the last bit), mINP and the image-level rank.
- **Deduplicated SYSU rank.** One plus the number of identities with a kept entry whose key is
  below the first match's key. Per room, each identity's kept columns are laid out in a padded
  ``(ids, P')`` table (``P'`` a power of two ≤ 8 or a multiple of 8, padding repeats one of the
  identity's own columns, which cannot change an "any"), so the per-identity "any" of the
  ``key < first`` mask is one ``take`` and a reinterpretation of each identity's ``P'`` bools
  as one unsigned integer. Galleries where that table would be much wider than the row (a few
  identities with very many images) use a segmented ``logical_or.reduceat`` instead.
"""

from __future__ import annotations

import sys

import numpy as np

# Use the padded per-identity table for the deduplicated rank while it is at most this many
# times wider than the kept row; beyond that (very unbalanced identities) use reduceat.
_DEDUP_TABLE_MAX_RATIO = 4

# Rows at least this wide are counted one by one with count_nonzero (a SIMD popcount over the
# whole row, ≈ 6× faster than a row-wise sum at 100,000 columns); narrower blocks use one
# row-wise uint16 sum (≤ 65,535 columns, so it cannot overflow) to avoid per-row calls.
_ROW_COUNT_LOOP_MIN_WIDTH = 4096

_LITTLE_ENDIAN = sys.byteorder == "little"


def _padded_width(p: int) -> int:
    """Bools per identity in the dedup table: 1, 2, 4, 8 (one uint8..uint64) or 8·k."""
    if p <= 1:
        return 1
    if p <= 8:
        return 1 << (p - 1).bit_length()
    return -(-p // 8) * 8


class _Room:
    """The gallery columns kept for queries of one camera room and per-identity lookups.

    ``kept`` is None when every column is kept (RegDB, SYSU cam-6 queries).
    """

    def __init__(self, kept: np.ndarray | None, kept_ids: np.ndarray, num_ids: int) -> None:
        self.kept = kept
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
        self.match_pos = table(p) if self.width else np.zeros((num_ids, 0), dtype=np.int64)
        present = self.counts > 0
        self.dedup_width = _padded_width(p)
        n_present = int(present.sum())
        self.dedup_cols: np.ndarray | None = None
        if self.width and n_present * self.dedup_width <= _DEDUP_TABLE_MAX_RATIO * self.width:
            self.dedup_cols = np.ascontiguousarray(table(self.dedup_width)[present]).ravel()
        self.dedup_perm = order
        self.dedup_starts = starts[present]


class CpuTables:
    """Per-evaluation lookups for :func:`rank_chunk`: built once from the compact labels.

    Args:
        q_ids: (Q,) compact query identities, -1 where the identity is not in the gallery.
        g_ids: (G,) compact gallery identities in ``0..num_ids-1``.
        q_rooms, g_rooms: mapped SYSU cameras (camera 3 → 2), or None for RegDB (no filter).
    """

    def __init__(self, q_ids: np.ndarray, g_ids: np.ndarray, num_ids: int,
                 q_rooms: np.ndarray | None, g_rooms: np.ndarray | None) -> None:
        self.q_ids = q_ids
        if q_rooms is None or g_rooms is None:
            self.q_room = np.zeros(q_ids.shape, dtype=np.int64)
            self.rooms = [_Room(None, g_ids, num_ids)]
        else:
            values, self.q_room = np.unique(q_rooms, return_inverse=True)
            self.rooms = []
            for value in values:
                kept = np.flatnonzero(g_rooms != value)
                self.rooms.append(_Room(None if kept.size == g_ids.size else kept,
                                        g_ids[kept], num_ids))
        counts = np.stack([room.counts for room in self.rooms])  # (rooms, U)
        present = q_ids >= 0
        #: true matches of each query after the camera rule (0: the query is skipped)
        self.q_count = np.where(present, counts[self.q_room, np.where(present, q_ids, 0)], 0)


def _keys(block: np.ndarray) -> np.ndarray:
    """int64 keys ordering ``(value, column)`` lexicographically for a float32 block."""
    bits = (block + np.float32(0.0)).view(np.int32)  # -0.0 + 0.0 = +0.0: equal floats, equal keys
    # Negative floats are sign-magnitude: flipping their 31 magnitude bits makes int32 order
    # match float order (including ±inf; NaN was rejected before).
    bits ^= (bits >> 31) & np.int32(0x7FFFFFFF)
    rows, width = block.shape
    cols = np.arange(width, dtype=np.int32)
    if _LITTLE_ENDIAN:
        # Write the two 32-bit halves in place: cheaper than widening, shifting and or-ing.
        keys = np.empty((rows, width), dtype=np.int64)
        halves = keys.view(np.int32).reshape(rows, width, 2)
        halves[..., 0] = cols
        halves[..., 1] = bits
        return keys
    return (bits.astype(np.int64) << 32) | cols.astype(np.int64)


def _count_rows(mask: np.ndarray) -> np.ndarray:
    """Number of True per row of a 2-D bool array."""
    if mask.shape[1] >= min(_ROW_COUNT_LOOP_MIN_WIDTH, 65536):
        return np.fromiter((np.count_nonzero(row) for row in mask), dtype=np.int64,
                           count=mask.shape[0])
    return np.add.reduce(mask.view(np.uint8), axis=1, dtype=np.uint16)


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


def _rank_group(dist: np.ndarray, rows: np.ndarray, room: _Room, m: int, q_ids: np.ndarray,
                dedup: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AP, INP and CMC rank of ``rows`` (all in ``room``, each with exactly ``m`` matches)."""
    block = dist[rows]
    if room.kept is not None:
        block = block[:, room.kept]
    keys = _keys(block)
    del block
    match_keys = np.take_along_axis(keys, room.match_pos[q_ids, :m], axis=1)  # (B, m)
    n = rows.size
    below = np.empty(keys.shape, dtype=bool)
    pos = np.empty((n, m), dtype=np.int64)
    for t in range(m):
        np.less(keys, match_keys[:, t:t + 1], out=below)
        pos[:, t] = _count_rows(below)
    pos.sort(axis=1)
    pos += 1  # 1-based positions in the filtered list, in rank order (keys are distinct)
    pos_f = pos.astype(np.float64)
    # AP summed match by match in rank order, then divided, exactly as the sorting path does.
    ap = np.zeros(n, dtype=np.float64)
    for k in range(m):
        ap += (k + 1) / pos_f[:, k]
    ap /= m
    inp = m / pos_f[:, -1]
    if dedup:
        # The query's identity first appears at its closest match; count identities before.
        np.less(keys, match_keys.min(axis=1)[:, None], out=below)
        rank = _distinct_ids_before(below, room) + 1
    else:
        rank = pos[:, 0]
    return ap, inp, rank


def rank_chunk(dist: np.ndarray, rows: slice, tables: CpuTables, dedup: bool
               ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Rank the float32 chunk ``dist`` (C, G) of queries ``rows``.

    Returns ``(ap, inp, cmc_rank)`` arrays per group of valid queries (queries without a true
    match are left out); ``dedup`` selects the identity-deduplicated SYSU CMC rank.
    """
    count = tables.q_count[rows]
    valid = np.flatnonzero(count > 0)
    if valid.size == 0:
        return []
    room_of = tables.q_room[rows][valid]
    group = room_of * (int(count.max()) + 1) + count[valid]
    order = np.argsort(group, kind="stable")
    sorted_group = group[order]
    cuts = np.flatnonzero(sorted_group[1:] != sorted_group[:-1]) + 1
    q_ids = tables.q_ids[rows]
    out = []
    for members in np.split(valid[order], cuts):
        first = members[0]
        room = tables.rooms[int(tables.q_room[rows][first])]
        out.append(_rank_group(dist, members, room, int(count[first]), q_ids[members], dedup))
    return out
