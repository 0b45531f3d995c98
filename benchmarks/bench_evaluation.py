"""Benchmark: vectorised ``df2am.evaluation`` vs. a plain per-query loop of the same definition.

Cases (figures go to docs/benchmarks.md, section "Evaluation"):

- (a) SYSU-MM01 size: 3,803 queries (cams 3/6) × 301 gallery (cams 1/2/4/5), 96 ids, 10 trials
  with different galleries; ``evaluate`` on the precomputed distance matrices vs. a loop
  written like the reference ``eval_sysu`` (whole-matrix argsort, then a Python loop over
  queries with ``np.unique`` for the deduplicated CMC).
- (b) large: 20,000 queries × 100,000 gallery, 256-d features, SYSU protocol;
  ``evaluate_features`` (cosine, chunked: the 20,000 × 100,000 matrix never exists). The
  reference loop needs the whole matrix (8 GB fp32 + 16 GB int64 argsort), so the loop baseline
  runs on the first ``--b-loop-queries`` queries (their distance block included in its time)
  and is extrapolated linearly to 20,000 (reported as such).

Every (case, method) runs in a fresh subprocess, so its peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, includes the ~0.3–0.4 GiB of importing torch)
is its own. Both methods' results are checked for equality.

Usage::

    python benchmarks/bench_evaluation.py              # both cases
    python benchmarks/bench_evaluation.py --case a     # just (a)
    python benchmarks/bench_evaluation.py --case b --b-loop-queries 200
    python benchmarks/bench_evaluation.py --device cuda   # vectorised side on the GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

import numpy as np

A_IDS, A_QUERY, A_GALLERY, A_TRIALS, A_DIM = 96, 3803, 301, 10, 256
# Feature noise: makes Rank-1 / mAP land in the published range (tens of percent), so rankings
# (and the loop's work) are realistic rather than trivially perfect.
NOISE = 2.5
B_QUERY, B_GALLERY, B_DIM, B_IDS = 20_000, 100_000, 256, 2_000
MAX_RANK = 20


# ------------------------------------------------------------------------------------------
# synthetic data with a realistic id / camera structure


def _features(rng: np.random.Generator, centres: np.ndarray, ids: np.ndarray, shift: np.ndarray,
              noise: float) -> np.ndarray:
    """L2-normalised ``centre[id] + modality shift + noise`` features (fp32)."""
    x = centres[ids] + shift + noise * rng.standard_normal((len(ids), centres.shape[1]),
                                                           dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def case_a_data():
    """Query ids/cams/features and 10 trial galleries (ids, cams, distance matrix)."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((A_IDS, A_DIM), dtype=np.float32)
    ir_shift = 0.8 * rng.standard_normal(A_DIM, dtype=np.float32)
    # ~40 IR query images per id over cams 3 and 6 (id ascending, cam3 before cam6)
    q_ids = np.sort(rng.integers(0, A_IDS, A_QUERY))
    q_cams = np.where(rng.random(A_QUERY) < 0.5, 3, 6)
    order = np.lexsort((q_cams, q_ids))
    q_ids, q_cams = q_ids[order], q_cams[order]
    q_feats = _features(rng, centres, q_ids, ir_shift, NOISE)
    # 301 of the 96 × 4 (id, RGB camera) folders exist; one image of each per trial
    pairs = [(i, c) for i in range(A_IDS) for c in (1, 2, 4, 5)]
    keep = np.sort(rng.choice(len(pairs), A_GALLERY, replace=False))
    g_ids = np.array([pairs[k][0] for k in keep])
    g_cams = np.array([pairs[k][1] for k in keep])
    trials = []
    for _ in range(A_TRIALS):
        g_feats = _features(rng, centres, g_ids, 0.0, NOISE)
        trials.append(-(q_feats @ g_feats.T))  # the reference's distance: -q·gᵀ
    return q_ids, q_cams, g_ids, g_cams, trials


def case_b_data():
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((B_IDS, B_DIM), dtype=np.float32)
    ir_shift = 0.8 * rng.standard_normal(B_DIM, dtype=np.float32)
    q_ids = rng.integers(0, B_IDS, B_QUERY)
    q_cams = np.where(rng.random(B_QUERY) < 0.5, 3, 6)
    g_ids = rng.integers(0, B_IDS, B_GALLERY)
    g_cams = rng.choice(np.array([1, 2, 4, 5]), B_GALLERY)
    q_feats = _features(rng, centres, q_ids, ir_shift, NOISE)
    g_feats = np.empty((B_GALLERY, B_DIM), dtype=np.float32)
    for s in range(0, B_GALLERY, 10_000):  # in blocks: keeps the generator's peak small
        g_feats[s:s + 10_000] = _features(rng, centres, g_ids[s:s + 10_000], 0.0, NOISE)
    return q_ids, q_cams, q_feats, g_ids, g_cams, g_feats


