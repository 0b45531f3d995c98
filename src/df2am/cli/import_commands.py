"""``df2am import``: a checkpoint of other code (the AGW reference's) as a df2am checkpoint.

::

    df2am import sysu_agw_p4_n8_lr_0.1_seed_0_best.t --from agw --out agw_sysu.pt
    df2am import regdb_agw_best.t --from agw --dataset regdb --out agw_regdb.pt data.trial=3
    df2am import caj_sysu_best.t --from agw --out caj_sysu.pt model.flip_test=true

It prints what was mapped, ignored (the reference's unused tensors, with counts), filled and
assumed; every df2am verb then works on the file written (eval, visualize, extract, index,
search, serve, export). The library function is :func:`df2am.deploy.importer.import_checkpoint`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from df2am.atomic import check_output
from df2am.cli.arguments import overrides_anywhere


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``import`` to the top-level parser."""
    from df2am.data.datasets import DATASETS
    from df2am.deploy.importer import SOURCES

    p = sub.add_parser(
        "import",
        help="convert a checkpoint of other code (AGW reference) into a df2am checkpoint",
        description=(
            "Read CHECKPOINT (weights_only: a pickle that would run code is refused), map every "
            "tensor onto df2am's network (a key that cannot be placed, a missing or mis-shaped "
            "one fails the import, named; tensors the reference's forward never uses are "
            "listed as ignored; a DataParallel 'module.' prefix is removed), load them strictly "
            "and write OUT in df2am's checkpoint format with a config for --dataset (the "
            "shipped recipe's data and eval sections) and a record of the import (source file, "
            "its SHA-256, the conversion summary). key=value arguments override config keys."
        ),
    )
    overrides_anywhere(p)
    p.add_argument("checkpoint", type=Path, help="the checkpoint file of the other code")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. data.trial=3 model.flip_test=true")
    p.add_argument("--from", dest="source", required=True, choices=sorted(SOURCES),
                   help="the format: " + "; ".join(f"{k}: {s.title}" for k, s in SOURCES.items()))
    p.add_argument("--out", type=Path, required=True, help="the df2am checkpoint to write")
    p.add_argument("--dataset", default="sysu", choices=sorted(DATASETS),
                   help="the dataset the model was trained on (default sysu): the config's "
                   "data and eval sections")
    p.add_argument("--pooling", choices=["gem", "avg"],
                   help="pooling (no weights say it): default GeM with non-local blocks, "
                   "average without (the reference switches them together)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from df2am.deploy.importer import import_checkpoint

    check_output(args.out, what="--out")
    result = import_checkpoint(
        args.checkpoint, args.out, source=args.source, dataset=args.dataset,
        pooling=args.pooling, overrides=args.overrides, force=args.force,
    )
    m = result.cfg.model
    print(result.report.summary())
    print(f"source SHA-256 {result.record['sha256']}")
    print(f"wrote {result.path} (model.arch={m.arch}, ResNet-{m.depth}, non_local={m.non_local}, "
          f"pooling={m.pooling}, test feature {m.test_feature}, flip {m.flip_test}; "
          f"{result.cfg.data.dataset} at {result.cfg.data.height}x{result.cfg.data.width})")
    print(f"next: df2am eval {result.path} --root DIR")
    return 0
