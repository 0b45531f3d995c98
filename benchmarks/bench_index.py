"""Search-index benchmark: queries/s of exact vs approximate FAISS search, recall@10.

::

    python benchmarks/bench_index.py                          # 1,000,000 × 512, exact + ivf
    python benchmarks/bench_index.py --n 100000 --dim 256 --types exact ivf hnsw

Synthetic, L2-normalised vectors with re-ID-like structure: the gallery is ``n / 10``
identities × 10 noisy views (centre + Gaussian noise, normalised), and each query is a fresh
noisy view of a random identity, so near neighbours exist. (Uniform random unit vectors in
512-d have no structure: every approximate index looks bad on them, which says nothing
about real galleries.) Recall@10 = share of the exact top-10 found in the approximate top-10.
Uses :func:`df2am.deploy.index.build_index` on a FeatureSet, i.e. exactly what
``df2am index build`` builds. Prints one JSON line per index type.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

import numpy as np

from df2am.deploy.features import FeatureSet
from df2am.deploy.index import build_index

logger = logging.getLogger("bench_index")


def synthetic(n: int, dim: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gallery (n, dim) and queries (queries, dim), float32 unit rows, clustered by id."""
    rng = np.random.default_rng(seed)
    ids = max(1, n // 10)
    centres = rng.standard_normal((ids, dim), dtype=np.float32)
    gallery = np.empty((n, dim), np.float32)
    step = 100_000  # in chunks: a 1M × 512 temporary noise array would double peak memory
    for s in range(0, n, step):
        e = min(n, s + step)
        gallery[s:e] = centres[np.arange(s, e) % ids] + 0.7 * rng.standard_normal(
            (e - s, dim), dtype=np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    q = centres[rng.integers(0, ids, queries)] + 0.7 * rng.standard_normal(
        (queries, dim), dtype=np.float32)
    return gallery, q / np.linalg.norm(q, axis=1, keepdims=True)


def timed_search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    rows, _ = index.search(queries, k)
    return rows, len(queries) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="gallery size")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--types", nargs="+", default=["exact", "ivf"],
                    choices=["exact", "ivf", "hnsw"])
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--nprobe", type=int, default=16)
    ap.add_argument("--m", type=int, default=32)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    t0 = time.perf_counter()
    gallery, queries = synthetic(args.n, args.dim, args.queries)
    logger.info("data %d × %d in %.1fs", args.n, args.dim, time.perf_counter() - t0)
    fs = FeatureSet(features=gallery, paths=[""] * args.n, root="", modality="rgb",
                    fingerprint="bench", weights_sha256="bench", preprocessing={})
    truth = None
    for kind in ["exact"] + [t for t in args.types if t != "exact"]:
        t0 = time.perf_counter()
        index = build_index(fs, kind, nlist=args.nlist, nprobe=args.nprobe, m=args.m)
        build_s = time.perf_counter() - t0
        rows, qps = timed_search(index, queries, args.k)
        truth = rows if truth is None else truth
        recall = float(np.mean([len(set(a) & set(b)) / args.k
                                for a, b in zip(rows, truth, strict=True)]))
        if kind in args.types:
            print(json.dumps({"type": kind, "n": args.n, "dim": args.dim,
                              "queries": args.queries, "params": index.meta["params"],
                              "build_s": round(build_s, 2), "queries_per_s": round(qps, 1),
                              f"recall@{args.k}": round(recall, 4),
                              "threads": os.cpu_count(), "load": os.getloadavg()}), flush=True)
        del index


if __name__ == "__main__":
    main()
