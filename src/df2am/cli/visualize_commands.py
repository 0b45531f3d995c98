"""``df2am visualize``: paper figures of a checkpoint (ranked lists, part attention, t-SNE).

::

    df2am visualize runs/sysu/model_final.pt --root /data/SYSU-MM01 --out runs/sysu/figs \\
        --mode all --queries 4 --top-k 10 --tsne --tsne-untrained
    df2am visualize runs/regdb_t1/model_final.pt --root /data/RegDB --dataset regdb \\
        --direction t2v --query-index 0,7,12 --out figs
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from df2am.atomic import check_output
from df2am.errors import CheckpointError, ConfigError, DatasetError, EvaluationError

logger = logging.getLogger(__name__)


def _indices(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``visualize`` to the top-level parser."""
    from df2am.cli.arguments import option_choices
    from df2am.data.datasets import dataset_names

    p = sub.add_parser(
        "visualize",
        help="draw ranked-list strips, part attention (DF²) and a t-SNE of a checkpoint",
        description=(
            "For queries of one trial's test split, write rank_<i>.png (the query and its "
            "top-k gallery images by cosine distance 1 - q·g, correct matches framed green, "
            "wrong red), parts_<i>.png (the DF² part weights; skipped for architectures without "
            "part attention: agw, baseline), "
            "optionally tsne.png, and visualize.json listing everything drawn."
        ),
    )
    p.add_argument("checkpoint", type=Path, help="model_final.pt or a training checkpoint")
    p.add_argument("--root", type=Path, required=True, help="dataset root folder")
    p.add_argument("--dataset", choices=dataset_names(), help="default: the checkpoint's")
    p.add_argument("--mode", choices=option_choices("mode"), help="SYSU search mode")
    p.add_argument("--direction", choices=option_choices("direction"),
                   help="query→gallery direction (RegDB v2t | t2v; LLCM i2v | v2i | ...)")
    p.add_argument("--trial", type=int,
                   help="trial (default: the model's own for RegDB, else the first)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--queries", type=int, default=4,
                       help="number of random (seeded) queries (default 4)")
    which.add_argument("--query-index", type=_indices, help="query indices, e.g. 0,5,12")
    p.add_argument("--top-k", type=int, default=10, help="gallery images per strip (10)")
    p.add_argument("--seed", type=int, default=0, help="query choice and t-SNE seed (0)")
    p.add_argument("--tsne", action="store_true", help="also write tsne.png (scikit-learn)")
    p.add_argument("--tsne-untrained", action="store_true",
                   help="t-SNE before/after: add an untrained network of the same config "
                        "(random init, pretrained='none')")
    p.add_argument("--device", default="cpu", help="cpu (default) | auto | cuda[:N]")
    p.add_argument("--batch-size", type=int, help="test batch size (default eval.batch_size)")
    p.set_defaults(func=_run_visualize)


def _run_visualize(args: argparse.Namespace) -> int:
    from df2am.assess.visualize import visualize
    from df2am.deploy.api import load_model

    if not args.checkpoint.is_file():
        raise CheckpointError(f"checkpoint not found: {args.checkpoint}")
    if not args.root.is_dir():
        raise DatasetError(f"--root {args.root}: not a folder")
    if args.top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {args.top_k}")
    check_output(args.out, what="--out", folder=True)
    model, cfg = load_model(args.checkpoint, device=args.device)
    try:
        result = visualize(
            model, cfg, args.root, args.out,
            dataset=args.dataset, mode=args.mode, direction=args.direction, trial=args.trial,
            queries=args.queries, query_index=args.query_index, top_k=args.top_k,
            seed=args.seed, tsne=args.tsne, tsne_untrained=args.tsne_untrained,
            device=args.device, batch_size=args.batch_size,
        )
    except EvaluationError as exc:  # e.g. non-finite features: the checkpoint is the culprit
        raise EvaluationError(f"{args.checkpoint}: {exc}") from None
    for path in result.paths:
        print(f"wrote {path}")
    return 0
