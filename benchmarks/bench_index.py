"""Search-index benchmark: exact vs IVF (several nprobe) vs HNSW (several ef_search) at a
gallery size of your choice — queries/s, recall@k, build time, memory — written as it goes
(resumable), then a Markdown table and a plot.

::

    python benchmarks/bench_index.py --out runs/bench_index                 # 1,000,000 × 512
    python benchmarks/bench_index.py --size 20000 --dim 64 --out /tmp/bi    # a quick check
    python benchmarks/bench_index.py --out runs/bench_index --auto          # + --type auto's pick

Data: synthetic L2-normalised vectors with re-ID-like structure — ``size / 10`` identities ×
10 noisy views (centre + N(0, 0.7²) per coordinate, normalised); each query is a fresh noisy
view of a random identity, so near neighbours exist. (Uniform random unit vectors in 512-d have
no structure: every approximate index looks bad on them, which says nothing about real
galleries.) Recall@k = share of the exact top-k found in the approximate top-k. The indexes
are FAISS's ``IndexFlatIP`` / ``IndexIVFFlat`` / ``IndexHNSWFlat`` as ``df2am index build
--type auto`` makes them (inner product on unit rows = cosine; IVF k-means on 64 sampled rows
per cell, ``IVF_TRAIN_PER_CELL``).

Each *build* (exact; IVF per ``--nlist``; HNSW per ``--m``) is measured once for build time
and memory (growth of the process's resident set during the build, and the index's own
estimate: vectors + lists/links), then searched with every search-time value (``--nprobe`` /
``--ef-search``): the better of ``--passes`` timed passes over all ``--queries`` queries in one
batch (FAISS parallelises a batch over its OpenMP threads).

Resumable: every measured setting is appended to ``OUT/results.jsonl`` as soon as it is known
(and printed); a rerun with the same ``--out`` skips settings already there (a build whose
settings are all done is not rebuilt). At the end ``OUT/table.md`` (the table for
docs/benchmarks.md) and ``OUT/recall_qps.png`` (queries/s against recall@k, log scale) are
written from everything in ``results.jsonl``. ``--auto`` also times ``df2am index build --type
auto`` (:func:`df2am.deploy.index_auto.choose_index`, target ``--target-recall``) on the same
gallery and records its pick and its own measured recall.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from df2am.deploy.features import FeatureSet
from df2am.deploy.index import import_faiss
from df2am.deploy.index_auto import IVF_TRAIN_PER_CELL

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


def rss_bytes() -> int:
    """Resident set size of this process now (Linux; 0 elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def index_bytes(kind: str, n: int, d: int, nlist: int = 0, m: int = 0) -> int:
    """What the index holds: float32 vectors, plus IVF ids and centroids or HNSW links
    (level 0 has 2·m links per node, the upper levels ~1/m of the nodes with m each)."""
    vectors = n * d * 4
    if kind == "ivf":
        return vectors + n * 8 + nlist * d * 4
    if kind == "hnsw":
        return vectors + n * (2 * m * 4 + 8) + int(n / max(m, 1)) * m * 4
    return vectors


def machine() -> dict[str, Any]:
    name = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        name = next((ln.split(":", 1)[1].strip() for ln in out.splitlines()
                     if ln.startswith("Model name")), name)
    except (OSError, subprocess.SubprocessError):
        pass
    faiss = import_faiss()
    return {"cpu": name, "cpus": os.cpu_count(), "faiss": faiss.__version__,
            "faiss_threads": faiss.omp_get_max_threads(), "numpy": np.__version__}


class Recorder:
    """``results.jsonl``: what is already measured (skipped on a rerun) and appends."""

    def __init__(self, out: Path, meta: dict[str, Any]) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "results.jsonl"
        self.rows = [json.loads(ln) for ln in self.path.read_text().splitlines()
                     if ln.strip()] if self.path.is_file() else []
        old = next((r for r in self.rows if r.get("event") == "data"), None)
        keys = ("n", "dim", "queries", "k", "seed")
        if old and any(old[k] != meta[k] for k in keys):
            raise SystemExit(f"{self.path} holds another benchmark ({ {k: old[k] for k in keys} });"
                             " use another --out")
        if not old:
            self.add({"event": "data", **meta})

    def done(self, key: str) -> bool:
        return any(r.get("key") == key for r in self.rows)

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


def search_pass(index: Any, queries: np.ndarray, k: int, passes: int) -> tuple[np.ndarray, float]:
    best, rows = float("inf"), None
    for _ in range(passes):
        t0 = time.perf_counter()
        _, rows = index.search(queries, k)
        best = min(best, time.perf_counter() - t0)
    assert rows is not None
    return rows, len(queries) / best


def recall(rows: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1]
                          for a, b in zip(rows, truth, strict=True)]))


