"""The demo recipe (and its Table 3 ablation) over several seeds: mean ± std across seeds.

One training per (setting, seed) on the demo's synthetic data, each evaluated with the demo's
protocol (SYSU all-search, seeded sampler, single-shot, 10 trials, no re-ranking, no flip) and
the indoor-search protocol. The settings are the runs of a sweep spec (default: the Table 3
ablation at demo scale, ``configs/examples/demo_table3.yaml``; its ``df2am`` run *is* the demo
recipe), so the setting definitions have one owner. Finished (setting, seed) runs are skipped.

Usage::

    python benchmarks/demo_seeds.py --out runs/seeds --seeds 0 1 2              # Table 3
    python benchmarks/demo_seeds.py --out runs/seeds --only df2am                 # the demo
    python benchmarks/demo_seeds.py --out runs/seeds_gen1 --data-seed 1 --only df2am

Writes ``<out>/table.md`` (mean ± seed-std of the 10-trial means, %) and
``<out>/<setting>/seed_<s>/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from pathlib import Path

import yaml

SPEC = Path(__file__).resolve().parents[1] / "configs" / "examples" / "demo_table3.yaml"
METRICS = ("rank1", "mAP", "mINP")


def _run(setting: str, overrides: list[str], seed: int, root: Path, out: Path) -> dict:
    from df2am.assess.evaluator import evaluate_model
    from df2am.config import apply_overrides
    from df2am.deploy.api import load_model
    from df2am.experiments.demo import demo_config
    from df2am.train.rundir import resolve_cache_dir
    from df2am.train.trainer import train

    done = out / "summary.json"
    if done.is_file():
        return json.loads(done.read_text())
    cfg = apply_overrides(demo_config(root), [*overrides, f"train.seed={seed}"])
    t0 = time.perf_counter()
    result = train(cfg, out, resume=(out / "checkpoints" / "last.pt").is_file())
    seconds = time.perf_counter() - t0
    model, run_cfg = load_model(result.final_checkpoint)
    cache = resolve_cache_dir(cfg, out)
    doc = {"setting": setting, "seed": seed, "overrides": overrides,
           "train_seconds": round(seconds, 1), "loadavg": os.getloadavg()}
    for mode in ("all", "indoor"):
        doc[mode] = evaluate_model(model, run_cfg, root, mode=mode, cache_dir=cache).metrics()
    done.write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def _fmt(values: list[float]) -> str:
    sd = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {sd:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--spec", type=Path, default=SPEC)
    ap.add_argument("--only", nargs="*", help="settings of the spec to run (default all)")
    ap.add_argument("--data-seed", type=int, default=0, help="synthetic generator seed")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, datefmt="%H:%M:%S",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from df2am.data.synthetic import write_synthetic
    from df2am.experiments.demo import DEMO_DATA

    spec = yaml.safe_load(args.spec.read_text())
    runs: dict[str, list[str]] = spec["runs"]
    names = args.only or list(runs)
    labels = spec.get("table", {}).get("labels", {})
    root = write_synthetic(args.out / "data", "sysu", **{**DEMO_DATA, "seed": args.data_seed})
    docs: dict[str, list[dict]] = {}
    for name in names:
        for seed in args.seeds:
            docs.setdefault(name, []).append(
                _run(name, list(runs[name]), seed, root, args.out / name / f"seed_{seed}"))
    lines = [
        f"Mean ± std over seeds {args.seeds} of the 10-trial means (%), synthetic data "
        f"(generator seed {args.data_seed}); no re-ranking, no flip.",
        "",
        "| Setting | All r=1 | All mAP | All mINP | Indoor r=1 | Indoor mAP | train s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, rows in docs.items():
        cells = [_fmt([r["all"][m] for r in rows]) for m in METRICS]
        cells += [_fmt([r["indoor"][m] for r in rows]) for m in ("rank1", "mAP")]
        secs = statistics.fmean(r["train_seconds"] for r in rows)
        lines.append(f"| {labels.get(name, name)} | " + " | ".join(cells) + f" | {secs:.0f} |")
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
