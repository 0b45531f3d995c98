"""Search index over a feature file (FAISS), open-set thresholds and their calibration.

::

    from df2am.deploy.features import load_features
    from df2am.deploy.index import build_index, load_index, save_index

    index = build_index(load_features("out/gallery"), kind="exact")    # or "ivf", "hnsw"
    save_index(index, "out/gallery_index")     # out/gallery_index.faiss + .json
    index = load_index("out/gallery_index")
    rows, dist = index.search(query_feats, k=20)   # (Q, k) gallery rows, cosine distances

Command line: ``df2am index build FEATS --out INDEX``, ``df2am search INDEX --query ...``,
``df2am index calibrate INDEX --queries FEATS``.

Scores are inner products of L2-normalised rows (= cosine similarity); distances are
``1 - ip``, the cosine distance of :func:`df2am.deploy.api.search`. Kinds:

* ``exact`` — ``IndexFlatIP``: every gallery row scored; the reference answer.
* ``ivf`` — ``IndexIVFFlat`` (k-means into ``nlist`` cells, ``nprobe`` cells visited per
  query): for galleries from ~10⁵ rows, where exact search gets slow.
* ``hnsw`` — ``IndexHNSWFlat`` (graph with ``m`` links per node, ``ef_search`` beam): the
  fastest queries, but slow to build and ~``m``·8 bytes more per row.
* ``--type auto`` (:mod:`df2am.deploy.index_auto`) picks one of these and its parameters: the
  fastest setting whose recall@10, measured on held-out gallery rows, reaches a target.

The index file is FAISS's own (``faiss.write_index``); the sidecar ``INDEX.json`` holds the
features' fingerprint, dimension, image paths and root, modality, kind and parameters, so a
search can refuse queries from another model. FAISS is imported lazily: the rest of df2am
works without it (``pip install 'df2am[deploy]'``).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from df2am.atomic import atomic_path, atomic_write
from df2am.deploy.features import FeatureSet
from df2am.errors import ConfigError, Df2amError

__all__ = [
    "INDEX_FORMAT",
    "INDEX_KINDS",
    "SearchIndexError",
    "FingerprintMismatchError",
    "SearchIndex",
    "import_faiss",
    "build_index",
    "save_index",
    "load_index",
    "index_paths",
    "index_meta",
    "calibrate_threshold",
    "check_target_recall",
    "unit_rows",
]

logger = logging.getLogger(__name__)

INDEX_FORMAT = "df2am-index-v1"
INDEX_KINDS = ("exact", "ivf", "hnsw")


class SearchIndexError(Df2amError):
    """An index file is missing or malformed, or queries do not fit it."""


class FingerprintMismatchError(SearchIndexError):
    """Queries and gallery come from different models or preprocessing."""


def import_faiss() -> Any:
    """``import faiss``, or an error telling how to install it."""
    try:
        import faiss
    except ImportError:
        raise SearchIndexError(
            "the search index needs FAISS, which is not installed: "
            "pip install 'df2am[deploy]'  (or: pip install faiss-cpu)"
        ) from None
    return faiss


def unit_rows(x: np.ndarray) -> np.ndarray:
    """float32 C-contiguous rows of unit length (float16 files are only nearly unit)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