def builds(args: argparse.Namespace) -> list[tuple[str, dict[str, int], str, list[int]]]:
    """(kind, build params, search-time parameter name, its values) of every build."""
    out: list[tuple[str, dict[str, int], str, list[int]]] = []
    if "exact" in args.types:
        out.append(("exact", {}, "", [0]))
    if "ivf" in args.types:
        out += [("ivf", {"nlist": nl}, "nprobe", [p for p in args.nprobe if p <= nl])
                for nl in args.nlist]
    if "hnsw" in args.types:
        out += [("hnsw", {"m": m, "ef_construction": args.ef_construction}, "ef_search",
                 args.ef_search) for m in args.m]
    return out


def build(kind: str, params: dict[str, int], x: np.ndarray) -> Any:
    faiss = import_faiss()
    d = x.shape[1]
    if kind == "exact":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, params["nlist"],
                                   faiss.METRIC_INNER_PRODUCT)
        index.cp.max_points_per_centroid = IVF_TRAIN_PER_CELL  # as --type auto trains
        index.train(x)
    else:
        index = faiss.IndexHNSWFlat(d, params["m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params["ef_construction"]
    index.add(x)
    return index


def run_grid(args: argparse.Namespace, rec: Recorder, x: np.ndarray, q: np.ndarray,
             truth: np.ndarray) -> None:
    for kind, params, name, values in builds(args):
        keys = {v: f"{kind}:{json.dumps(params, sort_keys=True)}:{name}={v}" for v in values}
        if all(rec.done(key) for key in keys.values()):
            logger.info("%s %s: done in an earlier run", kind, params)
            continue
        before, t0 = rss_bytes(), time.perf_counter()
        index = build(kind, params, x)
        build_s, grown = time.perf_counter() - t0, rss_bytes() - before
        for v, key in keys.items():
            if rec.done(key):
                continue
            if kind == "ivf":
                index.nprobe = v
            elif kind == "hnsw":
                index.hnsw.efSearch = v
            rows, qps = search_pass(index, q, args.k, args.passes)
            rec.add({"event": "setting", "key": key, "type": kind,
                     "params": {**params, **({name: v} if name else {})},
                     "build_s": round(build_s, 1), "rss_growth_gb": round(grown / 2**30, 2),
                     "index_gb": round(index_bytes(kind, len(x), x.shape[1],
                                                   params.get("nlist", 0),
                                                   params.get("m", 0)) / 2**30, 2),
                     "queries_per_s": round(qps, 1), f"recall@{args.k}": round(
                         recall(rows, truth), 4), "load": os.getloadavg()})
        del index


def run_auto(args: argparse.Namespace, rec: Recorder, x: np.ndarray) -> None:
    """``--type auto`` on the same gallery: its pick, measured recall and total time."""
    from df2am.deploy.index_auto import choose_index

    key = f"auto:target={args.target_recall}"
    if rec.done(key):
        return
    fs = FeatureSet(features=x, paths=[""] * len(x), root="", modality="rgb",
                    fingerprint="bench", weights_sha256="bench", preprocessing={})
    t0 = time.perf_counter()
    index = choose_index(fs, target_recall=args.target_recall, k=args.k)
    auto = index.meta["auto"]
    rec.add({"event": "auto", "key": key, "type": index.meta["type"],
             "params": index.meta["params"], "total_s": round(time.perf_counter() - t0, 1),
             "recall": auto["recall"], "queries_per_s": round(auto["queries_per_s"], 1),
             "tried": len(auto["tried"]), "load": os.getloadavg()})


def report(out: Path, rows: list[dict[str, Any]], k: int) -> None:
    """``table.md`` and ``recall_qps.png`` from every row measured so far."""
    data = next(r for r in rows if r.get("event") == "data")
    settings = [r for r in rows if r.get("event") == "setting"]
    exact = next((r["queries_per_s"] for r in settings if r["type"] == "exact"), None)
    lines = [f"{data['n']:,} × {data['dim']}, {data['queries']} queries in one batch, "
             f"k = {k}; {data['machine']['cpu']}, {data['machine']['faiss_threads']} FAISS "
             f"threads, faiss {data['machine']['faiss']}", "",
             f"| index | parameters | build (s) | memory (GiB: index / RSS growth) | "
             f"queries/s | × exact | recall@{k} |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in settings:
        p = ", ".join(f"{a}={b}" for a, b in r["params"].items() if a != "ef_construction")
        ratio = f"{r['queries_per_s'] / exact:.1f}" if exact else "-"
        lines.append(f"| {r['type']} | {p or '-'} | {r['build_s']} | {r['index_gb']} / "
                     f"{r['rss_growth_gb']} | {r['queries_per_s']:,.0f} | {ratio} | "
                     f"{r[f'recall@{k}']:.4f} |")
    for r in (r for r in rows if r.get("event") == "auto"):
        p = ", ".join(f"{a}={b}" for a, b in r["params"].items() if a != "ef_construction")
        lines += ["", f"`--type auto --target-recall {r['key'].split('=')[1]}` picked "
                  f"{r['type']} ({p}): its held-out recall@{k} {r['recall']:.4f}, "
                  f"{r['queries_per_s']:,.0f} queries/s; {r['tried']} settings tried in "
                  f"{r['total_s']} s"]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    _plot(out / "recall_qps.png", settings, k, data)


def _plot(path: Path, settings: list[dict[str, Any]], k: int, data: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in settings:
        build_p = {a: b for a, b in r["params"].items() if a not in ("nprobe", "ef_search")}
        label = r["type"] + (f" ({', '.join(f'{a}={b}' for a, b in build_p.items() if a != 'ef_construction')})" if build_p else "")  # noqa: E501
        groups.setdefault(label, []).append(r)
    for label, rs in groups.items():
        rs = sorted(rs, key=lambda r: r[f"recall@{k}"])
        ax.plot([r[f"recall@{k}"] for r in rs], [r["queries_per_s"] for r in rs],
                marker="*" if label == "exact" else "o", markersize=12 if label == "exact"
                else 6, label=label)
        for r in rs:
            v = r["params"].get("nprobe", r["params"].get("ef_search"))
            if v is not None:
                ax.annotate(str(v), (r[f"recall@{k}"], r["queries_per_s"]), fontsize=7,
                            textcoords="offset points", xytext=(3, 3))
    ax.set_yscale("log")
    ax.set_xlabel(f"recall@{k} (vs exact)")
    ax.set_ylabel("queries/s (batch, log)")
    ax.set_title(f"FAISS on {data['n']:,} × {data['dim']} (labels: nprobe / ef_search)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", "--n", dest="n", type=int, default=1_000_000, help="gallery rows")
    ap.add_argument("--dim", type=int, default=512, help="feature size (ResNet-18: 512; "
                    "ResNet-50: 2048)")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--types", nargs="+", default=["exact", "ivf", "hnsw"],
                    choices=["exact", "ivf", "hnsw"])
    ap.add_argument("--nlist", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--nprobe", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    ap.add_argument("--m", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    ap.add_argument("--ef-construction", type=int, default=40)
    ap.add_argument("--passes", type=int, default=2, help="timed passes per setting (best)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--auto", action="store_true", help="also time --type auto")
    ap.add_argument("--target-recall", type=float, default=0.95)
    ap.add_argument("--out", type=Path, required=True, help="results folder (resumable)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    t0 = time.perf_counter()
    x, q = synthetic(args.n, args.dim, args.queries, args.seed)
    logger.info("data %d × %d in %.1fs", args.n, args.dim, time.perf_counter() - t0)
    rec = Recorder(args.out, {"n": args.n, "dim": args.dim, "queries": args.queries,
                              "k": args.k, "seed": args.seed, "machine": machine()})
    faiss = import_faiss()
    exact = faiss.IndexFlatIP(args.dim)
    exact.add(x)
    _, truth = exact.search(q, args.k)  # the ground truth of every recall
    del exact
    run_grid(args, rec, x, q, truth)
    if args.auto:
        run_auto(args, rec, x)
    report(args.out, rec.rows, args.k)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
