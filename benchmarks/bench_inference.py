"""Test-feature throughput of the inference paths in one process: eager, compiled, ONNX Runtime
fp32 and int8, bf16 where the CPU has it natively — and the int8 graph's ranking parity.

What is timed is one modality's feature extraction, ``model.extract(images, "rgb")`` (stem,
shared trunk, DF² fused feature, L2 normalisation; no flip), on one batch of ``--batch`` already
normalised images, for each ``--sizes`` entry ``HxW:DEPTH`` (default ``256x128:50`` — the
paper's ResNet-50 at the paper's input — and ``64x32:18``, the demo's ResNet-18 at its input).
The network is ``build_model(ModelConfig(depth=DEPTH))`` with random weights (``--checkpoint``
to time a trained one instead; random weights time the same).

Paths (``--paths``, default all):

* ``eager_fp32``: ``model.extract`` as evaluation runs it (the baseline of every ratio).
* ``compile_fp32``: ``torch.compile`` (inductor, ``freezing=True``: weights prepacked for
  oneDNN) of the same computation; compile time reported apart, not in images/s.
* ``onnxruntime_fp32``: the graph of ``df2am export`` on ONNX Runtime's CPU provider (all
  graph optimisations, intra-op threads = ``--threads``).
* ``onnxruntime_int8``: that graph after ``df2am export --int8`` (static QDQ, per-channel int8
  weights, 7-bit weights, uint8 activations calibrated on ``--calibration-images`` training
  images of the modality from the parity dataset). The script prints which operators ORT
  runs in int8 (``QLinearConv`` etc. in its optimised graph) and the ranking parity (below).
* ``eager_bf16_cl`` / ``compile_bf16_cl``: bf16 autocast + channels_last, eager and compiled —
  **only where the CPU has bf16 natively** (AVX-512 bf16 / AMX, ``cpu_has_native_bf16``);
  elsewhere bf16 is emulated (≈ 20× slower than fp32) and the script prints why it skips them.

Timing: every path gets ``--warmup`` untimed batches; then ``--repeats`` rounds, each timing
one batch of every path in turn (interleaved, so load from other processes hits all paths
alike); the median per path gives images/s and the ratio to eager fp32. Every path's features
are compared with eager fp32 (max abs difference of the unit rows).

**int8 ranking parity**: the SYSU-MM01 all-search protocol (``--parity-trials`` trials) on a
synthetic SYSU-MM01 tree (``--synthetic-ids`` identities, written once into a temp folder, or
``--parity-root``) evaluated with the PyTorch fp32 model and with the int8 graphs of both
streams (each calibrated on its modality's training images): mAP and Rank-1 of both and the
difference (goal: within 0.5 points). With random weights this checks the quantisation's
effect on *a* ranking; pass ``--checkpoint`` (e.g. the demo's ``model_final.pt`` for the
64x32 size) and ``--parity-root`` (its data) for a trained model's.

Usage::

    .venv/bin/python benchmarks/bench_inference.py                    # both sizes, all paths
    .venv/bin/python benchmarks/bench_inference.py --sizes 64x32:18 --batch 8 --repeats 2
    .venv/bin/python benchmarks/bench_inference.py --sizes 64x32:18 \\
        --checkpoint runs/demo/model_final.pt --parity-root runs/demo/data/synthetic_sysu
    .venv/bin/python benchmarks/bench_inference.py --json runs/bench_inference.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from df2am.config import Config, ModelConfig
from df2am.deploy.export import InferenceGraph, export_onnx, onnx_session, physical_cores
from df2am.deploy.quantize import optimized_ops, quantize_onnx, ranking_parity
from df2am.models import build_model
from df2am.train.precision import cpu_has_native_bf16

logger = logging.getLogger("bench_inference")

PATHS = ("eager_fp32", "compile_fp32", "onnxruntime_fp32", "onnxruntime_int8",
         "eager_bf16_cl", "compile_bf16_cl")
BF16_PATHS = ("eager_bf16_cl", "compile_bf16_cl")
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_facts(threads: int) -> dict[str, Any]:
    """CPU name (``lscpu``'s Model name), the vector/bf16 flags, threads, load average."""
    name = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        name = next((ln.split(":", 1)[1].strip() for ln in out.splitlines()
                     if ln.startswith("Model name")), name)
    flags: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    facts = {"cpu": name, "flags": [f for f in FLAGS if f in flags],
             "native_bf16": bool(cpu_has_native_bf16()), "threads": threads,
             "physical_cores": physical_cores(), "logical_cpus": os.cpu_count(),
             "torch": torch.__version__, "loadavg_before": os.getloadavg()}
    with contextlib.suppress(ImportError):
        import onnxruntime

        facts["onnxruntime"] = onnxruntime.__version__
    return facts


def parse_size(text: str) -> tuple[int, int, int]:
    """``HxW:DEPTH`` → (H, W, depth); depth defaults to 50."""
    size, _, depth = text.partition(":")
    h, w = (int(v) for v in size.lower().split("x"))
    return h, w, int(depth or 50)


def synthetic_root(base: Path, ids: int) -> Path:
    """A synthetic SYSU-MM01 tree (128 × 64 images, resized by the pipeline) for calibration
    and the parity evaluation."""
    from df2am.data.synthetic import write_synthetic

    return write_synthetic(base / f"sysu_{ids}", "sysu", num_ids=ids, seed=0, size=(128, 64))


def modality_images(root: Path, modality: str, limit: int) -> list[Path]:
    """Training images of one modality (SYSU: RGB cams 1, 2, 4, 5; IR cams 3, 6)."""
    from df2am.data.protocol import train_records

    files = [root / r.path for r in train_records("sysu", root) if r.modality == modality]
    return files[:: max(1, len(files) // limit)][:limit]


def load_or_build(args: argparse.Namespace, h: int, w: int, depth: int) -> tuple[Any, Config]:
    """The timed network and its config (a checkpoint's, or a random ResNet-``depth``)."""
    if args.checkpoint is not None:
        from df2am.deploy.api import load_model

        model, cfg = load_model(args.checkpoint)
        if (cfg.data.height, cfg.data.width) != (h, w):
            raise SystemExit(f"--checkpoint is {cfg.data.height}x{cfg.data.width}, not {h}x{w}")
        return model.eval(), cfg
    torch.manual_seed(0)
    cfg = Config()
    cfg.model = ModelConfig(depth=depth, pretrained="none")
    cfg.data.height, cfg.data.width = h, w
    cfg.eval.trials = args.parity_trials
    return build_model(cfg.model, num_classes=395).eval(), cfg


def graphs(model: Any, cfg: Config, root: Path, work: Path, args: argparse.Namespace
           ) -> dict[str, dict[str, Path]]:
    """fp32 and int8 graphs of both streams; the int8 ones calibrated on their modality."""
    out: dict[str, dict[str, Path]] = {"fp32": {}, "int8": {}}
    for m in ("rgb", "ir"):
        t0 = time.perf_counter()
        out["fp32"][m] = export_onnx(model, work / f"{m}.onnx", modality=m, cfg=cfg,
                                     height=cfg.data.height, width=cfg.data.width, flip=False)
        t1 = time.perf_counter()
        out["int8"][m] = quantize_onnx(out["fp32"][m], work / f"{m}_int8.onnx",
                                       calibration=modality_images(root, m,
                                                                   args.calibration_images))
        logger.info("%s: export %.1f s, int8 calibration %.1f s", m, t1 - t0,
                    time.perf_counter() - t1)
    return out


def make_paths(names: list[str], model: Any, x: torch.Tensor, g: dict[str, dict[str, Path]],
               threads: int) -> tuple[dict[str, Callable[[], torch.Tensor]], dict[str, Any]]:
    """The callable of every path and its one-off costs (compile seconds)."""
    graph = InferenceGraph(model, "rgb", model.cfg.test_feature, False).eval()
    fns: dict[str, Callable[[], torch.Tensor]] = {}
    info: dict[str, Any] = {}
    x_cl = x.contiguous(memory_format=torch.channels_last)
    # bf16 runs a channels_last copy (oneDNN's native layout), so the fp32 paths keep NCHW.
    graph_cl = InferenceGraph(copy.deepcopy(model).to(memory_format=torch.channels_last),
                              "rgb", model.cfg.test_feature, False).eval()
    for name in names:
        if name == "eager_fp32":
            fns[name] = lambda: model.extract(x, "rgb", flip=False)
        elif name.startswith("onnxruntime"):
            sess = onnx_session(g[name.split("_")[1]]["rgb"], threads=threads)
            fns[name] = (lambda s=sess: torch.from_numpy(s.run(None, {"images": x.numpy()})[0]))
        elif name == "compile_fp32":
            compiled = torch.compile(graph, dynamic=False)
            fns[name] = _no_grad(lambda c=compiled: c(x))
        elif name in BF16_PATHS:
            run = torch.compile(graph_cl, dynamic=False) if name.startswith("compile") \
                else graph_cl
            fns[name] = _no_grad(lambda r=run: _bf16(r, x_cl))
        if name.startswith("compile"):
            t0 = time.perf_counter()
            fns[name]()
            info[name] = {"compile_s": round(time.perf_counter() - t0, 1)}
    return fns, info


def _no_grad(fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        with torch.no_grad():
            return fn()
    return run


def _bf16(run: Callable[[torch.Tensor], torch.Tensor], x_cl: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return run(x_cl)


def time_paths(fns: dict[str, Callable[[], torch.Tensor]], warmup: int, repeats: int
               ) -> tuple[dict[str, list[float]], dict[str, torch.Tensor]]:
    """Interleaved rounds: every path once per round (after ``warmup`` untimed calls each)."""
    outs = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            outs[name] = fn()
    times: dict[str, list[float]] = {n: [] for n in fns}
    for r in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t0)
        logger.info("round %d/%d: %s", r + 1, repeats,
                    ", ".join(f"{n} {t[-1]:.3f}s" for n, t in times.items()))
    return times, outs


def bench_size(h: int, w: int, depth: int, args: argparse.Namespace, root: Path,
               work: Path) -> dict[str, Any]:
    """Every path at one size: rows, int8 operator counts, ranking parity."""
    model, cfg = load_or_build(args, h, w, depth)
    names = [p for p in args.paths if p not in BF16_PATHS or args.native_bf16]
    # Calibration: training images of the parity dataset (never its test images).
    cal_root = args.parity_root or root
    g = (graphs(model, cfg, cal_root, work, args) if any(n.startswith("onnx") for n in names)
         else {})
    fns, info = make_paths(names, model, torch.randn(args.batch, 3, h, w), g, args.threads)
    times, outs = time_paths(fns, args.warmup, args.repeats)
    ref = outs.get("eager_fp32")
    base = statistics.median(times["eager_fp32"]) if "eager_fp32" in times else None
    rows = {}
    for name, t in times.items():
        med = statistics.median(t)
        rows[name] = {"img_per_s": round(args.batch / med, 2),
                      "best_img_per_s": round(args.batch / min(t), 2),
                      "x_eager_fp32": round(base / med, 2) if base else None,
                      "max_abs_diff": (float((outs[name].float() - ref).abs().max())
                                       if ref is not None else None), **info.get(name, {})}
    result: dict[str, Any] = {"size": f"{h}x{w}", "depth": depth, "rows": rows}
    if g:
        result["int8_ops"] = optimized_ops(g["int8"]["rgb"], threads=args.threads)
        if args.parity:
            result["parity"] = ranking_parity(
                model, cfg, args.parity_root or root, list(g["int8"].values()),
                trials=args.parity_trials, threads=args.threads)
    return result


def print_size(res: dict[str, Any], batch: int) -> None:
    print(f"\n### {res['size']}, ResNet-{res['depth']} DF²AM, batch {batch}")
    print("| path | images/s (median) | best | × eager fp32 | one-off | max abs diff |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, r in res["rows"].items():
        one_off = f"compile {r['compile_s']} s" if "compile_s" in r else "-"
        diff = "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.1e}"
        print(f"| {name} | {r['img_per_s']:.1f} | {r['best_img_per_s']:.1f} | "
              f"{r['x_eager_fp32'] or '-'} | {one_off} | {diff} |")
    if "int8_ops" in res:
        ops = res["int8_ops"]
        print(f"int8 graph as ORT runs it: {ops.get('QLinearConv', 0)} QLinearConv, "
              f"{ops.get('Conv', 0)} float Conv, {ops.get('QLinearAdd', 0)} QLinearAdd; "
              f"all ops: {json.dumps(ops)}")
    if "parity" in res:
        p = res["parity"]
        print(f"int8 ranking parity (SYSU all-search, {p['trials']} trials): mAP "
              f"{p['graphs']['mAP']:.2f} vs fp32 {p['fp32']['mAP']:.2f} "
              f"({p['delta']['mAP']:+.2f}), Rank-1 {p['graphs']['rank1']:.2f} vs "
              f"{p['fp32']['rank1']:.2f} ({p['delta']['rank1']:+.2f}); within "
              f"{p['tolerance']} points: {p['ok']}")
    best = max(res["rows"], key=lambda n: res["rows"][n]["img_per_s"])
    if res["rows"][best]["x_eager_fp32"]:
        print(f"best: {best}, {res['rows'][best]['x_eager_fp32']}× eager fp32 (goal ≥ 2.5×)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--sizes", nargs="+", default=["256x128:50", "64x32:18"],
                    help="HxW:DEPTH entries (default 256x128:50 64x32:18)")
    ap.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=physical_cores(),
                    help="torch and ONNX Runtime threads (default: physical cores)")
    ap.add_argument("--checkpoint", type=Path, help="time (and check parity of) this model")
    ap.add_argument("--parity-root", type=Path, help="SYSU-MM01-layout root for the parity "
                    "evaluation (default: a synthetic one)")
    ap.add_argument("--synthetic-ids", type=int, default=60)
    ap.add_argument("--calibration-images", type=int, default=200)
    ap.add_argument("--parity-trials", type=int, default=10)
    ap.add_argument("--no-parity", dest="parity", action="store_false")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True  # weights become constants oneDNN prepacks
    facts = cpu_facts(args.threads)
    args.native_bf16 = facts["native_bf16"]
    print(f"CPU: {facts['cpu']}; flags: {' '.join(facts['flags']) or '-'}; {args.threads} "
          f"threads ({facts['physical_cores']} physical cores, {facts['logical_cpus']} logical "
          f"CPUs); load average {facts['loadavg_before']}; torch {facts['torch']}, "
          f"onnxruntime {facts.get('onnxruntime', '-')}", flush=True)
    if not args.native_bf16 and set(args.paths) & set(BF16_PATHS):
        print("bf16 paths skipped: this CPU has no native bf16 (no avx512_bf16 / amx_bf16); "
              "bf16 autocast would be emulated, ≈ 20× slower than fp32", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        root = synthetic_root(Path(tmp), args.synthetic_ids)
        for text in args.sizes:
            h, w, depth = parse_size(text)
            res = bench_size(h, w, depth, args, root, Path(tmp))
            results.append(res)
            print_size(res, args.batch)
    facts["loadavg_after"] = os.getloadavg()
    print(f"\nload average before {facts['loadavg_before']}, after {facts['loadavg_after']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"facts": facts, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
