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
``1 - ip``, the cosine distance of :func:`df2am.deploy.api.search`, in [0, 2], smaller =
closer (the one convention of everything df2am shows: :data:`DISTANCE`). Kinds:

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

Validation (this module owns index parameters and thresholds): :func:`check_params` holds the
range of every FAISS parameter (``nlist`` in 1..N, ``nprobe`` in 1..nlist, HNSW ``m`` in
2..512, ``ef_search`` and ``ef_construction`` >= 1), applied when an index is built (naming the
option) *and* when one is loaded (naming ``INDEX.json`` and the key: a hand-edited sidecar),
before FAISS sees a value: several bad values crash FAISS natively. The sidecar's ``ntotal``,
``runtime`` and ``precision`` must agree with the index and the values df2am writes; an
empty, truncated or foreign ``.faiss`` file is named in one line (not FAISS's C++ trace).
:func:`check_threshold`: an open-set threshold is a cosine distance, finite and in [0, 2]. A
search returns exactly ``k`` matches per query when the gallery has ``k`` rows: HNSW searches
with a beam of at least ``k`` (``max(ef_search, k)``), and an IVF query whose visited cells
hold fewer than ``k`` rows is searched again over every cell; ``-1`` rows (FAISS's "none") are
never a match.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from df2am.atomic import atomic_path, atomic_write
from df2am.deploy.features import FeatureSet, check_numerics_keys, read_sidecar
from df2am.errors import ConfigError, Df2amError

__all__ = [
    "DISTANCE",
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
    "check_params",
    "check_threshold",
]

logger = logging.getLogger(__name__)

INDEX_FORMAT = "df2am-index-v1"
INDEX_KINDS = ("exact", "ivf", "hnsw")
#: The distance every ranking df2am shows is in (CLI text, JSON, the web page).
DISTANCE = "cosine distance 1 - cos(q, g), in [0, 2], smaller = closer"
#: Each kind's parameters and their command-line options.
PARAMS: dict[str, tuple[str, ...]] = {"exact": (), "ivf": ("nlist", "nprobe"),
                                      "hnsw": ("m", "ef_construction", "ef_search")}
OPTIONS = {"nlist": "--nlist", "nprobe": "--nprobe", "m": "--m", "ef_search": "--ef-search",
           "ef_construction": "--ef-construction"}
MAX_HNSW_M = 512


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


def check_threshold(threshold: float | None, what: str = "--threshold") -> float | None:
    """An open-set threshold is a cosine distance: finite and in [0, 2] (None: no threshold).

    Below 0 every query is "not in the gallery", true matches included; above 2 every query
    is "in the gallery": neither is a threshold.
    """
    if threshold is None:
        return None
    t = float(threshold)
    if not math.isfinite(t) or not 0.0 <= t <= 2.0:
        raise ConfigError(f"{what} must be a cosine distance in [0, 2] (1 - cos; smaller = "
                          f"closer), got {threshold}")
    return t


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def check_params(kind: str, params: dict[str, Any], n: int,
                 name: Any = OPTIONS.get) -> None:
    """Refuse FAISS parameters out of range for a ``kind`` index over ``n`` rows.

    ``name(key)`` spells a parameter in messages (the option at build time, ``INDEX.json:
    params.key`` at load time). Ranges: ``nlist`` 1..n, ``nprobe`` 1..nlist, ``m``
    2..:data:`MAX_HNSW_M`, ``ef_search`` >= 1, ``ef_construction`` >= 1; every one an int.
    """
    if kind not in INDEX_KINDS:
        raise ConfigError(f"index type must be one of {INDEX_KINDS}, got {kind!r}")
    unknown = sorted(set(params) - set(PARAMS[kind]))
    missing = [k for k in PARAMS[kind] if k not in params]
    if unknown or missing:
        has = ", ".join(PARAMS[kind]) or "none"
        raise ConfigError(
            f"{name(unknown[0])}: not a parameter of the {kind} index type (it has: {has})"
            if unknown else f"{name(missing[0])} is missing (the {kind} index type has: {has})")
    limits = {"nlist": (1, n, "the gallery size"), "nprobe": (1, params.get("nlist"), "nlist"),
              "m": (2, MAX_HNSW_M, ""), "ef_search": (1, None, ""),
              "ef_construction": (1, None, "")}
    for key in PARAMS[kind]:
        value = params[key]
        low, high, why = limits[key]
        if not _is_int(value):
            raise ConfigError(f"{name(key)} must be an integer, got {value!r}")
        if value < low or (high is not None and value > high):
            span = (f"be in {low}..{high}" + (f" ({why})" if why else "")
                    if high is not None else f"be >= {low}")
            raise ConfigError(f"{name(key)} must {span}, got {value}")


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

        ``k`` is capped at the gallery size; best match first. Every query gets ``k`` rows
        (see the module docstring); a -1 left (an HNSW graph that does not reach enough
        rows) comes with an infinite distance and is no match.

        Raises:
            SearchIndexError: queries of another dimension, or a non-finite or all-zero row.
        """
        q = np.asarray(queries)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise SearchIndexError(
                f"queries have dimension {q.shape[-1] if q.ndim else '?'} (shape "
                f"{tuple(q.shape)}) but the index holds {self.dim}-d features")
        if k < 1:
            raise ConfigError(f"--top-k must be >= 1, got {k}")
        x = np.asarray(q, dtype=np.float32)
        bad = ~np.isfinite(x).all(axis=1) | ~(x != 0).any(axis=1)
        if bad.any():
            raise SearchIndexError(f"query row {int(np.argmax(bad))} is not a feature (NaN, "
                                   "infinite or all zeros): nothing to search with")
        k = min(k, int(self.index.ntotal))
        x = unit_rows(x)
        kind = self.meta.get("type")
        if kind == "hnsw":  # a beam narrower than k cannot return k rows
            ef = self.index.hnsw.efSearch
            self.index.hnsw.efSearch = max(ef, k)
            try:
                scores, rows = self.index.search(x, k)
            finally:
                self.index.hnsw.efSearch = ef
        else:
            scores, rows = self.index.search(x, k)
        short = (rows < 0).any(axis=1)
        if kind == "ivf" and short.any() and self.index.nprobe < self.index.nlist:
            logger.info("%d query(ies): the %d visited IVF cell(s) held fewer than %d rows; "
                        "searched again over all %d cells", int(short.sum()),
                        self.index.nprobe, k, self.index.nlist)
            nprobe = self.index.nprobe
            self.index.nprobe = self.index.nlist
            try:
                scores[short], rows[short] = self.index.search(x[short], k)
            finally:
                self.index.nprobe = nprobe
        # Float rounding puts 1 - q·g of a near-duplicate a hair below 0: the convention
        # (DISTANCE) is [0, 2], and a calibrated threshold must stay a valid --threshold.
        dist = np.where(rows >= 0, np.clip(1.0 - scores, 0.0, 2.0), np.inf).astype(np.float32)
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
                nprobe: int | None = None, m: int | None = None, ef_search: int | None = None,
                ef_construction: int | None = None, features_path: str = "") -> SearchIndex:
    """Build a ``kind`` index (``exact`` | ``ivf`` | ``hnsw``) over a feature set.

    Parameters left ``None`` take their defaults (``nlist`` ≈ 4·√N, ``nprobe`` min(16,
    nlist), ``m`` 32, ``ef_construction`` 40, ``ef_search`` 64); each is checked by
    :func:`check_params` before FAISS sees it; one given for another kind is a warning.

    Example::

        index = build_index(load_features("g"), "ivf", nlist=1024, nprobe=32)
    """
    faiss = import_faiss()
    if kind not in INDEX_KINDS:
        raise ConfigError(f"--type must be one of {INDEX_KINDS}, got {kind!r}")
    n, d = fs.features.shape
    given = {"nlist": nlist, "nprobe": nprobe, "m": m, "ef_search": ef_search,
             "ef_construction": ef_construction}
    ignored = [OPTIONS[k] for k, v in given.items() if v is not None and k not in PARAMS[kind]]
    if ignored:
        logger.warning("%s: not a parameter of --type %s, ignored", ", ".join(ignored), kind)
    params: dict[str, Any] = {}
    if kind == "ivf":
        params["nlist"] = default_nlist(n) if nlist is None else nlist
        nl = params["nlist"] if _is_int(params["nlist"]) and params["nlist"] >= 1 else 1
        params["nprobe"] = min(16, nl) if nprobe is None else nprobe
    elif kind == "hnsw":
        params = {"m": 32 if m is None else m,
                  "ef_construction": 40 if ef_construction is None else ef_construction,
                  "ef_search": 64 if ef_search is None else ef_search}
    check_params(kind, params, n)
    x = unit_rows(fs.features)
    if kind == "exact":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, params["nlist"],
                                   faiss.METRIC_INNER_PRODUCT)
        index.train(x)  # FAISS samples ≤ 256·nlist rows for k-means
        index.nprobe = params["nprobe"]
    else:
        index = faiss.IndexHNSWFlat(d, params["m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params["ef_construction"]
        index.hnsw.efSearch = params["ef_search"]
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
    meta = read_sidecar(js, SearchIndexError)
    _check_sidecar(meta, js)  # before FAISS reads anything the sidecar configures
    try:
        index = faiss.read_index(str(fidx))
    except (OSError, ValueError, RuntimeError) as exc:
        said = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        said = re.sub(r"^.*?\.cpp:\d+: (Error: '.*?' failed: )?", "", said)
        raise SearchIndexError(f"{fidx}: not a readable FAISS index (empty, truncated or "
                               f"another format; FAISS: {said})") from None
    _check_matches(index, meta, fidx, js, faiss)
    if meta["type"] == "ivf":
        index.nprobe = meta["params"]["nprobe"]  # a search-time setting: not in the file
    elif meta["type"] == "hnsw":
        index.hnsw.efSearch = meta["params"]["ef_search"]
    return SearchIndex(index, meta)


_TYPE_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "a mapping"}


def _check_sidecar(meta: Any, js: Path) -> None:
    """Every key a search reads, with its type; the parameters by :func:`check_params`."""
    if not isinstance(meta, dict) or meta.get("format") != INDEX_FORMAT:
        raise SearchIndexError(f"{js}: not a df2am index sidecar (format != {INDEX_FORMAT!r})")
    types = {"type": str, "params": dict, "dim": int, "fingerprint": str, "modality": str,
             "paths": list, "root": str}
    for key, tp in types.items():
        if key not in meta:
            raise SearchIndexError(f"{js}: the sidecar lacks key {key!r}")
        if not isinstance(meta[key], tp) or isinstance(meta[key], bool):
            raise SearchIndexError(f"{js}: key {key!r} must be {_TYPE_NAMES[tp]}, got "
                                   f"{str(meta[key])[:40]!r}")
    if meta["modality"] not in ("rgb", "ir"):
        raise SearchIndexError(f"{js}: 'modality' must be 'rgb' or 'ir', got "
                               f"{meta['modality']!r}")
    if not all(isinstance(p, str) for p in meta["paths"]):
        raise SearchIndexError(f"{js}: 'paths' must list strings")
    if "ntotal" in meta and meta["ntotal"] != len(meta["paths"]):
        raise SearchIndexError(f"{js}: 'ntotal' is {meta['ntotal']!r} but 'paths' lists "
                               f"{len(meta['paths'])} images")
    check_numerics_keys(meta, js, SearchIndexError)
    if meta["type"] not in INDEX_KINDS:
        raise SearchIndexError(f"{js}: 'type' must be one of {INDEX_KINDS}, got "
                               f"{meta['type']!r}")
    try:
        check_params(meta["type"], meta["params"], len(meta["paths"]),
                     lambda key: f"{js}: params.{key}")
    except ConfigError as exc:
        raise SearchIndexError(str(exc)) from None


def _check_matches(index: Any, meta: dict[str, Any], fidx: Path, js: Path, faiss: Any) -> None:
    """The FAISS file is the index its sidecar describes (size, kind, metric, cells)."""
    if index.d != meta["dim"] or index.ntotal != len(meta["paths"]):
        raise SearchIndexError(f"{fidx}: {index.ntotal} × {index.d} does not match {js.name} "
                               f"({len(meta['paths'])} paths × {meta['dim']})")
    kind = meta["type"]
    is_kind = {"exact": isinstance(index, faiss.IndexFlat),
               "ivf": isinstance(index, faiss.IndexIVF), "hnsw": isinstance(index, faiss.IndexHNSW)}
    if not is_kind[kind]:
        raise SearchIndexError(f"{js}: 'type' is {kind!r} but {fidx.name} holds a "
                               f"{type(index).__name__}")
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise SearchIndexError(f"{fidx}: not an inner-product index (cosine on unit rows)")
    if kind == "ivf" and index.nlist != meta["params"]["nlist"]:
        raise SearchIndexError(f"{js}: params.nlist is {meta['params']['nlist']} but "
                               f"{fidx.name} has {index.nlist} cells")


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
    if d.size == 0 or not np.isfinite(d).all():
        raise SearchIndexError(
            "calibration needs a finite top-1 distance for every validation query; got "
            + ("no query" if d.size == 0 else f"{int((~np.isfinite(d)).sum())} non-finite"))
    order = np.argsort(d, kind="stable")
    d, ok = d[order], np.asarray(correct, bool)[order]
    q, g = len(d), max(int(np.asarray(genuine, bool).sum()), 1)
    far = np.cumsum(~ok) / q  # accepting the first i+1 queries (T = d[i])
    allowed = np.nonzero(far <= target_far)[0]
    # Ties: a threshold accepts every query at that distance, so use the last of a run.
    allowed = [i for i in allowed if i == q - 1 or d[i + 1] > d[i]]
    if not allowed:
        if d[0] <= 0.0:  # a threshold is a distance >= 0: it cannot exclude these
            raise SearchIndexError(
                f"no threshold in [0, 2] keeps the false-accept rate within {target_far:g}: "
                f"{int((d <= 0).sum())} validation query(ies) are at distance 0 from their "
                "top-1 and some of those have the wrong id (an image in the gallery under "
                "another id?)")
        t = float(np.nextafter(d[0], -np.inf))  # accept nothing
        return {"threshold": t, "far": 0.0, "tar": 0.0, "target_far": target_far,
                "queries": q, "genuine": int(np.sum(genuine))}
    i = allowed[-1]
    return {"threshold": float(d[i]), "far": float(far[i]),
            "tar": float(ok[: i + 1].sum() / g), "target_far": target_far, "queries": q,
            "genuine": int(np.sum(genuine))}
