"""One AGW training step: df2am's ``agw`` network vs. the reference ``embed_net``.

A step is forward + loss (cross-entropy on the BNNeck logits + weighted regularisation triplet
on the pooled feature, both over all rows) + backward + SGD step (momentum 0.9, Nesterov,
weight decay 5e-4, the backbone at 0.1 × lr), on the same batch — ``--ids`` identities ×
(``--per-modality`` RGB + ``--per-modality`` IR), default 8 × (4 + 4) = 64 images at 288 × 144,
the AGW recipe — at the same precision and memory format. The two steps are interleaved
(reference, df2am, reference, df2am, ...) so that load from other processes hits both alike;
warm-up steps are not timed; the ratio is reference time / df2am time (>= 1: df2am is no
slower), from the median wall time, the best step and the CPU time per step.

* df2am: ``build_model(ModelConfig(arch="agw", non_local=True, pooling="gem", ...))``,
  ``build_loss(LossConfig(triplet_type="wrt", triplet_mode="joint", id_mode="joint", ...))``,
  SGD over ``model.param_groups``.
* reference: with ``--reference PATH`` (a checkout of github.com/mangye16/
  Cross-Modal-Re-ID-baseline, e.g. ``git clone`` or ``git archive HEAD | tar -x``), its
  ``model.py`` (``embed_net(n, no_local='on', gm_pool='on')``; its ImageNet download is
  switched off: ``resnet50(pretrained=False)``) and ``loss.py`` (``TripletLoss_WRT``, falling
  back to a transcription when it does not run on this torch), SGD groups as its ``train.py``.
  Without ``--reference``: tests/models/reference_agw.py, an independent re-implementation of
  that ``embed_net`` (same modules, same forward), and the transcription of ``TripletLoss_WRT``
  — the output says which was used.

Usage::

    .venv/bin/python benchmarks/bench_agw_step.py                                  # fp32 (+ bf16)
    .venv/bin/python benchmarks/bench_agw_step.py --reference /path/to/Cross-Modal-Re-ID-baseline
    .venv/bin/python benchmarks/bench_agw_step.py --height 144 --width 72 --iters 2   # quick look

bf16 runs only where the CPU has it natively (AMX or AVX512-BF16), unless ``--precision bf16``
is asked for explicitly. Run it on an otherwise idle machine: the load average is printed before
and after, with a warning when it exceeds half the cores.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from df2am.config import LossConfig, ModelConfig
from df2am.losses import build_loss
from df2am.models import build_model

REPO = Path(__file__).resolve().parents[1]
Step = Callable[[], tuple[float, float]]


# --------------------------------------------------------------------------- machine


def _lscpu() -> dict[str, str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}


def machine_info() -> dict[str, Any]:
    info = _lscpu()
    flags = set(info.get("Flags", "").split())
    if not flags:
        with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    return {
        "cpu": info.get("Model name") or platform.processor() or "unknown",
        "cpus": info.get("CPU(s)", str(os.cpu_count())),
        "amx_bf16": "amx_bf16" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


# --------------------------------------------------------------------------- reference


def _import_file(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _wrt_transcribed(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The reference's TripletLoss_WRT, transcribed (used when its loss.py does not run)."""
    n = inputs.shape[0]
    sq = inputs.pow(2).sum(1, keepdim=True).expand(n, n)
    dist = (sq + sq.t() - 2 * inputs @ inputs.t()).clamp(min=1e-12).sqrt()
    is_pos = targets.expand(n, n).eq(targets.expand(n, n).t()).float()
    is_neg = targets.expand(n, n).ne(targets.expand(n, n).t()).float()
    dist_ap, dist_an = dist * is_pos, dist * is_neg

    def weights(d: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        diff = d - torch.max(d * mask, dim=1, keepdim=True)[0]
        z = torch.sum(torch.exp(diff) * mask, dim=1, keepdim=True) + 1e-6
        return torch.exp(diff) * mask / z

    fp = torch.sum(dist_ap * weights(dist_ap, is_pos), dim=1)
    cn = torch.sum(dist_an * weights(-dist_an, is_neg), dim=1)
    return F.soft_margin_loss(cn - fp, torch.ones_like(fp))


def load_reference(path: str, num_classes: int) -> tuple[nn.Module, Callable, str]:
    """``(embed_net, wrt_loss, description)``."""
    if not path:
        sys.path.insert(0, str(REPO / "tests" / "models"))
        from reference_agw import EmbedNet  # noqa: PLC0415 - test helper, imported on demand

        return (EmbedNet(num_classes, no_local="on", gm_pool="on"), _wrt_transcribed,
                "tests/models/reference_agw.py (re-implementation of embed_net) + transcribed "
                "TripletLoss_WRT: no --reference checkout given")
    root = Path(path).resolve()
    if not (root / "model.py").is_file() or not (root / "resnet.py").is_file():
        raise SystemExit(f"--reference {root}: expected model.py and resnet.py of "
                         "mangye16/Cross-Modal-Re-ID-baseline there")
    sys.path.insert(0, str(root))  # its model.py does `from resnet import ...`
    resnet = _import_file("resnet", root / "resnet.py")
    model_mod = _import_file("agw_reference_model", root / "model.py")
    # No ImageNet download: the timing does not depend on the weights.
    model_mod.resnet50 = lambda pretrained=False, **kw: resnet.resnet50(pretrained=False, **kw)
    net = model_mod.embed_net(num_classes, no_local="on", gm_pool="on")
    desc = f"{root}/model.py embed_net"
    loss_fn: Callable = _wrt_transcribed
    try:
        loss_mod = _import_file("agw_reference_loss", root / "loss.py")
        wrt = loss_mod.TripletLoss_WRT()
        probe = torch.randn(8, 4)
        wrt(probe, torch.arange(4).repeat(2))

        def loss_fn(feat: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return wrt(feat, labels)[0]  # its .item() host sync is part of its step

        desc += f" + {root}/loss.py TripletLoss_WRT"
    except Exception as exc:  # e.g. addmm_'s old signature on a newer torch
        desc += (f" + transcribed TripletLoss_WRT (its loss.py does not run here: "
                 f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]})")
    return net, loss_fn, desc


