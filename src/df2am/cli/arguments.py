"""argparse helpers shared by the sub-commands: overrides after options, protocol choices."""

from __future__ import annotations

import argparse


class _PositionalsAnywhere(argparse.ArgumentParser):
    """Accept ``key=value`` overrides after options too (``CONFIG --out D k=v``).

    argparse fills a ``nargs="*"`` positional from the first run of positional strings only,
    so overrides that follow an option would be "unrecognized"; collect them here instead.
    """

    positional_dest = "overrides"

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        ns, extras = super().parse_known_args(args, namespace)
        stray = [a for a in extras if "=" in a and not a.startswith("-")]
        if stray:
            dest = self.positional_dest
            setattr(ns, dest, [*getattr(ns, dest), *stray])
            extras = [a for a in extras if a not in stray]
        return ns, extras


def overrides_anywhere(parser: argparse.ArgumentParser, dest: str = "overrides") -> None:
    """Let ``parser``'s ``nargs="*"`` positional ``dest`` also take ``key=value`` strings that
    come after options. (``add_parser`` cannot be given a parser class, hence the swap.)"""
    parser.__class__ = _PositionalsAnywhere
    parser.positional_dest = dest  # type: ignore[attr-defined]


def feature_choices() -> list[str]:
    """Every architecture's test features (``model.test_feature``); the model checks its own."""
    from df2am.config import ARCH_FEATURES

    return sorted({f for features in ARCH_FEATURES.values() for f in features})


def option_choices(option: str) -> list:
    """Every dataset's values of one protocol option (the evaluator checks the dataset's)."""
    from df2am.data.datasets import DATASETS

    values: list = []
    for ds in DATASETS.values():
        values += [v for v in ds.option_choices.get(option) or () if v not in values]
    return values
