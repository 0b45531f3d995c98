"""Throughput of the training data loader against a bare ResNet-50 training step.

Writes a synthetic SYSU-like tree of JPEGs (288×144, resized to 256×128 by the cache) into a
temporary folder, builds the decoded-image cache (timed separately), then measures

* the loader: images/s of ``build_train_loader`` at batch N*·(M* + M*) = 8·(4 + 4) = 64 with
  ``num_workers`` workers (both modalities counted), over ``--batches`` batches after the first;
* the step it must keep ahead of: images/s of a torchvision ResNet-50 forward + backward + SGD
  step, bf16 autocast, channels_last, on the CPU (a smaller batch is fine; rates are per image);

and prints the ratio (target >= 2)::

    .venv/bin/python benchmarks/bench_loader.py --batches 40 --workers 2

Numbers are recorded in docs/benchmarks.md, section "Data loader".
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from df2am.config import DataConfig, SamplerConfig
from df2am.data.cache import load_images
from df2am.data.loader import build_train_loader
from df2am.data.records import ImageRecord


def write_tree(root: Path, num_ids: int, rgb_per: int, ir_per: int, size=(288, 144)) -> list:
    """Smooth random JPEGs (upsampled noise + grain, so they compress like photos)."""
    rng = np.random.default_rng(0)
    records = []
    for label in range(num_ids):
        pid = label + 1
        for mod, n, cam in (("rgb", rgb_per, 1), ("ir", ir_per, 3)):
            for k in range(n):
                rel = f"cam{cam}/{pid:04d}/{k:04d}.jpg"
                path = root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                base = rng.integers(0, 256, (18, 9, 3), dtype=np.uint8)
                im = Image.fromarray(base).resize((size[1], size[0]), Image.Resampling.BICUBIC)
                arr = np.asarray(im).astype(np.int16) + rng.integers(-12, 13, (*size, 3))
                arr = np.clip(arr, 0, 255).astype(np.uint8)
                if mod == "ir":
                    arr = np.repeat(arr.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
                Image.fromarray(arr).save(path, quality=90)
                records.append(ImageRecord(rel, pid, cam, mod, label))
    return records


def bench_loader(records, root, cache_dir, workers: int, batches: int) -> dict:
    cfg = DataConfig(height=256, width=128, num_workers=workers)
    loader = build_train_loader(
        records, root, cfg, SamplerConfig(8, 4), seed=0, cache_dir=cache_dir, pin_memory=False
    )
    loader.set_epoch(0)
    it = iter(loader)
    t0 = time.perf_counter()
    first = next(it)
    t_first = time.perf_counter() - t0
    per_batch = first.rgb.shape[0] + first.ir.shape[0]
    n = 0
    t0 = time.perf_counter()
    for _ in range(min(batches, len(loader) - 1)):
        next(it)
        n += 1
    dt = time.perf_counter() - t0
    return {"first_batch_s": t_first, "batches": n, "images_per_s": n * per_batch / dt}


def bench_step(batch: int, iters: int) -> dict:
    import torchvision

    model = torchvision.models.resnet50(num_classes=395).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 256, 128).to(memory_format=torch.channels_last)
    y = torch.randint(0, 395, (batch,))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    dt = time.perf_counter() - t0
    return {"batch": batch, "iters": iters, "images_per_s": batch * iters / dt}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--num-ids", type=int, default=100)
    ap.add_argument("--rgb-per", type=int, default=24)
    ap.add_argument("--ir-per", type=int, default=12)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--step-batch", type=int, default=16)
    ap.add_argument("--step-iters", type=int, default=3)
    args = ap.parse_args()

    print(f"python {platform.python_version()}, torch {torch.__version__}, "
          f"cpus {os.cpu_count()}, torch threads {torch.get_num_threads()}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root, cache_dir = Path(tmp) / "data", Path(tmp) / "cache"
        t0 = time.perf_counter()
        records = write_tree(root, args.num_ids, args.rgb_per, args.ir_per)
        print(f"wrote {len(records)} JPEGs 288x144 in {time.perf_counter() - t0:.1f}s")

        rgb = [r for r in records if r.modality == "rgb"]
        ir = [r for r in records if r.modality == "ir"]
        t0 = time.perf_counter()
        load_images(rgb, root, (256, 128), cache_dir)
        load_images(ir, root, (256, 128), cache_dir)
        t_cache = time.perf_counter() - t0
        print(f"cache build: {t_cache:.2f}s ({len(records) / t_cache:.0f} images/s decode+resize)")

        lo = bench_loader(records, root, cache_dir, args.workers, args.batches)
        print(f"loader (num_workers={args.workers}, batch 64 = 8 ids x (4+4)): "
              f"{lo['images_per_s']:.0f} images/s over {lo['batches']} batches "
              f"(first batch incl. worker start {lo['first_batch_s']:.2f}s)")  # fmt: skip

    st = bench_step(args.step_batch, args.step_iters)
    print(f"ResNet-50 train step (bf16 autocast, channels_last, CPU, batch {st['batch']}): "
          f"{st['images_per_s']:.1f} images/s over {st['iters']} iterations")  # fmt: skip
    print(f"ratio loader / step: {lo['images_per_s'] / st['images_per_s']:.1f}x (target >= 2x)")


if __name__ == "__main__":
    main()