def _reference_groups(net: nn.Module, lr: float) -> list[dict[str, Any]]:
    """Its train.py: everything but bottleneck/classifier at 0.1 × lr."""
    head = {id(p) for p in [*net.bottleneck.parameters(), *net.classifier.parameters()]}
    base = [p for p in net.parameters() if id(p) not in head]
    return [{"params": base, "lr": 0.1 * lr},
            {"params": list(net.bottleneck.parameters()), "lr": lr},
            {"params": list(net.classifier.parameters()), "lr": lr}]


# --------------------------------------------------------------------------- steps


def _autocast(precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)


def make_steps(args: argparse.Namespace, precision: str) -> tuple[Step, Step, str]:
    mf = torch.channels_last if args.channels_last else torch.contiguous_format
    k = args.ids * args.per_modality
    torch.manual_seed(0)
    rgb = torch.randn(k, 3, args.height, args.width).contiguous(memory_format=mf)
    ir = torch.randn(k, 3, args.height, args.width).contiguous(memory_format=mf)
    ids = torch.arange(args.ids).repeat_interleave(args.per_modality)
    labels = torch.cat([ids, ids])

    ref, ref_wrt, desc = load_reference(args.reference, args.num_classes)
    ref = ref.to(memory_format=mf).train()
    ref_opt = torch.optim.SGD(_reference_groups(ref, 0.1), lr=0.1, momentum=0.9,
                              weight_decay=5e-4, nesterov=True)

    cfg = ModelConfig(arch="agw", depth=50, non_local=True, pooling="gem", df2_module=False,
                      test_feature="bn_global")
    model = build_model(cfg, args.num_classes).to(memory_format=mf).train()
    criterion = build_loss(LossConfig(use_df2=False, use_affinity=False, triplet_type="wrt",
                                      triplet_mode="joint", id_mode="joint"))
    opt = torch.optim.SGD(model.param_groups(0.1, 0.1, 5e-4), lr=0.1, momentum=0.9,
                          nesterov=True)

    def ref_step() -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        with _autocast(precision):
            feat, logits = ref(rgb, ir)
            loss = F.cross_entropy(logits.float(), labels) + ref_wrt(feat.float(), labels)
        ref_opt.zero_grad(set_to_none=True)
        loss.backward()
        ref_opt.step()
        return time.perf_counter() - t0, time.process_time() - c0

    def df2am_step() -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        with _autocast(precision):
            loss = criterion(model(rgb, ir), labels).total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0, time.process_time() - c0

    return ref_step, df2am_step, desc


