"""A plain per-query loop of the protocols.md metric definitions, written independently of the
library so the vectorised implementation can be checked against it (and benchmarked)."""

from __future__ import annotations

import numpy as np


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
        if protocol == "sysu":
            cams = g_cams[order]
            q_room = 2 if q_cams[i] == 3 else q_cams[i]
            keep = np.array([(2 if c == 3 else c) != q_room for c in cams], dtype=bool)
            ids = ids[keep]
        matches = ids == q_ids[i]
        if not matches.any():
            continue
        if protocol == "sysu":
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
        precisions = []
        for k, is_match in enumerate(matches):
            if is_match:
                hits += 1
                precisions.append(hits / (k + 1))
        aps.append(float(np.mean(precisions)))
        last = int(np.flatnonzero(matches)[-1])
        inps.append(hits / (last + 1))
    if not aps:
        return None
    n = len(aps)
    return cmc_hits / n, float(np.mean(aps)), float(np.mean(inps)), n
