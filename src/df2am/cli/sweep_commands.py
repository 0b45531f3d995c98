"""``df2am sweep`` (run a grid of trainings from a spec) and ``df2am reproduce`` (the paper's).

::

    df2am reproduce table3 --root /data/SYSU-MM01                 # → runs/paper/table3.md
    df2am reproduce table2 --root /data/RegDB --dry-run            # print the commands only
    df2am reproduce figure4 --root /data/SYSU-MM01 --launcher "torchrun --nproc_per_node=4"
    df2am sweep my_spec.yaml --root /data/SYSU-MM01 --out runs/mine train.precision=bf16
    df2am reproduce table1 --out runs/paper --collect-only         # rebuild the table only
    df2am reproduce llcm --root /data/LLCM                          # our DF²AM row on LLCM

Runs go one after another into ``OUT/<run>``; finished runs are skipped, unfinished ones
resumed, so the same command continues an interrupted sweep. The spec format is in
docs/reproduce.md; the engine is :mod:`df2am.experiments.sweep`.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from df2am.cli.arguments import overrides_anywhere
from df2am.experiments.sweep import PAPER_SPECS


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sweep`` and ``reproduce`` to the top-level parser."""
    s = sub.add_parser(
        "sweep",
        help="run every training of a sweep spec, then write its table and plots",
        description=(
            "Run the runs of SPEC (a sweep YAML: base config, overrides, runs/grids, evals, "
            "table, plots) one after another into OUT/<run>, skipping finished runs and "
            "resuming unfinished ones, then write OUT/<name>.md (ours beside the paper's "
            "numbers), OUT/<name>.json and OUT/<name>_<plot>.png. Extra key=value arguments "
            "override config keys of every run."
        ),
    )
    overrides_anywhere(s)
    s.add_argument("spec", type=Path, help="sweep spec YAML")
    _common(s, default_out=None)
    s.set_defaults(func=_run_sweep)

    r = sub.add_parser(
        "reproduce",
        help="reproduce a table or figure of the paper (a shipped sweep spec)",
        description=(
            "Shortcut for `df2am sweep` with the shipped spec of a table or figure of the "
            "paper. Use one --out for all of them: a run shared by several tables (the full "
            "model is in Tables 1, 3, 4 and Figures 3, 4) is then trained once."
        ),
    )
    overrides_anywhere(r)
    r.add_argument("target", choices=PAPER_SPECS, help="which table or figure")
    _common(r, default_out=Path("runs/paper"))
    r.set_defaults(func=_run_reproduce)


def _common(p: argparse.ArgumentParser, default_out: Path | None) -> None:
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--root", help="dataset folder (data.root of every run, --root of evals)")
    p.add_argument(
        "--out",
        type=Path,
        default=default_out,
        help="sweep folder: run dirs + tables + plots "
        + ("(default runs/paper)" if default_out else "(default runs/<spec name>)"),
    )
    p.add_argument(
        "--launcher",
        help='command that starts training, e.g. "torchrun --nproc_per_node=4" '
        "(default: this Python); followed by -m df2am.cli train ...",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan and commands only")
    p.add_argument(
        "--collect-only", action="store_true", help="run nothing; rebuild the table and plots"
    )


def _run_reproduce(args: argparse.Namespace) -> int:
    from df2am.experiments.sweep import paper_spec_path

    args.spec = paper_spec_path(args.target)
    return _run_sweep(args)


def _run_sweep(args: argparse.Namespace) -> int:
    from df2am.errors import ConfigError
    from df2am.experiments.sweep import SweepError, load_spec, plan_sweep, run_sweep

    for o in args.overrides:
        if "=" not in o:
            raise ConfigError(f"override {o!r}: expected key=value, e.g. train.precision=bf16")
    spec = load_spec(args.spec)
    out = args.out if args.out is not None else Path("runs") / spec.name
    if args.dry_run:
        plan = plan_sweep(
            spec, out, root=args.root or "<ROOT>", extra=args.overrides, launcher=args.launcher
        )
        print(f"{spec.name}: {len(plan.units)} unit(s) in {plan.out_dir}")
        for u in plan.units:
            note = f" (same model as {u.alias_of})" if u.alias_of else ""
            print(f"  {u.label}: {u.status}{note} → {u.dir}")
        for cmd in plan.commands():
            print(shlex.join(cmd))
        return 0
    if args.root is None and not args.collect_only:
        raise SweepError("give the dataset folder with --root DIR (or use --dry-run)")
    report = run_sweep(
        spec,
        out,
        root=args.root,
        extra=args.overrides,
        launcher=args.launcher,
        collect_only=args.collect_only,
    )
    print(report.markdown, end="")
    for f in report.files:
        print(f"wrote {f}")
    return 0