@dataclass
class SearchIndex:
    """A FAISS index and its sidecar metadata (``meta``: see :func:`save_index`)."""

    index: Any
    meta: dict[str, Any]

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def fingerprint(self) -> str:
        return str(self.meta["fingerprint"])

    @property
    def numerics(self) -> tuple[str, str]:
        """``(runtime, precision)`` of the gallery features (older sidecars: torch, fp32)."""
        return str(self.meta.get("runtime", "torch")), str(self.meta.get("precision", "fp32"))

    def check_fingerprint(self, fingerprint: str, what: str = "the queries") -> None:
        """Refuse features of another model/preprocessing, naming both fingerprints."""
        if fingerprint != self.fingerprint:
            raise FingerprintMismatchError(
                f"{what} have fingerprint {fingerprint[:16]}… but the index was built from "
                f"features with fingerprint {self.fingerprint[:16]}… (features "
                f"{self.meta.get('features', '?')}, checkpoint "
                f"{self.meta.get('checkpoint', '?')}): extract both with the same checkpoint "
                f"and image size (full: {fingerprint} vs {self.fingerprint})")

    def search(self, queries: np.ndarray, k: int = 20) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows (int64, -1 = none found) and cosine distances (float32), (Q, k).

        ``k`` is capped at the gallery size; best match first.
        """
        q = np.asarray(queries)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise SearchIndexError(
                f"queries have dimension {q.shape[-1] if q.ndim else '?'} (shape "
                f"{tuple(q.shape)}) but the index holds {self.dim}-d features")
        if k < 1:
            raise ConfigError(f"--top-k must be >= 1, got {k}")
        k = min(k, int(self.index.ntotal))
        scores, rows = self.index.search(unit_rows(q), k)
        dist = np.where(rows >= 0, 1.0 - scores, np.inf).astype(np.float32)
        return rows.astype(np.int64), dist


def check_target_recall(value: float) -> float:
    """``--target-recall`` of ``--type auto``: a share of the exact top-k, in (0, 1]."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= 1:
        raise ConfigError(f"--target-recall must be in (0, 1] (a share of the exact top-k), "
                          f"got {value!r}")
    return float(value)


def default_nlist(n: int) -> int:
    """≈ 4·√N cells, but ≥ 39 training points per cell (FAISS's k-means minimum)."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def build_index(fs: FeatureSet, kind: str = "exact", *, nlist: int | None = None,
                nprobe: int = 16, m: int = 32, ef_search: int = 64,
                ef_construction: int = 40, features_path: str = "") -> SearchIndex:
    """Build a ``kind`` index (``exact`` | ``ivf`` | ``hnsw``) over a feature set.

    Example::

        index = build_index(load_features("g"), "ivf", nlist=1024, nprobe=32)
    """
    faiss = import_faiss()
    if kind not in INDEX_KINDS:
        raise ConfigError(f"--type must be one of {INDEX_KINDS}, got {kind!r}")
    x = unit_rows(fs.features)
    n, d = x.shape
    params: dict[str, Any] = {}
    if kind == "exact":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nlist = nlist or default_nlist(n)
        if not 1 <= nlist <= n:
            raise ConfigError(f"--nlist must be in 1..{n} (the gallery size), got {nlist}")
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(x)  # FAISS samples ≤ 256·nlist rows for k-means
        index.nprobe = min(nprobe, nlist)
        params = {"nlist": nlist, "nprobe": index.nprobe}
    else:
        index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
        params = {"m": m, "ef_construction": ef_construction, "ef_search": ef_search}
    index.add(x)
    logger.info("built %s index of %d × %d (%s)", kind, n, d, params or "no parameters")
    return SearchIndex(index, index_meta(fs, kind, params, features_path))


def index_meta(fs: FeatureSet, kind: str, params: dict[str, Any],
               features_path: str = "") -> dict[str, Any]:
    """The sidecar of an index of ``kind`` with ``params`` over all rows of ``fs``: what a
    search checks queries against (fingerprint, dimension, modality, runtime and precision)
    and what it reports (paths, root, the checkpoint the features came from)."""
    return {"format": INDEX_FORMAT, "type": kind, "params": params,
            "dim": int(fs.features.shape[1]), "ntotal": int(fs.features.shape[0]),
            "fingerprint": fs.fingerprint, "weights_sha256": fs.weights_sha256,
            "preprocessing": fs.preprocessing, "modality": fs.modality,
            "checkpoint": fs.checkpoint, "runtime": fs.runtime, "precision": fs.precision,
            "graph": fs.graph, "features": features_path, "root": fs.root,
            "paths": list(fs.paths)}


def index_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(INDEX.faiss, INDEX.json)`` of ``path`` given with or without a suffix."""
    p = Path(path)
    base = p.with_suffix("") if p.suffix in (".faiss", ".json") else p
    return base.with_name(base.name + ".faiss"), base.with_name(base.name + ".json")


