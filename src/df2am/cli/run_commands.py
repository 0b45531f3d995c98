"""``df2am train``: train a model (one process or under torchrun), resume, RegDB trials.

::

    df2am train configs/sysu.yaml data.root=/data/SYSU-MM01             # → runs/sysu_df2am
    df2am train configs/sysu.yaml data.root=/data/SYSU-MM01 --out runs/a optim.lr=0.05
    df2am train --resume runs/a                                         # continue where it stopped
    df2am train --resume runs/a train.epochs=100                        # extend a run
    df2am train configs/regdb.yaml data.root=/data/RegDB --trials 1-10  # 10 models + mean ± std
    torchrun --nproc_per_node=4 -m df2am.cli train configs/sysu.yaml data.root=...   # DDP

Resuming reads ``RUN_DIR/config.yaml``; overrides on ``--resume`` may only change
:data:`df2am.train.resume.RESUME_OVERRIDABLE` keys (``train.epochs`` and where the run
executes: ``train.device``, ``data.root``, ``data.num_workers``, ``data.cache_dir``,
``train.log_every``); anything else is an error, so a resumed run is the run it continues.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from df2am.cli.arguments import overrides_anywhere
from df2am.errors import ConfigError

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train`` to the top-level parser."""
    p = sub.add_parser(
        "train",
        help="train a model (paper recipe); resume; RegDB trials",
        description=(
            "Train the model of CONFIG (model.arch: df2am, baseline, agw) with its recipe. Extra "
            "arguments key=value override config "
            "keys (e.g. data.root=/data/SYSU-MM01 optim.lr=0.05). The run directory receives "
            "config.yaml, metrics.jsonl, tb/, checkpoints/, model_final.pt and results.json. "
            "Works unchanged under torchrun --nproc_per_node=K (DDP)."
        ),
    )
    p.add_argument(
        "args",
        nargs="*",
        metavar="CONFIG [key=value ...]",
        help="config YAML file, then overrides (with --resume: overrides only)",
    )
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default <output_dir>/<name>)")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from checkpoints/last.pt, with its config.yaml",
    )
    p.add_argument(
        "--extend",
        action="store_true",
        help="with --resume: allow train.epochs=N beyond the run's schedule (recorded in "
        "train.log, metrics.jsonl and the checkpoints); without it a longer schedule is refused",
    )
    p.add_argument(
        "--trials",
        metavar="SPEC",
        help="RegDB: train one model per trial into RUN_DIR/trial_<t> and aggregate "
        "(e.g. 1-10, 3,5 or all)",
    )
    overrides_anywhere(p, "args")
    p.set_defaults(func=cmd_train)


def parse_trials(spec: str, dataset: str = "regdb") -> list[int]:
    """``"1-10"``, ``"3,5"``, ``"2-4,7"`` or ``"all"`` → sorted trial numbers of ``dataset``
    (one that trains a model per trial: RegDB, 1..10)."""
    from df2am.data.datasets import get_dataset

    ds = get_dataset(dataset)
    if not ds.trial_per_model:
        raise ConfigError(
            f"--trials trains one model per trial of datasets with a training split per trial "
            f"(RegDB); for {ds.title} the trials are gallery draws of one model (eval.trials)"
        )
    if spec.strip() == "all":
        return list(ds.trials)
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if lo > hi:
                    raise ValueError
                out.update(range(lo, hi + 1))
            else:
                out.add(int(part))
        except ValueError:
            raise ConfigError(
                f"--trials {spec!r}: expected trial numbers like 1-10, 3,5 or all"
            ) from None
    bad = sorted(t for t in out if t not in ds.trials)
    if bad or not out:
        raise ConfigError(f"--trials {spec!r}: {ds.title} trials are {ds.trial_rule}, got "
                          f"{bad or 'none'}")
    return sorted(out)


def _split_args(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    items = list(args.args)
    if args.resume:
        if items and "=" not in items[0]:
            raise ConfigError(
                f"--resume takes its config from {Path(args.resume) / 'config.yaml'}; "
                f"got a config file argument {items[0]!r} (give only key=value overrides)"
            )
        return None, items
    if not items or "=" in items[0]:
        raise ConfigError("df2am train: give a CONFIG file (e.g. configs/sysu.yaml) or --resume")
    return items[0], items[1:]


def _load(args: argparse.Namespace) -> tuple[Any, Path]:
    from df2am.config import load_config

    config_path, overrides = _split_args(args)
    if args.resume:
        run_dir = Path(args.resume)
        if args.out and Path(args.out) != run_dir:
            raise ConfigError("--out and --resume name different run directories")
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise ConfigError(f"--resume {run_dir}: no config.yaml there (not a run directory)")
        return load_config(saved, overrides), run_dir
    cfg = load_config(config_path, overrides)
    run_dir = Path(args.out) if args.out else Path(cfg.output_dir) / cfg.name
    return cfg, run_dir


def cmd_train(args: argparse.Namespace) -> int:
    cfg, run_dir = _load(args)
    if args.trials:
        return _train_trials(cfg, run_dir, parse_trials(args.trials, cfg.data.dataset),
                             bool(args.resume))
    from df2am.train import train

    result = train(cfg, run_dir, resume=bool(args.resume), extend=bool(args.extend))
    from df2am.train.distributed import env_world

    if env_world()[0] == 0:
        if args.resume and result.resumed_from >= result.epochs_completed:
            print(f"{run_dir}: run already finished ({result.epochs_completed} epochs); "
                  "nothing to train")
        print(f"run directory: {result.run_dir}")
        print(
            f"reported model: {result.final_checkpoint} (epoch {result.selected_epoch}, "
            f"selected by {result.selected_by})"
        )
        _print_results(run_dir / "results.json")
    return 0


def _print_results(path: Path) -> None:
    if not path.is_file():
        return
    from df2am.assess.results import read_metrics

    doc = read_metrics(path)
    keys = [k for k in ("rank1", "rank10", "rank20", "mAP", "mINP") if k in doc]
    print(
        "test: "
        + ", ".join(f"{k} {doc[k]:.2f}" + (f" ± {doc[k + '_std']:.2f}" if k + "_std" in doc else "")
                    for k in keys)
        + " (%)"
    )


def _train_trials(cfg: Any, run_dir: Path, trials: list[int], resume: bool) -> int:
    """One RegDB model per trial in ``RUN_DIR/trial_<t>``, then ``RUN_DIR/results.json``."""
    from df2am.train.trials import train_trials

    summary_path = train_trials(cfg, run_dir, trials, resume=resume)
    from df2am.train.distributed import env_world

    if env_world()[0] == 0:
        print(f"aggregated {len(trials)} trial(s): {summary_path}")
        _print_results(summary_path)
    return 0
