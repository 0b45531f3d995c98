"""Benchmark: vectorised ``df2am.evaluation`` vs. a plain per-query loop of the same definition.

Cases (figures go to docs/benchmarks.md, section "Evaluation"):

- (a) SYSU-MM01 size: 3,803 queries (cams 3/6) × 301 gallery (cams 1/2/4/5), 96 ids, 10 trials
  with different galleries; ``evaluate(dist, q_ids, g_ids, q_cams, g_cams, protocol="sysu")``
  on the precomputed distance matrices, as a user calls it: the **first** calls in a fresh
  process, for each input kind — numpy float64, numpy float32, torch (CPU) float64, torch
  float32 — against a loop written like the reference ``eval_sysu`` (whole-matrix argsort,
  then a Python loop over queries with ``np.unique`` for the deduplicated CMC), also in a fresh
  process on the same data. float64 distances are computed in float64 (not widened float32).
- (b) large: 20,000 queries × 100,000 gallery, 256-d features, SYSU protocol;
  ``evaluate_features`` (cosine, chunked: the 20,000 × 100,000 matrix never exists). The
  reference loop needs the whole matrix (8 GB fp32 + 16 GB int64 argsort), so the loop baseline
  runs on the first ``--b-loop-queries`` queries (their distance block included in its time)
  and is extrapolated linearly to 20,000 (reported as such).

Every (case, method, input kind) runs in its own fresh subprocess, so its time includes every
first-call cost and its peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, includes the
~0.3–0.4 GiB of importing torch) is its own. The loop sums like the library (each query's
precisions one by one in rank order, per-query values with ``math.fsum``), so results are
checked for exact equality (CMC arrays, mAP and mINP as floats). Each figure is printed with
the 1-minute load average (``os.getloadavg``) at its start and end: on a shared machine only
ratios from the same invocation compare.

Usage::

    python benchmarks/bench_evaluation.py              # both cases
    python benchmarks/bench_evaluation.py --case a     # just (a)
    python benchmarks/bench_evaluation.py --case a --processes 3   # median of 3 processes
    python benchmarks/bench_evaluation.py --case a --repeats 3   # + best warm run of 3
    python benchmarks/bench_evaluation.py --case b --b-loop-queries 200
    python benchmarks/bench_evaluation.py --device cuda   # vectorised side on the GPU
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

A_IDS, A_QUERY, A_GALLERY, A_TRIALS, A_DIM = 96, 3803, 301, 10, 256
# Input kinds of (a): (container, dtype).
A_KINDS = (("numpy", "float64"), ("numpy", "float32"), ("torch", "float64"), ("torch", "float32"))
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


def case_a_data(dtype: str = "float32"):
    """Query ids/cams and 10 trial galleries (ids, cams, distance matrix of ``dtype``).

    float64 distances are the product of the (float32) features computed in float64: genuine
    float64 values, not float32 ones widened.
    """
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
        if dtype == "float64":
            trials.append(-(q_feats.astype(np.float64) @ g_feats.astype(np.float64).T))
        else:
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
    # AP: the reference sums cmc/rank over the whole list (numpy's pairwise sum); summing the
    # matches' precisions one by one in rank order (cumsum is sequential) is the library's
    # order, so the two compare exactly. Same work.
    hits = np.flatnonzero(orig)
    ap = np.cumsum(cmc[hits] / (hits + 1.0))[-1] / orig.sum()
    return np.minimum(new_cmc, 1), ap, inp


def loop_eval_matrix(dist, q_pids, g_pids, q_cams, g_cams, max_rank=MAX_RANK):
    indices = np.argsort(dist, axis=1, kind="stable")
    return _loop_finish([_loop_one(indices[i], q_pids[i], q_cams[i], g_pids, g_cams, max_rank)
                         for i in range(dist.shape[0])])


def _loop_finish(rows):
    rows = [r for r in rows if r is not None]
    cmc = np.sum([r[0] for r in rows], axis=0) / len(rows)
    n = len(rows)
    return cmc, math.fsum(float(r[1]) for r in rows) / n, math.fsum(float(r[2]) for r in rows) / n


# ------------------------------------------------------------------------------------------
# workers (one per fresh subprocess)


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _load() -> float:
    return os.getloadavg()[0]


def _same(a, b) -> bool:
    """Exactly equal CMC, mAP and mINP."""
    return bool(np.array_equal(np.asarray(a[0]), np.asarray(b[0])) and a[1] == b[1]
                and a[2] == b[2])


def _timed_runs(run, repeats: int) -> dict:
    """Time ``run()`` ``repeats`` times; the first is the first call in this process."""
    out: dict = {"load_start": _load()}
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - t0)
    out.update(load_end=_load(), seconds_first=times[0], seconds_all=times,
               seconds_warm_best=min(times[1:]) if repeats > 1 else None)
    return out | {"result": result}


def _worker_a(name: str, device: str, repeats: int) -> dict:
    import torch

    from df2am.evaluation import aggregate_trials, evaluate

    method, container, dtype = name.split(":")
    q_ids, q_cams, g_ids, g_cams, trials = case_a_data(dtype)
    out: dict = {"rss_after_data_gib": _peak_gib()}
    if method == "a_vec":
        mats = trials if container == "numpy" else [torch.from_numpy(d).to(device)
                                                     for d in trials]
        if device == "cuda":
            torch.cuda.synchronize()
        first_call: list[float] = []

        def run():
            res = []
            for d in mats:
                t0 = time.perf_counter()
                res.append(evaluate(d, q_ids, g_ids, q_cams, g_cams, protocol="sysu",
                                    max_rank=MAX_RANK))
                first_call.append(time.perf_counter() - t0)
            out["summary"] = aggregate_trials(res).to_dict()
            return [(r.cmc.tolist(), r.mAP, r.mINP) for r in res]

        out.update(_timed_runs(run, repeats))
        out["seconds_first_call"] = first_call[0]
    else:
        def run():
            res = [loop_eval_matrix(d, q_ids, g_ids, q_cams, g_cams) for d in trials]
            return [(cmc.tolist(), m_ap, m_inp) for cmc, m_ap, m_inp in res]

        out.update(_timed_runs(run, repeats))
    out["torch_threads"] = torch.get_num_threads()
    return out


def _worker_b(name: str, device: str, b_loop_queries: int) -> dict:
    import torch

    from df2am.evaluation import evaluate, evaluate_features, pairwise_distance

    q_ids, q_cams, q_feats, g_ids, g_cams, g_feats = case_b_data()
    out: dict = {"rss_after_data_gib": _peak_gib(), "torch_threads": torch.get_num_threads(),
                 "load_start": _load()}
    if name == "b_vec":
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
    else:
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
    out["load_end"] = _load()
    return out


def worker(name: str, device: str, repeats: int, b_loop_queries: int,
           threads: int | None) -> dict:
    if threads:
        import torch

        torch.set_num_threads(threads)
    out = (_worker_a(name, device, repeats) if name.startswith("a_")
           else _worker_b(name, device, b_loop_queries))
    out["worker"] = name
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


def _loads(r: dict) -> str:
    return f"load {r['load_start']:.2f}->{r['load_end']:.2f}"


def _median_run(runs: list[dict]) -> dict:
    """The run with the median first-run time (of fresh processes), with the spread added."""
    times = sorted(r["seconds_first"] for r in runs)
    best = sorted(runs, key=lambda r: r["seconds_first"])[(len(runs) - 1) // 2]
    return best | {"seconds_first_min_max": (times[0], times[-1]),
                   "loads": [(r["load_start"], r["load_end"]) for r in runs]}


def _a_line(name: str, r: dict) -> str:
    lo, hi = r["seconds_first_min_max"]
    loads = ", ".join(f"{a:.2f}->{b:.2f}" for a, b in r["loads"])
    spread = f" [{lo:.3f}..{hi:.3f}]" if len(r["loads"]) > 1 else ""
    return (f"    {name:14s} {r['seconds_first']:.3f} s{spread} (load {loads})  peak RSS "
            f"{r['peak_rss_gib']:.2f} GiB")


def _case_a(args) -> dict:
    report: dict = {}
    print(f"(a) SYSU size {A_QUERY} x {A_GALLERY}, {A_TRIALS} trials, first calls in a fresh "
          f"process each (median of {args.processes} processes):")
    for dtype in ("float64", "float32"):
        names = [f"a_loop:numpy:{dtype}"] + [f"a_vec:{c}:{d}" for c, d in A_KINDS if d == dtype]
        runs: dict[str, list[dict]] = {n: [] for n in names}
        for _ in range(args.processes):  # interleaved, so load drifts hit every method alike
            for n in names:
                runs[n].append(_run_worker(n, args))
        loop = _median_run(runs[names[0]])
        print(_a_line(f"loop {dtype}:", loop))
        for n in names[1:]:
            vec = _median_run(runs[n])
            equal = all(_same(a, b) for r in runs[n]
                        for a, b in zip(r["result"], loop["result"], strict=True))
            speedup = loop["seconds_first"] / vec["seconds_first"]
            warm = vec["seconds_warm_best"]
            warm_txt = "" if warm is None else f"; warm {warm:.3f} s"
            _, container, _ = n.split(":")
            print(_a_line(f"{container} {dtype}:", vec) + f"  first call "
                  f"{vec['seconds_first_call'] * 1e3:.1f} ms{warm_txt}  speed-up "
                  f"{speedup:.1f}x  identical: {equal}")
            report[f"{container}-{dtype}"] = {k: v for k, v in vec.items() if k != "result"} | {
                "speedup": speedup, "equal": equal}
        report[f"loop-{dtype}"] = {k: v for k, v in loop.items() if k != "result"}
    print(f"    mean over trials (float32): {vec['summary']}; torch threads "
          f"{vec['torch_threads']}")
    return report


def _case_b(args) -> dict:
    vec, loop = _run_worker("b_vec", args), _run_worker("b_loop", args)
    print(f"(b) {B_QUERY} x {B_GALLERY}, {B_DIM}-d, SYSU protocol, cosine "
          f"(torch threads {vec['torch_threads']}):")
    print(f"    vectorised (evaluate_features): {vec['seconds']:.1f} s ({_loads(vec)})  "
          f"peak RSS {vec['peak_rss_gib']:.2f} GiB  result {vec['result']}")
    print(f"    loop: {loop['seconds_subset']:.1f} s for {loop['queries_subset']} queries "
          f"-> ~{loop['seconds_extrapolated']:.0f} s extrapolated to {B_QUERY} ({_loads(loop)})  "
          f"peak RSS {loop['peak_rss_gib']:.2f} GiB; identical on the subset: "
          f"{loop['subset_equal']}")
    print(f"    speed-up vs extrapolated loop: "
          f"{loop['seconds_extrapolated'] / vec['seconds']:.1f}x")
    return {"vectorised": vec, "loop": loop}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", choices=["a", "b", "all"], default="all")
    p.add_argument("--device", default="cpu", help="device of the vectorised side (cpu/cuda)")
    p.add_argument("--repeats", type=int, default=1,
                   help="(a): runs per process; the first is the headline, the best of the "
                        "others is reported as 'warm'")
    p.add_argument("--processes", type=int, default=1,
                   help="(a): fresh processes per method; the median first run is reported")
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
        report["a"] = _case_a(args)
    if args.case in ("b", "all"):
        report["b"] = _case_b(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
