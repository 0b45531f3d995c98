"""Sub-commands of the ``df2am`` CLI (filled in by its issue)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's sub-commands to the top-level parser."""
