"""``df2am eval`` (test a checkpoint) and ``df2am demo`` (offline end-to-end demonstration).

::

    df2am eval runs/sysu/model_final.pt --root /data/SYSU-MM01 --mode all --trials 10
    df2am eval runs/regdb_t1/model_final.pt --root /data/RegDB --dataset regdb --direction t2v
    df2am eval runs/llcm/model_final.pt --root /data/LLCM --direction v2i_transposed --rerank
    df2am demo --out runs/demo
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from df2am.atomic import check_output
from df2am.cli.arguments import feature_choices, option_choices
from df2am.errors import CheckpointError, DatasetError, EvaluationError

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``eval`` and ``demo`` to the top-level parser."""
    _add_eval(sub)
    _add_demo(sub)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    from df2am.data.datasets import dataset_names

    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint with the SYSU-MM01, RegDB or LLCM test protocol",
        description=(
            "Extract test features once, evaluate every trial, print Rank-1/5/10/20, mAP and "
            "mINP as mean ± std over the trials, and write results.json and cmc.png. Settings "
            "not given default to the checkpoint's config. RegDB models are tested on the trial "
            "they were trained on (data.trial)."
        ),
    )
    p.add_argument("checkpoint", type=Path, help="model_final.pt or a training checkpoint")
    p.add_argument("--root", type=Path, required=True, help="dataset root folder")
    p.add_argument("--dataset", choices=dataset_names(), help="default: the checkpoint's")
    p.add_argument("--mode", choices=option_choices("mode"), help="SYSU search mode")
    p.add_argument("--sampler", choices=option_choices("sampler"), help="SYSU gallery sampler")
    p.add_argument("--shots", type=int, choices=option_choices("shots"), help="SYSU gallery shots")
    p.add_argument("--trials", type=int,
                   help="trials of SYSU-MM01 / LLCM (1..10); RegDB: 1 (the model's own)")
    p.add_argument("--direction", choices=option_choices("direction"),
                   help="query→gallery direction: RegDB v2t | t2v; LLCM i2v | v2i | "
                        "v2i_transposed (the reference code's V→I: sampled NIR probes against "
                        "all visible images)")
    p.add_argument("--rerank", action=argparse.BooleanOptionalAction, default=None,
                   help="k-reciprocal re-ranking (default eval.rerank, off)")
    p.add_argument("--rerank-k1", type=int, help="re-ranking k1 (default eval.rerank_k1, 20)")
    p.add_argument("--rerank-k2", type=int, help="re-ranking k2 (default eval.rerank_k2, 6)")
    p.add_argument("--rerank-lambda", type=float,
                   help="re-ranking λ, weight of the original distance (default 0.3)")
    p.add_argument(
        "--split-file", help="SYSU official split (default <root>/exp/rand_perm_cam.mat)"
    )
    p.add_argument(
        "--out",
        type=Path,
        help="output folder (default <checkpoint dir>/eval_<dataset>_<mode|direction>[_rerank])",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    p.add_argument("--batch-size", type=int, help="test batch size (default eval.batch_size)")
    p.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average with horizontally flipped images (default model.flip_test)",
    )
    p.add_argument(
        "--feature",
        choices=feature_choices(),
        help="test feature (default model.test_feature; which exist depends on model.arch)",
    )
    p.add_argument(
        "--diagnose",
        action="store_true",
        help="also report modality alignment: within-RGB, within-IR and cross-modality "
        "Rank-1/mAP and the cross-modality positive/negative distance gap (results.json "
        "'alignment')",
    )
    p.set_defaults(func=_run_eval)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser(
        "demo",
        help="train and evaluate DF²AM on a built-in synthetic dataset (offline, CPU)",
        description=(
            "Write (or reuse) a synthetic SYSU-MM01-layout dataset, evaluate the untrained "
            "network, train DF²AM from scratch, evaluate it with the SYSU all-search protocol "
            "over 10 trials and print both tables. DIR receives metrics.json, "
            "metrics_untrained.json, config.yaml, the checkpoint, TensorBoard logs (tb/) and "
            "cmc.png."
        ),
    )
    d.add_argument("--out", type=Path, default=Path("runs/demo"), help="default runs/demo")
    d.add_argument("--device", default="cpu", help="cpu (default) | auto | cuda")
    d.add_argument(
        "--tiny",
        action="store_true",
        help="a seconds-long smoke version (few ids, small images, 1 short epoch) for tests",
    )
    d.set_defaults(func=_run_demo)


def _run_eval(args: argparse.Namespace) -> int:
    from df2am.assess.evaluator import format_table, write_eval_outputs
    from df2am.deploy.api import evaluate_checkpoint

    if not args.checkpoint.is_file():
        raise CheckpointError(f"checkpoint not found: {args.checkpoint}")
    if not args.root.is_dir():
        raise DatasetError(f"--root {args.root}: not a folder")
    # Before the work: --out, or the checkpoint's folder the default output goes into.
    check_output(args.out or args.checkpoint.resolve().parent / "eval_", what="--out",
                 folder=True)
    try:
        report = evaluate_checkpoint(
            args.checkpoint,
            args.root,
            device=args.device,
            dataset=args.dataset,
            mode=args.mode,
            sampler=args.sampler,
            shots=args.shots,
            trials=args.trials,
            split_file=args.split_file,
            direction=args.direction,
            batch_size=args.batch_size,
            feature=args.feature,
            flip=args.flip,
            diagnose=args.diagnose,
            rerank=args.rerank,
            rerank_k1=args.rerank_k1,
            rerank_k2=args.rerank_k2,
            rerank_lambda=args.rerank_lambda,
        )
    except EvaluationError as exc:  # e.g. non-finite features: the checkpoint's fault
        raise EvaluationError(f"{args.checkpoint}: {exc}") from None
    out = args.out
    if out is None:
        which = report.mode or report.direction
        rr = "_rerank" if report.rerank else ""
        out = args.checkpoint.resolve().parent / f"eval_{report.dataset}_{which}{rr}"
    path = write_eval_outputs(
        report, out, extra={"checkpoint": str(args.checkpoint.resolve()), "root": str(args.root)}
    )
    print(format_table(report))
    print(f"wrote {path} and {path.parent / 'cmc.png'}")
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from df2am.experiments.demo import run_demo

    result = run_demo(args.out, tiny=args.tiny, device=args.device)
    print(result.summary_text())
    return 0
