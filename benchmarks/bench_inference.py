"""Test-feature throughput of the inference paths, in one run: eager, bf16, compiled, ONNX Runtime.

What is timed is one modality's feature extraction, ``model.extract(images, "rgb")`` (stem,
shared trunk, DF² fused feature, L2 normalisation; no flip), on a batch of ``--batch`` already
normalised images at 256 × 128, with the real DF²AM network: ``build_model(ModelConfig())``
(ResNet-50, last stride 1, P = 4) and ``pretrained="none"`` (random weights time the same as
ImageNet ones, which cannot be downloaded here).

Paths (``--paths``, default all, run in this order):

* ``eager_fp32``: ``model.extract`` as evaluation runs it.
* ``eager_bf16_cl``: the same under ``torch.autocast("cpu", torch.bfloat16)`` with the model
  and input in ``channels_last`` (oneDNN's native layout; bf16 only pays off on CPUs with
  AVX-512 bf16 / AMX).
* ``compile_fp32`` / ``compile_bf16_cl``: ``torch.compile`` (inductor, ``freezing=True`` so the
  weights become constants that oneDNN prepacks) of the same computation. The first call's
  time (compilation) is reported separately and not counted in images/s.
* ``onnxruntime_fp32``: the graph of :func:`df2am.deploy.export.export_onnx` on ONNX Runtime's
  CPU provider, ``--threads`` intra-op threads. Export time is reported separately.

Each path gets ``--warmup`` untimed batches, then ``--repeats`` timed batches; the median
time per batch gives images/s. Every path's features are compared with eager fp32 (max abs
difference of the unit-norm rows) so a fast but wrong path shows. torch uses ``--threads``
threads too, so all paths get the same cores.

Usage::

    .venv/bin/python benchmarks/bench_inference.py                      # all paths, batch 16
    .venv/bin/python benchmarks/bench_inference.py --paths eager_fp32 onnxruntime_fp32
    .venv/bin/python benchmarks/bench_inference.py --json runs/bench_inference.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from df2am.config import ModelConfig
from df2am.deploy.export import InferenceGraph, export_onnx, onnx_session
from df2am.models import build_model

logger = logging.getLogger("bench_inference")

PATHS = ("eager_fp32", "eager_bf16_cl", "compile_fp32", "compile_bf16_cl", "onnxruntime_fp32")


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _cpu_flags() -> set[str]:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def _time(fn: Callable[[], Any], warmup: int, repeats: int) -> tuple[list[float], Any]:
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def _make_path(name: str, model: torch.nn.Module, x: torch.Tensor, args: argparse.Namespace,
               workdir: Path) -> tuple[Callable[[], torch.Tensor], dict[str, Any]]:
    """The callable of one path and its setup facts (compile/export seconds)."""
    info: dict[str, Any] = {}
    # extract()'s computation as a module without its eval()/train() toggling (which
    # torch.compile would trace into guards): the very module export_onnx traces.
    graph = InferenceGraph(model, "rgb", model.cfg.test_feature, False).eval()  # type: ignore[union-attr]

    if name == "eager_fp32":
        return (lambda: model.extract(x, "rgb", flip=False)), info
    if name in ("eager_bf16_cl", "compile_bf16_cl"):
        model.to(memory_format=torch.channels_last)  # in place: graph wraps the same model
        x_cl = x.contiguous(memory_format=torch.channels_last)

        run_bf16 = graph
        if name == "compile_bf16_cl":
            run_bf16 = torch.compile(graph, dynamic=False)

        def bf16() -> torch.Tensor:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                return run_bf16(x_cl)

        if name == "compile_bf16_cl":
            t0 = time.perf_counter()
            bf16()
            info["compile_s"] = round(time.perf_counter() - t0, 1)
        return bf16, info
    if name == "compile_fp32":
        model.to(memory_format=torch.contiguous_format)
        compiled = torch.compile(graph, dynamic=False)

        def fp32() -> torch.Tensor:
            with torch.no_grad():
                return compiled(x)

        t0 = time.perf_counter()
        fp32()
        info["compile_s"] = round(time.perf_counter() - t0, 1)
        return fp32, info
    if name == "onnxruntime_fp32":
        model.to(memory_format=torch.contiguous_format)
        t0 = time.perf_counter()
        path = export_onnx(model, workdir / "rgb.onnx", modality="rgb",
                           height=args.height, width=args.width, flip=False)
        info["export_s"] = round(time.perf_counter() - t0, 1)
        sess = onnx_session(path, threads=args.threads)
        x_np = x.contiguous().numpy()
        return (lambda: torch.from_numpy(sess.run(None, {"images": x_np})[0])), info
    raise SystemExit(f"unknown path {name!r}; choose from {PATHS}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--depth", type=int, default=50, choices=[18, 34, 50, 101])
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")

    torch.set_num_threads(args.threads)
    # Freezing folds the (inference-only) weights into the compiled graph, which lets
    # inductor prepack them for oneDNN: the main CPU-inference win of torch.compile.
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True

    torch.manual_seed(0)
    model = build_model(ModelConfig(depth=args.depth, pretrained="none"), num_classes=395).eval()
    x = torch.randn(args.batch, 3, args.height, args.width)
    flags = _cpu_flags()
    facts: dict[str, Any] = {
        "cpu": _cpu_name(),
        "amx_bf16": "amx_bf16" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "torch": torch.__version__,
        "threads": args.threads,
        "batch": args.batch,
        "size": f"{args.height}x{args.width}",
        "depth": args.depth,
        "loadavg_before": os.getloadavg(),
    }
    with contextlib.suppress(ImportError):
        import onnxruntime

        facts["onnxruntime"] = onnxruntime.__version__
    logger.info("%s", facts)

    results: dict[str, dict[str, Any]] = {}
    reference: torch.Tensor | None = None
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.paths:
            t_setup = time.perf_counter()
            fn, info = _make_path(name, model, x, args, Path(tmp))
            times, out = _time(fn, args.warmup, args.repeats)
            med = statistics.median(times)
            row = {"median_s": round(med, 4), "img_per_s": round(args.batch / med, 2),
                   "best_img_per_s": round(args.batch / min(times), 2), **info,
                   "setup_and_run_s": round(time.perf_counter() - t_setup, 1)}
            out = out.float()
            if reference is None and name == "eager_fp32":
                reference = out
            if reference is not None:
                row["max_abs_diff_vs_eager_fp32"] = float((out - reference).abs().max())
            results[name] = row
            logger.info("%s: %s", name, row)
    facts["loadavg_after"] = os.getloadavg()

    base = results.get("eager_fp32", {}).get("img_per_s")
    print(f"\n{facts['cpu']}, amx_bf16={facts['amx_bf16']}, torch {facts['torch']}, "
          f"onnxruntime {facts.get('onnxruntime', '-')}, {args.threads} threads, batch "
          f"{args.batch}, {facts['size']}, ResNet-{args.depth} DF²AM")
    print(f"load average before {facts['loadavg_before']}, after {facts['loadavg_after']}")
    print("| path | images/s (median) | best | × eager fp32 | setup | max abs diff |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, row in results.items():
        ratio = f"{row['img_per_s'] / base:.2f}" if base else "-"
        setup = (f"compile {row['compile_s']} s" if "compile_s" in row
                 else f"export {row['export_s']} s" if "export_s" in row else "-")
        diff = row.get("max_abs_diff_vs_eager_fp32")
        print(f"| {name} | {row['img_per_s']:.1f} | {row['best_img_per_s']:.1f} | {ratio} | "
              f"{setup} | {'-' if diff is None else f'{diff:.1e}'} |")
    if base:
        best = max(results, key=lambda k: results[k]["img_per_s"])
        print(f"best: {best}, {results[best]['img_per_s'] / base:.2f}× eager fp32 (goal ≥ 2.5×)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"facts": facts, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
