"""Training-step throughput: DF²AM (two stems + DF² + all Eq. 4 losses) vs. a bare ResNet-50.

Both steps run in one process at the same batch, resolution, precision and memory format; the
two are interleaved (bare, DF²AM, bare, DF²AM, ...) so that load from other processes on a
shared machine hits both alike. Warm-up iterations are excluded; the median step time is
reported as images/s, with the ratio DF²AM / bare (target >= 0.90); on a busy machine the
ratios of the best steps and of the CPU time per step (``time.process_time``) are printed too,
as they are less disturbed by other processes.

* bare: torchvision ResNet-50, fc → num_classes, cross-entropy, SGD (momentum 0.9) step. Its
  last stride is ``--bare-last-stride`` (default: the same as DF²AM's, 1), so the ratio measures
  our model's overhead, not the 4× larger layer4 maps that last stride 1 costs by design.
* DF²AM: ``build_model(ModelConfig())`` (ResNet-50, last stride 1, P = 4), ``build_loss(
  LossConfig())`` (ID + triplet + λ·L_D + ζ·L_A), SGD over ``param_groups``.

Usage::

    .venv/bin/python benchmarks/bench_train_step.py                       # fp32 + bf16, batch 32
    .venv/bin/python benchmarks/bench_train_step.py --batch 64 --iters 10 --precision bf16
    .venv/bin/python benchmarks/bench_train_step.py --json out.json

The batch is ``--batch`` images: ``--batch/2`` RGB + ``--batch/2`` IR, 4 identities × 4 images
per modality at the default 32.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.models import resnet50

from df2am.config import LossConfig, ModelConfig
from df2am.losses import build_loss
from df2am.models import build_model
from df2am.models.backbone import set_last_stride


def _autocast(device: str, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device, dtype=torch.bfloat16)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _cpu_info() -> dict[str, Any]:
    model_name = platform.processor() or "unknown"
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and model_name in ("unknown", "x86_64", ""):
                    model_name = line.split(":", 1)[1].strip()
                if line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {
        "cpu": model_name,
        "amx_bf16": "amx_bf16" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "avx512f": "avx512f" in flags,
        "cores_visible": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


Step = Callable[[], tuple[float, float]]


def _make_steps(args: argparse.Namespace, precision: str) -> tuple[Step, Step]:
    """Build both models, optimisers and inputs; return two closures doing one step each."""
    device = args.device
    mf = torch.channels_last if args.channels_last else torch.contiguous_format
    half = args.batch // 2
    n_ids = max(half // args.per_id, 1)
    torch.manual_seed(0)
    rgb = torch.randn(half, 3, args.height, args.width, device=device).to(memory_format=mf)
    ir = torch.randn(half, 3, args.height, args.width, device=device).to(memory_format=mf)
    ids = torch.arange(half, device=device) // args.per_id % n_ids
    labels = torch.cat([ids, ids])
    images = torch.cat([rgb, ir]).contiguous(memory_format=mf)

    bare = resnet50(weights=None, num_classes=args.num_classes)
    set_last_stride(bare.layer4, args.bare_last_stride)
    bare = bare.to(device=device, memory_format=mf).train()
    bare_opt = torch.optim.SGD(bare.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    model = build_model(ModelConfig(), args.num_classes).to(device=device, memory_format=mf)
    model.train()
    criterion = build_loss(LossConfig())
    opt = torch.optim.SGD(
        model.param_groups(lr=0.01, backbone_lr_mult=0.1, weight_decay=5e-4), momentum=0.9
    )

    def bare_step() -> tuple[float, float]:
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        with _autocast(device, precision):
            loss = F.cross_entropy(bare(images), labels)
        bare_opt.zero_grad(set_to_none=True)
        loss.backward()
        bare_opt.step()
        _sync(device)
        return time.perf_counter() - t0, time.process_time() - c0

    def df2am_step() -> tuple[float, float]:
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        with _autocast(device, precision):
            loss = criterion(model(rgb, ir), labels).total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        return time.perf_counter() - t0, time.process_time() - c0

    return bare_step, df2am_step


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "args": vars(args),
        "machine": _cpu_info(),
        "loadavg_before": os.getloadavg(),
        "runs": [],
    }
    for precision in args.precision:
        bare_step, df2am_step = _make_steps(args, precision)
        for _ in range(args.warmup):
            bare_step()
            df2am_step()
        bare_t, df2_t, bare_c, df2_c = [], [], [], []
        for _ in range(args.iters):  # interleaved: contention hits both alike
            wall, cpu = bare_step()
            bare_t.append(wall)
            bare_c.append(cpu)
            wall, cpu = df2am_step()
            df2_t.append(wall)
            df2_c.append(cpu)
        tb, td = statistics.median(bare_t), statistics.median(df2_t)
        row = {
            "precision": precision,
            "memory_format": "channels_last" if args.channels_last else "contiguous",
            "bare_img_s": args.batch / tb,
            "df2am_img_s": args.batch / td,
            # median wall time: what a user sees; best (min) wall time and CPU time (summed over
            # threads) are less sensitive to other processes on a shared machine.
            "ratio": tb / td,
            "ratio_best": min(bare_t) / min(df2_t),
            "ratio_cpu": statistics.median(bare_c) / statistics.median(df2_c),
            "bare_step_s": bare_t,
            "df2am_step_s": df2_t,
            "bare_cpu_s": bare_c,
            "df2am_cpu_s": df2_c,
        }
        results["runs"].append(row)
        print(
            f"{precision:>5} {row['memory_format']:>13}  bare {row['bare_img_s']:7.2f} img/s  "
            f"DF2AM {row['df2am_img_s']:7.2f} img/s  ratio {row['ratio']:.3f} "
            f"(best-step ratio {row['ratio_best']:.3f}, CPU-time ratio {row['ratio_cpu']:.3f}; "
            f"median of {args.iters}; wall s bare {[round(t, 2) for t in bare_t]}, "
            f"DF2AM {[round(t, 2) for t in df2_t]})",
            flush=True,
        )
    results["loadavg_after"] = os.getloadavg()
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=32, help="total images (half RGB, half IR)")
    p.add_argument("--per-id", type=int, default=4, help="images per identity and modality")
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--num-classes", type=int, default=395, help="SYSU-MM01 has 395 train ids")
    p.add_argument("--iters", type=int, default=3, help="timed steps per model")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per model")
    p.add_argument("--precision", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    p.add_argument(
        "--no-channels-last",
        dest="channels_last",
        action="store_false",
        help="keep NCHW-contiguous tensors (default: channels_last)",
    )
    p.add_argument("--bare-last-stride", type=int, choices=[1, 2], default=1)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--json", default="", help="also write the results here")
    args = p.parse_args(argv)
    if args.batch < 2 or args.batch % 2:
        p.error("--batch must be an even number >= 2")
    if args.threads:
        torch.set_num_threads(args.threads)
    info = _cpu_info()
    print(
        f"# {info['cpu']} | amx_bf16={info['amx_bf16']} avx512_bf16={info['avx512_bf16']} | "
        f"{info['torch_threads']} threads | torch {info['torch']} | loadavg {os.getloadavg()}",
        flush=True,
    )
    print(
        f"# batch {args.batch} at {args.height}x{args.width}, {args.warmup} warm-up + "
        f"{args.iters} timed steps each, bare last stride {args.bare_last_stride}",
        flush=True,
    )
    results = run(args)
    print(f"# loadavg after {results['loadavg_after']}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
