"""``df2am protocol`` and ``df2am data``: look at a dataset before training on it.

Examples::

    df2am protocol sysu --root /data/SYSU-MM01 --mode all --trial 0
    df2am protocol sysu --root /data/SYSU-MM01 --mode indoor --trial 3 --sampler official \\
        --shots 10 --split-file ~/rand_perm_cam.mat
    df2am protocol regdb --root /data/RegDB --trial 1 --direction t2v
    df2am protocol llcm --root /data/LLCM --trial 0 --direction i2v
    df2am data verify --dataset sysu --root /data/SYSU-MM01
    df2am data synth --layout regdb --out /tmp/regdb-synth --ids 20 --seed 0 --size 64x32

``protocol`` prints ``{"query": [...], "gallery": [...]}`` (one record per line; each record
``{"path", "pid", "cam"}`` with the path relative to ``--root``) in the order we evaluate on.
SYSU-MM01 and LLCM trials are 0..9, RegDB trials 1..10.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence

from df2am.data.records import ImageRecord
from df2am.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``protocol`` and ``data`` to the top-level parser."""
    _register_protocol(sub)
    _register_data(sub)


# ----------------------------------------------------------------------------------- protocol


#: Help of the protocol options (TestOptions fields) on the command line.
OPTION_HELP = {
    "mode": "search mode",
    "sampler": "gallery sampler",
    "shots": "gallery shots",
    "split_file": "rand_perm_cam.mat for --sampler official (default: ROOT/exp/rand_perm_cam.mat)",
}
#: Options a user must give to ``df2am protocol``: they choose which images are compared.
REQUIRED_OPTIONS = ("mode", "direction")


def _register_protocol(sub: argparse._SubParsersAction) -> None:
    from df2am.data.datasets import DATASETS

    protocol = sub.add_parser(
        "protocol",
        help="print a test protocol's query/gallery lists as JSON",
        description="Print the query and gallery lists of one evaluation trial as JSON "
        '({"query": [{"path", "pid", "cam"}, ...], "gallery": [...]}), paths relative to '
        "--root, in evaluation order.",
    )
    datasets = protocol.add_subparsers(dest="dataset", metavar="DATASET")
    datasets.required = True
    for ds in DATASETS.values():
        first, last = ds.trials[0], ds.trials[-1]
        p = datasets.add_parser(ds.name, help=f"{ds.title} (trials {first}..{last})")
        p.add_argument("--root", required=True, help=ds.layout_help)
        p.add_argument("--trial", required=True, type=int, help=f"trial {first}..{last}")
        for option, choices in ds.option_choices.items():
            required = option in REQUIRED_OPTIONS
            kwargs: dict = {"required": required,
                            "default": None if required else ds.option_defaults[option]}
            if choices is not None:
                kwargs["choices"] = choices
                kwargs["type"] = type(choices[0])
            text = (OPTION_HELP.get(option)
                    or "; ".join(f"{k}: {v}" for k, v in ds.direction_help.items()))
            p.add_argument("--" + option.replace("_", "-"), help=text, **kwargs)
        p.set_defaults(func=_run_protocol)


def _run_protocol(args: argparse.Namespace) -> int:
    from df2am.data.datasets import get_dataset

    ds = get_dataset(args.dataset, "dataset")
    options = ds.resolve_options(**{k: getattr(args, k) for k in ds.option_choices})
    query, gallery = ds.test_split(args.root, ds.check_trial(args.trial), options)
    sys.stdout.write(format_protocol_json(query, gallery))
    return 0


def format_protocol_json(query: Sequence[ImageRecord], gallery: Sequence[ImageRecord]) -> str:
    """``{"query": [...], "gallery": [...]}`` with one record per line (valid JSON)."""

    def block(records: Sequence[ImageRecord]) -> str:
        if not records:
            return "[]"
        lines = ",\n".join(
            "    " + json.dumps({"path": r.path, "pid": r.pid, "cam": r.cam}) for r in records
        )
        return "[\n" + lines + "\n  ]"

    return '{\n  "query": ' + block(query) + ',\n  "gallery": ' + block(gallery) + "\n}\n"