def run(args: argparse.Namespace, precisions: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {"args": vars(args), "machine": machine_info(),
                               "loadavg_before": os.getloadavg(), "runs": []}
    images = 2 * args.ids * args.per_modality
    for precision in precisions:
        ref_step, df2am_step, desc = make_steps(args, precision)
        results["reference"] = desc
        for _ in range(args.warmup):
            ref_step()
            df2am_step()
        rt, dt, rc, dc = [], [], [], []
        for _ in range(args.iters):
            wall, cpu = ref_step()
            rt.append(wall)
            rc.append(cpu)
            wall, cpu = df2am_step()
            dt.append(wall)
            dc.append(cpu)
        row = {
            "precision": precision,
            "memory_format": "channels_last" if args.channels_last else "contiguous",
            "reference_img_s": images / statistics.median(rt),
            "df2am_img_s": images / statistics.median(dt),
            "ratio": statistics.median(rt) / statistics.median(dt),
            "ratio_best": min(rt) / min(dt),
            "ratio_cpu": statistics.median(rc) / statistics.median(dc),
            "reference_step_s": rt, "df2am_step_s": dt, "reference_cpu_s": rc, "df2am_cpu_s": dc,
        }
        results["runs"].append(row)
        print(f"{precision:>5} {row['memory_format']:>13}  reference {row['reference_img_s']:6.2f}"
              f" img/s  df2am {row['df2am_img_s']:6.2f} img/s  ratio {row['ratio']:.3f} "
              f"(best step {row['ratio_best']:.3f}, CPU time {row['ratio_cpu']:.3f}; median of "
              f"{args.iters}; wall s reference {[round(t, 2) for t in rt]}, df2am "
              f"{[round(t, 2) for t in dt]})", flush=True)
    results["loadavg_after"] = os.getloadavg()
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--reference", default="", help="checkout of Cross-Modal-Re-ID-baseline")
    p.add_argument("--ids", type=int, default=8, help="identities per batch (N*)")
    p.add_argument("--per-modality", type=int, default=4, help="images per id and modality")
    p.add_argument("--height", type=int, default=288)
    p.add_argument("--width", type=int, default=144)
    p.add_argument("--num-classes", type=int, default=395, help="SYSU-MM01 has 395 train ids")
    p.add_argument("--iters", type=int, default=3, help="timed steps per model")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per model")
    p.add_argument("--precision", nargs="+", choices=["fp32", "bf16"], default=None,
                   help="default: fp32, plus bf16 where the CPU has it natively")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--json", default="", help="also write the results here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info()
    native_bf16 = info["amx_bf16"] or info["avx512_bf16"]
    precisions = args.precision or (["fp32", "bf16"] if native_bf16 else ["fp32"])
    load = os.getloadavg()
    print(f"# CPU (lscpu): {info['cpu']} | {info['cpus']} CPUs | amx_bf16={info['amx_bf16']} "
          f"avx512_bf16={info['avx512_bf16']} | {info['torch_threads']} torch threads | torch "
          f"{info['torch']} | loadavg {load}", flush=True)
    if not native_bf16 and "bf16" in precisions:
        print("# warning: no native bf16 on this CPU: bf16 is emulated, the timing means little")
    if load[0] > 0.5 * (os.cpu_count() or 1):
        print("# warning: the machine is busy (load average above half the CPUs): other "
              "processes distort the timing; prefer the best-step and CPU-time ratios")
    print(f"# batch {args.ids} ids x ({args.per_modality} RGB + {args.per_modality} IR) = "
          f"{2 * args.ids * args.per_modality} images at {args.height}x{args.width}, "
          f"{args.warmup} warm-up + {args.iters} timed steps each", flush=True)
    results = run(args, precisions)
    print(f"# reference: {results['reference']}")
    print(f"# loadavg after {results['loadavg_after']}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
