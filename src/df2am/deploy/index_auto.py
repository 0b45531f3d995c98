"""``df2am index build --type auto``: the fastest index whose recall@k reaches a target,
measured on the gallery itself.

::

    from df2am.deploy.features import load_features
    from df2am.deploy.index_auto import choose_index

    index = choose_index(load_features("out/gallery"), target_recall=0.95)
    index.meta["type"], index.meta["params"]      # e.g. 'hnsw', {'m': 32, 'ef_search': 64, ...}
    index.meta["auto"]["recall"], index.meta["auto"]["queries_per_s"]

Candidates (each ``(kind, params)`` is one *setting*):

* ``exact`` — recall 1 by definition; the answer for small galleries.
* ``ivf`` — :data:`IVF_NLIST_FACTORS` × √N cells (k-means trained once per ``nlist`` on
  :data:`IVF_TRAIN_PER_CELL` sampled rows per cell; ≥ 39 rows per cell, FAISS's minimum), then
  ``nprobe`` = 1, 2, 4, ... up to ``nlist``/2 (beyond that exact search is as fast).
* ``hnsw`` — ``m`` ∈ :data:`HNSW_M` (one graph build each), then ``ef_search`` ∈
  :data:`HNSW_EF_SEARCH`.

The search-time parameter (``nprobe``, ``ef_search``) is swept upwards and the sweep stops at
the first value that reaches the target: larger values only cost time. The chosen setting is
the one with the most queries/s among those that reach the target.

**How recall is measured (held-out rows).** A random sample of ``sample`` gallery rows
(default 1,000, at most 10 %) is held out; every candidate is built on the *other* rows and
searched with the held-out rows as queries; the ground truth is exact search over the same
other rows, and recall@k = the share of the exact top-k found in the candidate's top-k,
averaged over the queries. Held-out rows rather than gallery rows with a little noise: a query
that is itself in the index finds its own node and — in an HNSW graph — that node's links,
which are its nearest neighbours, so noisy copies would measure recall too optimistically and
their noise level would be an arbitrary knob. The held-out rows are real gallery vectors, so
the measurement sees the gallery's own structure (clusters of one person's views). Caveat:
cross-modality queries (IR against an RGB gallery) sit farther from the gallery than its own
rows; with a feature file of real queries, pass it as ``queries`` (``--queries FEATS``) and
recall is measured on those instead (then nothing is held out).

The chosen index is then completed over **all** rows in their original order (so row i is
still ``paths[i]``): ``exact`` and ``hnsw`` are rebuilt, ``ivf`` keeps its trained cells and
re-adds every row. Its sidecar records the chosen kind and parameters as any index does (so
:func:`~df2am.deploy.index.load_index` needs nothing new) plus ``auto``: the target, k, the
measured recall and queries/s, the method, the sample size and every setting tried.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from df2am.deploy.features import FeatureSet
from df2am.deploy.index import (
    INDEX_KINDS,
    SearchIndex,
    SearchIndexError,
    build_index,
    check_target_recall,
    import_faiss,
    index_meta,
    unit_rows,
)
from df2am.errors import ConfigError

__all__ = [
    "AUTO_SAMPLE",
    "HNSW_EF_SEARCH",
    "HNSW_M",
    "IVF_NLIST_FACTORS",
    "IVF_TRAIN_PER_CELL",
    "Setting",
    "TargetRecallError",
    "choose_index",
]

logger = logging.getLogger(__name__)

#: Held-out queries at most (and at most 10 % of the gallery).
AUTO_SAMPLE = 1000
#: IVF cell counts tried, as multiples of √N (capped so every cell gets ≥ 39 training rows).
IVF_NLIST_FACTORS = (1, 4)
#: k-means training rows per IVF cell (FAISS's default is 256): k-means costs rows × cells, so
#: at 1M rows and 4,000 cells 256 per cell would train on every row (≈ 35 min on 2 cores);
#: 64 per cell places the centroids about as well for search at a quarter of the time.
IVF_TRAIN_PER_CELL = 64
#: HNSW links per node tried (one graph build each).
HNSW_M = (16, 32)
#: HNSW search beams tried, smallest first.
HNSW_EF_SEARCH = (16, 32, 64, 128, 256, 512)


class TargetRecallError(SearchIndexError):
    """No candidate setting reaches the target recall."""


@dataclass
class Setting:
    """One candidate and what it measured."""

    kind: str
    params: dict[str, Any]
    recall: float
    queries_per_s: float
    build_s: float = 0.0

    def describe(self) -> str:
        p = ", ".join(f"{k}={v}" for k, v in self.params.items() if k != "ef_construction")
        return f"{self.kind}{f' ({p})' if p else ''}"


@dataclass
class _Calibration:
    """The rows candidates are built on, the queries, and the exact top-k of each query."""

    base: np.ndarray
    queries: np.ndarray
    truth: np.ndarray
    k: int
    method: str
    tried: list[Setting] = field(default_factory=list)
    exact_qps: float = 0.0


def _split(x: np.ndarray, queries: np.ndarray | None, k: int, sample: int,
           seed: int) -> _Calibration:
    faiss = import_faiss()
    n = x.shape[0]
    if queries is not None:
        base, q, method = x, unit_rows(queries), "query features"
    else:
        s = min(sample, max(1, n // 10))
        if n - s < k:
            raise ConfigError(f"--type auto needs a gallery of more than {k + s} rows to hold "
                              f"out queries, got {n}; use --type exact")
        held = np.random.default_rng(seed).choice(n, size=s, replace=False)
        keep = np.ones(n, bool)
        keep[held] = False
        base, q, method = x[keep], x[held], "held-out rows"
    exact = faiss.IndexFlatIP(base.shape[1])
    exact.add(base)
    t0 = time.perf_counter()
    _, truth = exact.search(q, k)  # the ground truth, and the exact candidate's timing
    cal = _Calibration(base, q, truth, k, method)
    cal.exact_qps = len(q) / max(time.perf_counter() - t0, 1e-9)
    return cal


def _measure(index: Any, cal: _Calibration, repeats: int = 2) -> tuple[float, float]:
    """(recall@k, queries/s — the better of ``repeats`` timed passes) of a FAISS index."""
    best = math.inf
    rows = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        _, rows = index.search(cal.queries, cal.k)
        best = min(best, time.perf_counter() - t0)
    assert rows is not None
    hits = [len(set(a[a >= 0]) & set(b)) for a, b in zip(rows, cal.truth, strict=True)]
    return float(np.sum(hits) / cal.truth.size), len(cal.queries) / max(best, 1e-9)


def _sweep(index: Any, kind: str, params: dict[str, Any], name: str, values: Sequence[int],
           set_value: Any, cal: _Calibration, target: float, build_s: float) -> None:
    """Raise the search-time parameter until the target is reached (recorded in ``cal``)."""
    for v in values:
        set_value(index, v)
        recall, qps = _measure(index, cal)
        cal.tried.append(Setting(kind, {**params, name: v}, recall, qps, build_s))
        logger.info("auto: %s recall@%d %.4f, %.0f queries/s", cal.tried[-1].describe(),
                    cal.k, recall, qps)
        if recall >= target:
            return


def _candidates(cal: _Calibration, kinds: Sequence[str], target: float) -> dict[tuple, Any]:
    """Build and measure every candidate; the trained IVF indexes (kept to re-add all rows)."""
    faiss = import_faiss()
    n, d = cal.base.shape
    trained: dict[tuple, Any] = {}
    if "exact" in kinds:  # timed while computing the ground truth (the same search)
        cal.tried.append(Setting("exact", {}, 1.0, cal.exact_qps))
    if "ivf" in kinds:
        for nlist in _nlists(n):
            t0 = time.perf_counter()
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.max_points_per_centroid = IVF_TRAIN_PER_CELL
            index.train(cal.base)
            index.add(cal.base)
            probes = [p for p in (2 ** i for i in range(20)) if p <= max(1, nlist // 2)]
            _sweep(index, "ivf", {"nlist": nlist}, "nprobe", probes,
                   lambda ix, v: setattr(ix, "nprobe", v), cal, target,
                   time.perf_counter() - t0)
            trained[("ivf", nlist)] = index
    if "hnsw" in kinds:
        for m in HNSW_M:
            t0 = time.perf_counter()
            index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 40
            index.add(cal.base)
            _sweep(index, "hnsw", {"m": m, "ef_construction": 40}, "ef_search",
                   HNSW_EF_SEARCH, lambda ix, v: setattr(ix.hnsw, "efSearch", v), cal, target,
                   time.perf_counter() - t0)
            del index
    return trained


def _nlists(n: int) -> list[int]:
    """IVF cell counts to try: :data:`IVF_NLIST_FACTORS` × √n, ≥ 39 training rows per cell."""
    cap = max(1, n // 39)
    return sorted({max(1, min(int(f * math.sqrt(n)), cap)) for f in IVF_NLIST_FACTORS})


def choose_index(fs: FeatureSet, *, target_recall: float = 0.95, k: int = 10,
                 kinds: Sequence[str] = INDEX_KINDS, sample: int = AUTO_SAMPLE, seed: int = 0,
                 queries: np.ndarray | None = None, features_path: str = "") -> SearchIndex:
    """The fastest setting of ``kinds`` whose recall@``k`` ≥ ``target_recall`` (module
    docstring), built over all rows of ``fs``; ``meta["auto"]`` says what was measured.

    Raises:
        TargetRecallError: no setting reaches the target (names the best recall found).
        ConfigError: a bad target, k, sample or kind; a gallery too small to hold out from.
    """
    target = check_target_recall(target_recall)
    bad = [kd for kd in kinds if kd not in INDEX_KINDS]
    if bad or not kinds:
        raise ConfigError(f"--candidates must be among {INDEX_KINDS}, got {list(kinds)}")
    if k < 1 or sample < 1:
        raise ConfigError(f"k and the sample size must be >= 1, got k={k}, sample={sample}")
    x = unit_rows(fs.features)
    if queries is not None and queries.shape[1:] != x.shape[1:]:
        raise SearchIndexError(f"calibration queries have dimension {queries.shape[1]}, the "
                               f"gallery {x.shape[1]}")
    k = min(k, x.shape[0] - 1 if queries is None else x.shape[0])
    cal = _split(x, queries, k, sample, seed)
    trained = _candidates(cal, kinds, target)
    ok = [s for s in cal.tried if s.recall >= target]
    if not ok:
        best = max(cal.tried, key=lambda s: s.recall)
        raise TargetRecallError(
            f"no index setting reaches recall@{k} >= {target:g} on this gallery: the best was "
            f"{best.recall:.4f} ({best.describe()}); lower --target-recall, or add exact to "
            f"--candidates (recall 1)")
    chosen = max(ok, key=lambda s: s.queries_per_s)
    index = _complete(fs, x, chosen, trained, features_path)
    index.meta["auto"] = {
        "target_recall": target, "k": k, "recall": chosen.recall,
        "queries_per_s": chosen.queries_per_s, "method": cal.method,
        "queries": int(len(cal.queries)), "tried": [asdict(s) for s in cal.tried]}
    logger.info("auto: chose %s: recall@%d %.4f (target %g), %.0f queries/s over %d %s",
                chosen.describe(), k, chosen.recall, target, chosen.queries_per_s,
                len(cal.queries), cal.method)
    return index


def _complete(fs: FeatureSet, x: np.ndarray, chosen: Setting, trained: dict[tuple, Any],
              features_path: str) -> SearchIndex:
    """The chosen setting over all rows of ``fs``, in their order."""
    p = chosen.params
    if chosen.kind == "ivf":
        index = trained[("ivf", p["nlist"])]
        index.reset()  # drops the vectors, keeps the trained cells
        index.add(x)
        index.nprobe = p["nprobe"]
        return SearchIndex(index, index_meta(fs, "ivf", dict(p), features_path))
    if chosen.kind == "hnsw":
        return build_index(fs, "hnsw", m=p["m"], ef_search=p["ef_search"],
                           ef_construction=p["ef_construction"], features_path=features_path)
    return build_index(fs, "exact", features_path=features_path)