# --------------------------------------------------------------------------------------- data


def _register_data(sub: argparse._SubParsersAction) -> None:
    from df2am.data.datasets import dataset_names
    data = sub.add_parser("data", help="check a dataset or write a synthetic one")
    commands = data.add_subparsers(dest="data_command", metavar="COMMAND")
    commands.required = True

    p = commands.add_parser(
        "verify",
        help="check layout, id files, counts and decode every image",
        description="Check a dataset copy: layout, id/idx files, counts per split, camera and "
        "modality, and decode every image. Prints a summary table; exits 1 and lists every "
        "problem (file and what was expected) when something is wrong.",
    )
    p.add_argument("--dataset", required=True, choices=dataset_names())
    p.add_argument("--root", required=True, help="the unzipped dataset folder")
    p.add_argument("--workers", type=int, default=None, help="decoding threads (default: ≤ 8)")
    p.set_defaults(func=_run_verify)

    p = commands.add_parser(
        "synth",
        help="write a small synthetic dataset in the SYSU-MM01, RegDB or LLCM layout",
        description="Write a synthetic RGB-IR dataset that the real readers accept, for smoke "
        "tests and examples.",
    )
    p.add_argument("--layout", required=True, choices=dataset_names(),
                   help="the released layout to write (every dataset has a synthetic twin)")
    p.add_argument("--out", required=True, help="output folder (the dataset root)")
    p.add_argument("--ids", type=int, default=None, help="number of identities")
    p.add_argument("--seed", type=int, default=None, help="random seed")
    p.add_argument("--size", type=parse_size, default=None, help="image size HxW, e.g. 128x64")
    p.add_argument("--split", type=parse_split, default=None,
                   help="SYSU/LLCM: TRAIN,VAL fractions of the ids (default 0.6,0.1; the rest "
                   "is test)")
    p.add_argument("--workers", type=int, default=1,
                   help="rendering processes (default 1; the files are the same for any number)")
    p.set_defaults(func=_run_synth)


def _run_verify(args: argparse.Namespace) -> int:
    from df2am.data.verify import verify_dataset

    report = verify_dataset(args.dataset, args.root, workers=args.workers)
    print(report.format())
    return 0 if report.ok else 1


def parse_size(text: str) -> tuple[int, int]:
    """``"128x64"`` → ``(128, 64)`` (height, width)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not match or int(match[1]) < 1 or int(match[2]) < 1:
        raise argparse.ArgumentTypeError(f"expected HxW with positive integers, got {text!r}")
    return int(match[1]), int(match[2])


def parse_split(text: str) -> tuple[float, float]:
    """``"0.6,0.1"`` → ``(0.6, 0.1)`` (train and val fractions of the ids)."""
    parts = text.split(",")
    try:
        train, val = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected TRAIN,VAL fractions such as 0.6,0.1, got {text!r}") from None
    return train, val


def _run_synth(args: argparse.Namespace) -> int:
    # Imported here so the other commands work without the renderer's dependencies loaded.
    from df2am.data.synthetic import write_synthetic

    kwargs: dict[str, object] = {}
    if args.ids is not None:
        if args.ids < 1:
            raise ConfigError(f"--ids must be a positive number of identities, got {args.ids}")
        kwargs["num_ids"] = args.ids
    if args.seed is not None:
        kwargs["seed"] = args.seed
    if args.size is not None:
        kwargs["size"] = args.size
    if args.split is not None:
        kwargs["split"] = args.split
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1 rendering processes, got {args.workers}")
    out = write_synthetic(args.out, args.layout, workers=args.workers, **kwargs)
    print(f"wrote synthetic {args.layout} dataset to {out}")
    return 0
