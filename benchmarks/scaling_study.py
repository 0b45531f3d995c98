"""How cross-modality generalisation scales: training ids, steps, input size, network width.

One synthetic SYSU-MM01-layout *pool* (``df2am data synth --layout sysu --ids 1400``) is cut
into views that share one fixed test set (``--test-ids`` ids of the pool's test split) and
train on the first N ids of a fixed permutation of the pool's training ids, so that every point
of a curve is tested on the same people. A view is a folder of symbolic links to the pool's
camera folders plus its own ``exp/{train,val,test}_id.txt``.

Each ``run`` trains the demo recipe (``DEMO_CONFIG``) + ``key=value`` overrides with a fixed
step budget (``--steps``: epochs of ``--iters`` steps each; the learning-rate decays stay at
8/12 and 11/12 of the schedule, as in the demo), then records in ``OUT/summary.json``: SYSU
all-search (seeded sampler, 10 trials, single-shot, fused feature, no re-ranking, no flip), the
modality-alignment report on all images of the test ids and of the training ids, the training
time, the CPU, its bf16 flags, the thread count and the load average.

Usage::

    python benchmarks/scaling_study.py run --pool runs/pool --train-ids 280 --steps 672 \
        --out runs/scale/ids280
    python benchmarks/scaling_study.py run --pool runs/pool --train-ids 280 --steps 672 \
        --out runs/scale/ids280_tone data.tone_aug_prob=0.5
    python benchmarks/scaling_study.py report runs/scale --md runs/scale/table.md \
        --png docs/img/scaling.png
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_experiment import _alignment, _cpu, _print_summary  # noqa: E402 - the sibling script's helpers

CAMERAS = (1, 2, 3, 4, 5, 6)


def _read_ids(path: Path) -> list[int]:
    return sorted(int(t) for t in path.read_text().replace(",", " ").split())


def make_view(pool: Path, out: Path, train_ids: int, test_ids: int, order_seed: int = 0) -> Path:
    """A view of ``pool`` with its first ``train_ids`` training ids (fixed permutation) and the
    first ``test_ids`` of its test ids (ascending); reused when it already exists."""
    pool = pool.resolve()
    train_pool = _read_ids(pool / "exp" / "train_id.txt") + _read_ids(pool / "exp" / "val_id.txt")
    pool_test = _read_ids(pool / "exp" / "test_id.txt")
    test, spare = pool_test[:test_ids], pool_test[test_ids:]
    # The pool's training ids first, then its unused test ids: views of up to len(train_pool)
    # ids do not depend on --test-ids.
    order = np.concatenate([np.random.default_rng(order_seed).permutation(sorted(train_pool)),
                            np.random.default_rng(order_seed + 1).permutation(spare)])
    if train_ids > len(order):
        raise SystemExit(f"the pool has {len(order)} training ids, asked for {train_ids}")
    chosen = sorted(int(i) for i in order[:train_ids])
    n_val = max(1, len(chosen) // 10)
    lists = {"train": chosen[:-n_val], "val": chosen[-n_val:], "test": test}
    exp = out / "exp"
    exp.mkdir(parents=True, exist_ok=True)
    for cam in CAMERAS:
        link = out / f"cam{cam}"
        if not link.exists():
            link.symlink_to(pool / f"cam{cam}", target_is_directory=True)
    for split, ids in lists.items():
        text = ",".join(str(i) for i in ids) + "\n"
        path = exp / f"{split}_id.txt"
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
    return out


def schedule(steps: int, iters: int) -> list[str]:
    """Overrides for ``steps`` optimiser steps as epochs of ``iters`` steps (decays at 8/12 and
    11/12 of the schedule, warm-up one epoch: the demo's shape)."""
    if steps % iters:
        raise SystemExit(f"--steps {steps} must be a multiple of --iters {iters}")
    epochs = steps // iters
    m1, m2 = max(1, round(epochs * 8 / 12)), max(2, round(epochs * 11 / 12))
    return [f"train.epochs={epochs}", f"train.max_iters_per_epoch={iters}",
            f"optim.milestones=[{m1},{m2}]", f"train.checkpoint_every={max(1, epochs // 3)}"]


def run(args: argparse.Namespace) -> None:
    from df2am.assess.evaluator import evaluate_model
    from df2am.config import apply_overrides
    from df2am.data.datasets.sysu import SYSU
    from df2am.data.protocol import train_records
    from df2am.deploy.api import load_model
    from df2am.experiments.demo import demo_config
    from df2am.train.trainer import train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    view = make_view(Path(args.pool), Path(args.views) / f"train{args.train_ids}_test"
                     f"{args.test_ids}", args.train_ids, args.test_ids)
    overrides = schedule(args.steps, args.iters) + [f"data.cache_dir={args.cache}"]
    cfg = apply_overrides(demo_config(view), overrides + args.overrides)
    t0 = time.perf_counter()
    result = train(cfg, out, resume=(out / "checkpoints" / "last.pt").is_file())
    train_s = time.perf_counter() - t0
    model, run_cfg = load_model(result.final_checkpoint)
    report = evaluate_model(model, run_cfg, view, cache_dir=args.cache)
    # The steps that ran: an epoch shorter than --iters (few ids) caps the budget.
    import re
    plan = re.search(r"training (\d+) epochs x (\d+) iterations", (out / "train.log").read_text())
    steps_run = int(plan[1]) * int(plan[2]) if plan else None
    summary = {
        "train_ids": args.train_ids,
        "steps_run": steps_run,
        "test_ids": args.test_ids,
        "steps": args.steps,
        "overrides": args.overrides,
        "pool": str(Path(args.pool).resolve()),
        "test": report.metrics(),
        "align_test": _alignment(model, run_cfg, view, SYSU.test_records(view), args.cache),
        "align_train": _alignment(model, run_cfg, view, train_records("sysu", view), args.cache),
        "train_seconds": round(train_s, 1),
        "cpu": _cpu(),
        "threads": __import__("torch").get_num_threads(),
        "loadavg": os.getloadavg(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _print_summary(out.name, summary)


def rescore(args: argparse.Namespace) -> None:
    """Add ``test_<K>`` (SYSU all-search on the first K of the fixed test ids) to the summary
    of each finished run under ``folder`` that lacks it (a smaller gallery, as the old demo's)."""
    from df2am.assess.evaluator import evaluate_model
    from df2am.deploy.api import load_model

    key = f"test_{args.test_ids}"
    for path in sorted(Path(args.folder).glob("*/summary.json")):
        summary = json.loads(path.read_text())
        if key in summary:
            continue
        view = make_view(Path(summary["pool"]), Path(args.views) /
                         f"train{summary['train_ids']}_test{args.test_ids}",
                         summary["train_ids"], args.test_ids)
        model, cfg = load_model(path.parent / "model_final.pt")
        summary[key] = evaluate_model(model, cfg, view, cache_dir=args.cache).metrics()
        path.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"{path.parent.name}: {key} R1 {summary[key]['rank1']:.2f} "
              f"mAP {summary[key]['mAP']:.2f}")


def _summaries(folder: Path) -> list[tuple[str, dict]]:
    return [(p.parent.name, json.loads(p.read_text()))
            for p in sorted(folder.glob("*/summary.json"))]


#: The base point every axis of the figure passes through.
BASE = {"train_ids": 280, "steps": 2016, "width": 32, "height": 64}


def _point(s: dict) -> dict:
    """The (train ids, steps, width, input height) of a summary; width/height from overrides."""
    over = dict(o.split("=", 1) for o in s["overrides"])
    return {"train_ids": s["train_ids"], "steps": s.get("steps_run") or s["steps"],
            "width": int(over.get("model.width", 64)), "height": int(over.get("data.height", 64))}


def _axes(rows: list[tuple[str, dict]], base: str) -> dict[str, list[tuple[int, dict]]]:
    """Runs on each axis: those that differ from :data:`BASE` in that coordinate only and share
    the other settings of the run named ``base`` (which sits at :data:`BASE`)."""
    base_run = dict(rows).get(base)
    if base_run is None or _point(base_run) != BASE:
        raise SystemExit(f"--base {base!r}: expected the name of a run at {BASE}")
    base_extra = _extra(base_run)
    axes: dict[str, list[tuple[int, dict]]] = {k: [] for k in BASE}
    for _, s in rows:
        pt = _point(s)
        if _extra(s) != base_extra:
            continue
        for key in BASE:
            if all(pt[k] == BASE[k] for k in BASE if k != key):
                axes[key].append((pt[key], s))
    return {k: sorted(v, key=lambda t: t[0]) for k, v in axes.items()}


def _extra(s: dict) -> list[str]:
    """The overrides other than the axes' own (width, input size and its companions)."""
    axis_keys = ("model.width", "data.height", "data.width", "data.pad", "model.part_pooling")
    return sorted(o for o in s["overrides"] if o.split("=")[0] not in axis_keys)


def _plot(rows: list[tuple[str, dict]], path: str, base: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    # Only the axes with a curve (two runs or more); the others are the base point alone.
    axes = {k: v for k, v in _axes(rows, base).items() if len(v) >= 2}
    if not axes:
        raise SystemExit("--png: no axis has two runs yet")
    titles = {"train_ids": "training identities", "steps": "optimiser steps",
              "width": "ResNet-18 base width", "height": "input height (width = height / 2)"}
    fig, panels = plt.subplots(1, len(axes), figsize=(4 * len(axes) + 1, 3.8), sharey=True,
                               squeeze=False)
    panels = panels[0]
    for ax, (key, pts) in zip(panels, axes.items(), strict=True):
        xs = [x for x, _ in pts]
        ax.plot(xs, [s["test"]["mAP"] for _, s in pts], "o-", label="mAP, 96 test ids")
        if all("test_30" in s for _, s in pts):
            ax.plot(xs, [s["test_30"]["mAP"] for _, s in pts], "s:",
                    label="mAP, 30 test ids (the old demo's gallery)")
        ax.plot(xs, [s["align_test"]["ir2rgb_mAP"] for _, s in pts], "^--",
                label="IR→RGB mAP, all test images")
        ax.plot(xs, [s["align_train"]["ir2rgb_mAP"] for _, s in pts], "v-.", alpha=0.6,
                label="IR→RGB mAP, training ids")
        if key in ("train_ids", "steps"):
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(xs)
        ax.set_xticklabels([str(x) for x in xs])
        ax.set_xlabel(titles[key])
        ax.grid(alpha=0.3)
    panels[0].set_ylabel("%")
    panels[0].legend(fontsize=7, loc="upper left")
    base_txt = ", ".join(f"{k} {v}" for k, v in BASE.items())
    fig.suptitle("Synthetic SYSU-MM01, SYSU all-search (10 trials)\n"
                 f"one change from the base point ({base_txt})", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(args: argparse.Namespace) -> None:
    rows = _summaries(Path(args.folder))
    lines = ["| run | train ids | steps | overrides | Rank-1 | mAP | mAP (30 test ids) | "
             "IR→RGB mAP (test) | RGB→RGB / IR→IR mAP (test) | gap (test) | "
             "IR→RGB mAP (train) | train s |",
             "| --- " * 12 + "|"]
    for name, s in rows:
        t, a, tr = s["test"], s["align_test"], s["align_train"]
        t30 = s.get("test_30")
        small = f"{t30['mAP']:.2f}" if t30 else "—"
        lines.append(
            f"| {name} | {s['train_ids']} | {s.get('steps_run') or s['steps']} | "
            f"{' '.join(s['overrides']) or '—'} | "
            f"{t['rank1']:.2f} ± {t['rank1_std']:.2f} | {t['mAP']:.2f} ± {t['mAP_std']:.2f} | "
            f"{small} | {a['ir2rgb_mAP']:.1f} | {a['rgb2rgb_mAP']:.1f} / {a['ir2ir_mAP']:.1f} | "
            f"{a['cross_gap']:+.3f} | {tr['ir2rgb_mAP']:.1f} | {s['train_seconds']:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.md:
        Path(args.md).write_text(text)
    if args.png:
        _plot(rows, args.png, args.base)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--pool", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--train-ids", type=int, required=True)
    r.add_argument("--test-ids", type=int, default=96)
    r.add_argument("--steps", type=int, default=672)
    r.add_argument("--iters", type=int, default=56)
    r.add_argument("--views", default="", help="folder of the view trees (default POOL/../views)")
    r.add_argument("--cache", default="", help="image cache folder (default POOL/../cache)")
    r.add_argument("overrides", nargs="*")
    p = sub.add_parser("report")
    p.add_argument("folder")
    p.add_argument("--md", default="")
    p.add_argument("--png", default="", help="the scaling figure (needs the axes' runs)")
    p.add_argument("--base", default="ids280_base", help="the run at the base point")
    q = sub.add_parser("rescore")
    q.add_argument("folder")
    q.add_argument("--test-ids", type=int, default=30)
    q.add_argument("--views", required=True)
    q.add_argument("--cache", required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, datefmt="%H:%M:%S",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.cmd == "run":
        base = Path(args.pool).resolve().parent
        args.views = args.views or str(base / "views")
        args.cache = args.cache or str(base / "cache")
        run(args)
    elif args.cmd == "rescore":
        rescore(args)
    else:
        report(args)


if __name__ == "__main__":
    main()