# ------------------------------------------------------------------------------------------
# the baseline: a per-query loop written like the reference eval_sysu


def _loop_one(order: np.ndarray, q_pid: int, q_cam: int, g_pids: np.ndarray,
              g_cams: np.ndarray, max_rank: int):
    """One query of the reference ``eval_sysu`` body (stable order given)."""
    remove = (q_cam == 3) & (g_cams[order] == 2)
    keep = np.invert(remove)
    labels = g_pids[order][keep]
    first_idx = np.unique(labels, return_index=True)[1]
    dedup = labels[np.sort(first_idx)]
    new_cmc = (dedup == q_pid).astype(np.int32).cumsum()[:max_rank]
    new_cmc = np.pad(new_cmc, (0, max_rank - len(new_cmc)), mode="edge")  # constant tail
    orig = (labels == q_pid).astype(np.int32)
    if not orig.any():
        return None
    cmc = orig.cumsum()
    pos_max = int(np.max(np.where(orig == 1)))
    inp = cmc[pos_max] / (pos_max + 1.0)
    tmp = cmc / (np.arange(len(cmc)) + 1.0) * orig
    ap = tmp.sum() / orig.sum()
    return np.minimum(new_cmc, 1), ap, inp


def loop_eval_matrix(dist, q_pids, g_pids, q_cams, g_cams, max_rank=MAX_RANK):
    indices = np.argsort(dist, axis=1, kind="stable")
    return _loop_finish([_loop_one(indices[i], q_pids[i], q_cams[i], g_pids, g_cams, max_rank)
                         for i in range(dist.shape[0])])


def _loop_finish(rows):
    rows = [r for r in rows if r is not None]
    cmc = np.sum([r[0] for r in rows], axis=0) / len(rows)
    return cmc, float(np.mean([r[1] for r in rows])), float(np.mean([r[2] for r in rows]))


# ------------------------------------------------------------------------------------------
# workers (one per fresh subprocess)


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _same(a, b) -> bool:
    return bool(np.array_equal(np.asarray(a[0]), np.asarray(b[0])) and abs(a[1] - b[1]) < 1e-9
                and abs(a[2] - b[2]) < 1e-9)


