"""A plain per-query loop of the protocols.md metric definitions, written independently of the
library so the vectorised implementation can be checked against it (and benchmarked).

It sums like the library so that results compare with ``==``: each query's AP is its
precisions added one by one in rank order, then divided by the number of matches, and the
per-query APs / INPs are summed exactly (``math.fsum``) before dividing by the number of valid
queries."""

from __future__ import annotations

import math

import numpy as np


def _kept(ids: np.ndarray, cams: np.ndarray, q_id: int, q_cam: int, protocol: str) -> np.ndarray:
    """Which entries of a ranked gallery list the query keeps."""
    if protocol == "sysu":
        # cameras 2 and 3 share a room: drop the gallery entries of the query's room
        q_room = 2 if q_cam == 3 else q_cam
        return np.array([(2 if c == 3 else c) != q_room for c in cams], dtype=bool)
    if protocol == "llcm":
        # drop only the entries with the query's identity *and* camera
        return np.array([not (i == q_id and c == q_cam) for i, c in zip(ids, cams, strict=True)],
                        dtype=bool)
    raise ValueError(protocol)


def loop_evaluate(dist: np.ndarray, q_ids: np.ndarray, g_ids: np.ndarray, q_cams: np.ndarray,
                  g_cams: np.ndarray, protocol: str, max_rank: int = 20):
    """Returns ``(cmc, mAP, mINP, num_valid)`` or ``None`` when no query is valid."""
    num_q = dist.shape[0]
    cmc_hits = np.zeros(max_rank)
    aps: list[float] = []
    inps: list[float] = []
    for i in range(num_q):
        order = np.argsort(dist[i], kind="stable")
        ids = g_ids[order]
        if protocol != "regdb":
            ids = ids[_kept(ids, g_cams[order], q_ids[i], q_cams[i], protocol)]
        matches = ids == q_ids[i]
        if not matches.any():
            continue
        if protocol in ("sysu", "llcm"):
            distinct: list[int] = []
            for x in ids:
                if x not in distinct:
                    distinct.append(int(x))
            first = distinct.index(int(q_ids[i]))
        else:
            first = int(np.flatnonzero(matches)[0])
        if first < max_rank:
            cmc_hits[first:] += 1
        hits = 0
        precision_sum = 0.0
        for k, is_match in enumerate(matches):
            if is_match:
                hits += 1
                precision_sum += hits / (k + 1)
        aps.append(precision_sum / hits)
        last = int(np.flatnonzero(matches)[-1])
        inps.append(hits / (last + 1))
    if not aps:
        return None
    n = len(aps)
    return cmc_hits / n, math.fsum(aps) / n, math.fsum(inps) / n, n
