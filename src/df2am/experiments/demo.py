"""``df2am demo``: the whole pipeline, offline, on a synthetic dataset, on the CPU.

::

    from df2am.experiments.demo import run_demo

    result = run_demo("runs/demo")          # minutes on 2 CPU cores (see DEMO_CONFIG)
    print(result.summary_text())             # untrained vs trained tables + elapsed time
    result.trained.metrics()["rank1"]        # percent

Steps (each logged):

1. write (or reuse, when its manifest matches) the synthetic SYSU-MM01-layout dataset
   :data:`DEMO_DATA` at ``<out>/data/synthetic_sysu``
   (:func:`df2am.data.synthetic.write_synthetic`);
2. build the network of the demo recipe after seeding exactly as :func:`~df2am.train.train`
   does, i.e. the very initial weights training starts from, and evaluate it *untrained* with the
   SYSU all-search protocol over 10 seeded trials — the floor a trained model must clear;
3. train DF²AM from scratch (:func:`df2am.train.train`, the full loss of Eq. 4) into ``<out>``;
4. load ``model_final.pt`` through the public API (:func:`df2am.deploy.api.load_model`) and
   evaluate it with the same protocol.

``<out>`` then holds ``metrics.json`` (trained: ``rank1``, ``rank5``, ``rank10``, ``rank20``,
``mAP``, ``mINP`` in percent, each with a ``_std`` twin), ``metrics_untrained.json``,
``results.json`` (the trained model's full evaluation: protocol, per-trial metrics, CMC, and
the modality-alignment report under ``alignment``),
``config.yaml`` (the resolved config), ``model_final.pt`` and ``checkpoints/``, ``tb/``
(TensorBoard), ``metrics.jsonl``, ``train.log`` and ``cmc.png`` (trained and untrained CMC).

The recipe lives here, in code, so an installed (non-editable) package needs no data files;
``configs/demo.yaml`` mirrors :data:`DEMO_CONFIG` for reading and for ``df2am train`` (a test
keeps the two equal). Re-running the demo into the same folder resumes an interrupted run or,
for a finished one, only re-evaluates it.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from df2am.assess.evaluator import EvalReport, evaluate_model, format_table, write_eval_outputs
from df2am.assess.plots import plot_cmc
from df2am.assess.results import write_json
from df2am.config import Config, config_from_dict
from df2am.train.rundir import run_status

__all__ = ["DEMO_CONFIG", "DEMO_DATA", "TINY_CONFIG", "TINY_DATA", "DemoResult", "run_demo",
           "demo_config"]

logger = logging.getLogger(__name__)

#: The synthetic dataset of the demo (arguments of ``write_synthetic``): 430 ids, of which
#: 370 train + 30 val (SYSU-MM01 trains on train ∪ val: 400 ids, as the real dataset's 395)
#: and 30 test ids (the gallery size of the earlier 100-id demo, so its numbers compare).
#: Cross-modality matching of unseen people grew with the number of training ids at a fixed
#: step budget (docs/experiments.md, "How generalisation scales"); ``workers`` is filled in
#: with the available cores by :func:`run_demo` (the files do not depend on it).
DEMO_DATA: dict[str, Any] = {"num_ids": 430, "seed": 0, "size": (128, 64),
                             "split": (0.86, 0.07)}

#: The demo's training recipe: a ResNet-18 DF²AM trained from scratch on 2 CPU cores.
#: ``data.root`` is filled in by :func:`run_demo`. Mirrored by ``configs/demo.yaml``.
#:
#: Why these values (measured on the synthetic data, SYSU all-search, 10 trials; every run with
#: its command and numbers in docs/experiments.md):
#:
#: * 64 × 32 input and a ResNet-18 of half width (``model.width: 32``, 32-64-128-256
#:   channels): ≈ 3.5× cheaper per step than full width, so 3× the steps fit in the same time,
#:   and at equal time the narrow network generalised better (E22, E23).
#: * A fixed step budget, 36 epochs × 56 steps (``train.max_iters_per_epoch``), whatever the
#:   number of training ids: the recipe costs the same time on any synthetic size (§5).
#: * ``loss.center_weight: 1`` with ``center_mode: prototype``: every image classified among
#:   the batch's identities by the other modality's identity centres, the measured best of
#:   the alignment terms tried (E27).
#: * Adam at 1e-3 instead of the paper's SGD: from scratch, SGD at 0.05 had not fitted the
#:   training ids after 448 steps (their IR → RGB mAP 15 %); Adam fits them (E7, E17).
#: * ``model.specific_stages: 1``: layer1 per modality besides the stems (E14).
#: * ``data.channel_aug`` and ``loss.triplet_mode: joint`` (kept from the first recipe): the
#:   joint triplet's same-modality hard negatives are what pull the modalities together; the
#:   cross-modality-only triplet made things worse (E5).
#:
#: Every choice that departs from the paper's recipe is a documented switch; the paper
#: configs (configs/sysu.yaml, configs/regdb.yaml) keep SGD, stems-only and per-modality
#: triplets.
DEMO_CONFIG: dict[str, Any] = {
    "name": "demo",
    "model": {
        "depth": 18,
        "width": 32,
        "pretrained": "none",
        "last_stride": 1,
        "df2_module": True,
        "num_parts": 4,
        "test_feature": "fused",
        "specific_stages": 1,
    },
    "loss": {"triplet_mode": "joint", "center_weight": 1.0, "center_mode": "prototype"},
    "data": {
        "dataset": "sysu",
        "height": 64,
        "width": 32,
        "pad": 4,
        "channel_aug": True,
        "num_workers": 1,
    },
    "sampler": {"num_ids": 8, "num_per_modality": 4},
    "optim": {
        "name": "adam",
        "lr": 0.001,
        "backbone_lr_mult": 1.0,
        "warmup_epochs": 1,
        "milestones": [24, 33],
    },
    "train": {
        "epochs": 36,
        "seed": 0,
        "device": "cpu",
        "precision": "fp32",
        "channels_last": True,
        "max_iters_per_epoch": 56,
        "checkpoint_every": 12,
        "log_every": 20,
    },
    "eval": {"mode": "all", "sampler": "seeded", "shots": 1, "trials": 10, "batch_size": 128},
}

#: ``--tiny``: the same steps in seconds (for tests and smoke runs), not a meaningful result.
TINY_DATA: dict[str, Any] = {"num_ids": 10, "seed": 0, "size": (32, 16)}
TINY_OVERRIDES: dict[str, Any] = {
    "name": "demo_tiny",
    "model": {"num_parts": 2},
    "data": {"height": 32, "width": 16, "pad": 2, "num_workers": 0},
    "sampler": {"num_ids": 2, "num_per_modality": 2},
    "optim": {"warmup_epochs": 0, "milestones": [1]},
    "train": {"epochs": 1, "max_iters_per_epoch": 2, "checkpoint_every": 1, "log_every": 1},
    "eval": {"trials": 10, "batch_size": 64},
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


TINY_CONFIG: dict[str, Any] = _merge(DEMO_CONFIG, TINY_OVERRIDES)


def demo_config(data_root: str | Path, *, tiny: bool = False, device: str = "cpu") -> Config:
    """The resolved demo :class:`~df2am.config.Config` for a dataset at ``data_root``."""
    raw = _merge(TINY_CONFIG if tiny else DEMO_CONFIG, {"data": {"root": str(data_root)}})
    raw["train"]["device"] = device
    # The demo evaluates model_final.pt itself (through load_model, the public API) so that it
    # can put the untrained and trained curves in one cmc.png; no second evaluation in train().
    raw["train"]["final_eval"] = False
    return config_from_dict(raw, source="df2am demo recipe")


@dataclass
class DemoResult:
    """What :func:`run_demo` produced (all paths inside ``out_dir``)."""

    out_dir: Path
    untrained: EvalReport
    trained: EvalReport
    checkpoint: Path
    train_seconds: float
    total_seconds: float
    tiny: bool

    def summary_text(self) -> str:
        """Both tables, the Rank-1/mAP gain and the elapsed time, ready to print."""
        u, t = self.untrained.metrics(), self.trained.metrics()
        lines = [
            format_table(self.untrained, label="untrained"),
            "",
            format_table(self.trained, label="trained"),
            "",
            f"trained - untrained: Rank-1 {t['rank1'] - u['rank1']:+.2f}, "
            f"mAP {t['mAP'] - u['mAP']:+.2f}, mINP {t['mINP'] - u['mINP']:+.2f} points",
            f"time: {_minutes(self.total_seconds)} in all, "
            f"{_minutes(self.train_seconds)} training ({torch.get_num_threads()} CPU threads)",
            f"outputs in {self.out_dir}: metrics.json, metrics_untrained.json, results.json, "
            "config.yaml, model_final.pt, tb/, cmc.png",
        ]
        if self.tiny:
            lines.append("(--tiny: a smoke run of the pipeline; its numbers mean nothing)")
        return "\n".join(lines)


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:04.1f} s"


def _check_earlier_run(out: Path, cfg: Config) -> None:
    """Refuse, before any work, a folder that holds a demo run of another recipe (an earlier
    df2am version's, or ``--tiny`` vs the full demo): resuming it would fail after the data
    step with a message about the synthetic dataset. Nothing in ``out`` is touched."""
    from df2am.errors import ConfigError
    from df2am.train.resume import read_saved_config, resume_config_changes

    saved_path = out / "config.yaml"
    if not saved_path.is_file():
        return
    diff = resume_config_changes(cfg, read_saved_config(saved_path, "config.yaml"),
                                 source=str(saved_path))
    if diff:
        raise ConfigError(
            f"{out} holds a demo run of another recipe (an earlier df2am version's, or --tiny "
            f"vs the full demo; differs in {', '.join(diff)}); nothing there was changed: "
            f"choose another --out or remove {out}")


def run_demo(out_dir: str | Path, *, tiny: bool = False, device: str = "cpu") -> DemoResult:
    """Run the demo into ``out_dir`` (see the module docstring); returns a :class:`DemoResult`.

    Args:
        out_dir: the demo folder (the run directory of the training, too).
        tiny: the seconds-long smoke version (10 ids, 32 × 16 images, 2 iterations).
        device: "cpu" (the demo's target), "auto" or "cuda".
    """
    from df2am.data.protocol import train_records
    from df2am.data.synthetic import write_synthetic
    from df2am.deploy.api import load_model
    from df2am.models import build_model
    from df2am.train.precision import seed_everything
    from df2am.train.rundir import resolve_cache_dir
    from df2am.train.trainer import train

    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = TINY_DATA if tiny else DEMO_DATA
    cfg = demo_config(out / "data" / "synthetic_sysu", tiny=tiny, device=device)
    _check_earlier_run(out, cfg)
    logger.info("demo step 1/4: synthetic SYSU-MM01-layout dataset (%d ids)", spec["num_ids"])
    # The files do not depend on the number of rendering processes (write_synthetic).
    workers = 1 if tiny else len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else (os.cpu_count() or 1)
    root = write_synthetic(cfg.data.root, "sysu", workers=workers, **spec)
    cache_dir = resolve_cache_dir(cfg, out)

    logger.info("demo step 2/4: evaluating the untrained network (same recipe and seed)")
    num_classes = len({r.label for r in train_records("sysu", root)})
    seed_everything(cfg.train.seed)
    untrained_model = build_model(cfg.model, num_classes)
    untrained = evaluate_model(untrained_model, cfg, root, device=device, cache_dir=cache_dir)
    del untrained_model
    write_json(out / "metrics_untrained.json", untrained.metrics())

    logger.info("demo step 3/4: training DF²AM from scratch")
    t0 = time.perf_counter()
    resume = run_status(out) != "empty"
    if resume:
        logger.info("%s already holds a demo run: resuming it (a finished one is kept)", out)
    result = train(cfg, out, resume=resume)
    train_seconds = time.perf_counter() - t0

    logger.info("demo step 4/4: evaluating the trained model")
    model, run_cfg = load_model(result.final_checkpoint, device=device)
    # With the modality-alignment report: within-RGB / within-IR / cross-modality retrieval.
    trained = evaluate_model(
        model, run_cfg, root, device=device, cache_dir=cache_dir, diagnose=True
    )
    write_eval_outputs(
        trained,
        out,
        plot=False,
        extra={"checkpoint": str(result.final_checkpoint), "untrained": untrained.metrics()},
    )
    write_json(out / "metrics.json", trained.metrics())
    plot_cmc(
        {"DF²AM trained": trained.cmc_curve(), "untrained (same init seed)": untrained.cmc_curve()},
        out / "cmc.png",
        title=f"synthetic SYSU-MM01, {trained.mode}-search, {len(trained.trials)} trials",
    )
    total = time.perf_counter() - start
    logger.info("demo finished in %s", _minutes(total))
    return DemoResult(
        out_dir=out,
        untrained=untrained,
        trained=trained,
        checkpoint=result.final_checkpoint,
        train_seconds=train_seconds,
        total_seconds=total,
        tiny=tiny,
    )
