"""One demo-scale experiment: train the demo recipe with overrides, then measure it fully.

Used for the runs recorded in ``docs/experiments.md``. Writes (or reuses) a synthetic
SYSU-MM01-layout dataset, trains ``df2am.experiments.demo.DEMO_CONFIG`` + the given ``key=value``
overrides into ``--out``, then records in ``--out/summary.json``:

* the SYSU all-search protocol (10 seeded trials, as ``df2am demo`` reports it);
* the modality-alignment report (:func:`df2am.evaluation.modality_alignment`) on the training
  identities and on the test identities (all images of each);
* the wall time of the training and the CPU it ran on.

Usage::

    python benchmarks/demo_experiment.py --out runs/exp/base
    python benchmarks/demo_experiment.py --out runs/exp/lr01 optim.lr=0.01
    python benchmarks/demo_experiment.py --out runs/exp/gen2 --data-seed 1 --ids 100

Several experiments share one dataset folder (``--data-dir``, default
``runs/exp/data_<seed>_<ids>``).
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

import numpy as np


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        name = next((ln.split(":", 1)[1].strip() for ln in out.splitlines()
                     if ln.startswith("Model name")), platform.processor())
        flags = Path("/proc/cpuinfo").read_text()
        return f"{name}; amx_bf16={'amx_bf16' in flags}; avx512_bf16={'avx512_bf16' in flags}"
    except OSError:
        return platform.processor()


def _alignment(model, cfg, root, records, cache_dir):  # noqa: ANN001, ANN202 - script helper
    from df2am.assess.evaluator import extract_records
    from df2am.evaluation import modality_alignment

    rgb = [r for r in records if r.modality == "rgb"]
    ir = [r for r in records if r.modality == "ir"]

    def feats(recs):  # noqa: ANN001, ANN202
        return extract_records(model, recs, root, cfg.data, batch_size=128, cache_dir=cache_dir)

    rep = modality_alignment(
        feats(rgb), feats(ir),
        np.array([r.pid for r in rgb]), np.array([r.pid for r in ir]),
        np.array([r.cam for r in rgb]), np.array([r.cam for r in ir]),
    )
    return rep.to_dict()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--ids", type=int, default=100)
    ap.add_argument("--data-dir", default="")
    ap.add_argument("--generator", default="", help="synthetic generator variant (if supported)")
    ap.add_argument("overrides", nargs="*", help="key=value on top of the demo recipe")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, datefmt="%H:%M:%S",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from df2am.assess.evaluator import evaluate_model
    from df2am.config import apply_overrides
    from df2am.data.datasets.sysu import SYSU
    from df2am.data.protocol import train_records
    from df2am.data.synthetic import write_synthetic
    from df2am.deploy.api import load_model
    from df2am.experiments.demo import DEMO_DATA, demo_config
    from df2am.train.rundir import resolve_cache_dir
    from df2am.train.trainer import train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(args.data_dir or out.parent / f"data_{args.data_seed}_{args.ids}")
    spec = {**DEMO_DATA, "num_ids": args.ids, "seed": args.data_seed}
    if args.generator:
        spec["generator"] = args.generator
    root = write_synthetic(data_dir, "sysu", **spec)
    cfg = apply_overrides(demo_config(root), args.overrides)
    cache_dir = resolve_cache_dir(cfg, out)

    t0 = time.perf_counter()
    result = train(cfg, out, resume=(out / "checkpoints" / "last.pt").is_file())
    train_s = time.perf_counter() - t0
    model, run_cfg = load_model(result.final_checkpoint)
    report = evaluate_model(model, run_cfg, root, cache_dir=cache_dir)
    # All test images of both modalities (every query, and every RGB image of cams 1, 2, 4, 5
    # rather than one trial's sampled gallery).
    test_all = SYSU.test_records(root)
    summary = {
        "overrides": args.overrides,
        "data": {"dir": str(data_dir), **{k: list(v) if isinstance(v, tuple) else v
                                          for k, v in spec.items()}},
        "test": report.metrics(),
        "align_train": _alignment(model, run_cfg, root, train_records("sysu", root), cache_dir),
        "align_test": _alignment(model, run_cfg, root, test_all, cache_dir),
        "train_seconds": round(train_s, 1),
        "cpu": _cpu(),
        "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
        "loadavg": os.getloadavg(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _print_summary(out.name, summary)



def _print_summary(name: str, summary: dict) -> None:
    """One line: the test metrics, the alignment report's key numbers, the training time."""
    t, a = summary["test"], summary["align_test"]
    print(f"{name}: R1 {t['rank1']:.2f} ± {t['rank1_std']:.2f}  mAP {t['mAP']:.2f} ± "
          f"{t['mAP_std']:.2f}  | test ir2rgb mAP {a['ir2rgb_mAP']:.1f} rgb2rgb "
          f"{a['rgb2rgb_mAP']:.1f} gap {a['cross_gap']:+.3f} | train ir2rgb mAP "
          f"{summary['align_train']['ir2rgb_mAP']:.1f} | {summary['train_seconds']:.0f} s")


if __name__ == "__main__":
    main()