def save_index(index: SearchIndex, path: str | os.PathLike[str]) -> Path:
    """Write ``INDEX.faiss`` (``faiss.write_index``) and the sidecar ``INDEX.json``."""
    faiss = import_faiss()
    fidx, js = index_paths(path)
    fidx.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(fidx) as tmp:
        faiss.write_index(index.index, str(tmp))
    text = json.dumps(index.meta, indent=1) + "\n"
    atomic_write(js, lambda fh: fh.write(text.encode()))
    logger.info("wrote %s and %s", fidx, js.name)
    return fidx


def load_index(path: str | os.PathLike[str]) -> SearchIndex:
    """Read an index written by :func:`save_index`; the sidecar must match the index."""
    faiss = import_faiss()
    fidx, js = index_paths(path)
    for f in (fidx, js):
        if not f.is_file():
            raise SearchIndexError(f"index file not found: {f} (expected {fidx.name} + {js.name})")
    try:
        meta = json.loads(js.read_text())
        index = faiss.read_index(str(fidx))
    except (OSError, ValueError, RuntimeError) as exc:
        raise SearchIndexError(f"cannot read index {fidx} / {js.name}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != INDEX_FORMAT:
        raise SearchIndexError(f"{js}: not a df2am index sidecar (format != {INDEX_FORMAT!r})")
    if index.d != meta["dim"] or index.ntotal != len(meta["paths"]):
        raise SearchIndexError(f"{fidx}: {index.ntotal} × {index.d} does not match {js.name}")
    if meta["type"] == "ivf":
        index.nprobe = meta["params"]["nprobe"]  # a search-time setting: not in the file
    elif meta["type"] == "hnsw":
        index.hnsw.efSearch = meta["params"]["ef_search"]
    return SearchIndex(index, meta)


def calibrate_threshold(best_dist: np.ndarray, correct: np.ndarray, genuine: np.ndarray,
                        target_far: float = 0.01) -> dict[str, float]:
    """The open-set threshold: the largest distance with false-accept rate ≤ ``target_far``.

    A query is *accepted* when its best distance is ≤ T. An accepted query whose top-1 id
    is wrong (an impostor not in the gallery, or a misidentified one) is a false accept; one
    whose top-1 id is right is a true accept. ``far`` = false accepts / queries, ``tar`` =
    true accepts / genuine queries (id present in the gallery).

    Args:
        best_dist: (Q,) top-1 cosine distance of each validation query.
        correct: (Q,) bool, top-1 id == query id.
        genuine: (Q,) bool, the query's id is in the gallery.
        target_far: the false-accept rate to stay within.
    """
    if not 0.0 <= target_far <= 1.0:
        raise ConfigError(f"--target-far must be in [0, 1], got {target_far}")
    d = np.asarray(best_dist, dtype=np.float64)
    order = np.argsort(d, kind="stable")
    d, ok = d[order], np.asarray(correct, bool)[order]
    q, g = len(d), max(int(np.asarray(genuine, bool).sum()), 1)
    far = np.cumsum(~ok) / q  # accepting the first i+1 queries (T = d[i])
    allowed = np.nonzero(far <= target_far)[0]
    # Ties: a threshold accepts every query at that distance, so use the last of a run.
    allowed = [i for i in allowed if i == q - 1 or d[i + 1] > d[i]]
    if not allowed:
        t = float(np.nextafter(d[0], -np.inf))  # accept nothing
        return {"threshold": t, "far": 0.0, "tar": 0.0, "target_far": target_far,
                "queries": q, "genuine": int(np.sum(genuine))}
    i = allowed[-1]
    return {"threshold": float(d[i]), "far": float(far[i]),
            "tar": float(ok[: i + 1].sum() / g), "target_far": target_far, "queries": q,
            "genuine": int(np.sum(genuine))}