def worker(name: str, device: str, repeats: int, b_loop_queries: int,
           threads: int | None) -> dict:
    import torch

    from df2am.evaluation import (
        aggregate_trials,
        evaluate,
        evaluate_features,
        pairwise_distance,
    )

    if threads:
        torch.set_num_threads(threads)

    out: dict = {"worker": name, "torch_threads": torch.get_num_threads()}
    if name.startswith("a_"):
        q_ids, q_cams, g_ids, g_cams, trials = case_a_data()
        out["rss_after_data_gib"] = _peak_gib()
        times = []
        for _ in range(repeats):
            if name == "a_vec":
                mats = [torch.from_numpy(d).to(device) for d in trials]
                if device == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                res = [evaluate(d, q_ids, g_ids, q_cams, g_cams, protocol="sysu",
                                max_rank=MAX_RANK) for d in mats]
                summary = aggregate_trials(res)
                times.append(time.perf_counter() - t0)
                metrics = [(r.cmc, r.mAP, r.mINP) for r in res]
                out["summary"] = summary.to_dict()
            else:
                t0 = time.perf_counter()
                metrics = [loop_eval_matrix(d, q_ids, g_ids, q_cams, g_cams) for d in trials]
                times.append(time.perf_counter() - t0)
        out["seconds_10_trials"] = min(times)
        out["seconds_all_repeats"] = times
        out["metrics"] = [(np.asarray(c).tolist(), m, i) for c, m, i in metrics]
    elif name == "b_vec":
        q_ids, q_cams, q_feats, g_ids, g_cams, g_feats = case_b_data()
        out["rss_after_data_gib"] = _peak_gib()
        qf, gf = torch.from_numpy(q_feats).to(device), torch.from_numpy(g_feats).to(device)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        r = evaluate_features(qf, gf, q_ids, g_ids, q_cams, g_cams, protocol="sysu",
                              metric="cosine", max_rank=MAX_RANK)
        out["seconds"] = time.perf_counter() - t0
        out["result"] = r.to_dict()
        out["num_valid_queries"] = r.num_valid_queries
        if device == "cuda":
            out["cuda_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    elif name == "b_loop":
        q_ids, q_cams, q_feats, g_ids, g_cams, g_feats = case_b_data()
        out["rss_after_data_gib"] = _peak_gib()
        n = b_loop_queries
        t0 = time.perf_counter()
        # The same fp32 distances as the vectorised side (one block for the subset): a
        # different matrix product (e.g. numpy's matvec) rounds differently and reorders the
        # near-ties of a 100,000-image gallery, which would change mAP in the 8th digit.
        dist = pairwise_distance(torch.from_numpy(q_feats[:n]), g_feats, "cosine").numpy()
        rows = []
        for i in range(n):
            order = np.argsort(dist[i], kind="stable")
            rows.append(_loop_one(order, q_ids[i], q_cams[i], g_ids, g_cams, MAX_RANK))
        loop = _loop_finish(rows)
        out["seconds_subset"] = time.perf_counter() - t0
        out["queries_subset"] = n
        out["seconds_extrapolated"] = out["seconds_subset"] * B_QUERY / n
        vec = evaluate(dist, q_ids[:n], g_ids, q_cams[:n], g_cams, protocol="sysu",
                       max_rank=MAX_RANK)
        out["subset_equal"] = _same(loop, (vec.cmc, vec.mAP, vec.mINP))
        t0 = time.perf_counter()
        evaluate_features(q_feats[:n], g_feats, q_ids[:n], g_ids, q_cams[:n], g_cams,
                          protocol="sysu", metric="cosine", max_rank=MAX_RANK)
        out["vec_seconds_subset"] = time.perf_counter() - t0
    out["peak_rss_gib"] = _peak_gib()
    return out


def _run_worker(name: str, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--device", args.device,
           "--repeats", str(args.repeats), "--b-loop-queries", str(args.b_loop_queries)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"worker {name} failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", choices=["a", "b", "all"], default="all")
    p.add_argument("--device", default="cpu", help="device of the vectorised side (cpu/cuda)")
    p.add_argument("--repeats", type=int, default=3, help="(a): best of this many runs")
    p.add_argument("--b-loop-queries", type=int, default=200,
                   help="(b): queries the loop baseline runs (extrapolated to 20,000)")
    p.add_argument("--threads", type=int,
                   help="torch intra-op threads of the vectorised side (default: torch's)")
    p.add_argument("--json", help="also write all results to this file")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.device, args.repeats, args.b_loop_queries,
                                args.threads)))
        return 0

    report: dict = {"python": platform.python_version(), "device": args.device,
                    "threads": args.threads}
    if args.case in ("a", "all"):
        vec, loop = _run_worker("a_vec", args), _run_worker("a_loop", args)
        equal = all(_same(a, b) for a, b in zip(vec["metrics"], loop["metrics"], strict=True))
        speedup = loop["seconds_10_trials"] / vec["seconds_10_trials"]
        print(f"(a) SYSU size {A_QUERY} x {A_GALLERY}, {A_TRIALS} trials "
              f"(best of {args.repeats}; torch threads {vec['torch_threads']}):")
        print(f"    vectorised: {vec['seconds_10_trials']:.3f} s  "
              f"peak RSS {vec['peak_rss_gib']:.2f} GiB")
        print(f"    loop:       {loop['seconds_10_trials']:.3f} s  "
              f"peak RSS {loop['peak_rss_gib']:.2f} GiB")
        print(f"    speed-up {speedup:.1f}x, identical results: {equal}")
        print(f"    mean over trials: {vec['summary']}")
        for r in (vec, loop):
            r.pop("metrics")
        report["a"] = {"vectorised": vec, "loop": loop, "speedup": speedup, "equal": equal}
    if args.case in ("b", "all"):
        vec, loop = _run_worker("b_vec", args), _run_worker("b_loop", args)
        print(f"(b) {B_QUERY} x {B_GALLERY}, {B_DIM}-d, SYSU protocol, cosine "
              f"(torch threads {vec['torch_threads']}):")
        print(f"    vectorised (evaluate_features): {vec['seconds']:.1f} s  "
              f"peak RSS {vec['peak_rss_gib']:.2f} GiB  result {vec['result']}")
        print(f"    loop: {loop['seconds_subset']:.1f} s for {loop['queries_subset']} queries "
              f"-> ~{loop['seconds_extrapolated']:.0f} s extrapolated to {B_QUERY}  "
              f"peak RSS {loop['peak_rss_gib']:.2f} GiB; identical on the subset: "
              f"{loop['subset_equal']}")
        print(f"    speed-up vs extrapolated loop: "
              f"{loop['seconds_extrapolated'] / vec['seconds']:.1f}x")
        report["b"] = {"vectorised": vec, "loop": loop}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
