"""Deprecated: ``df2am.engine`` used to hold four jobs; each has its own room now.

================================  =============================================================
old                               new
================================  =============================================================
``df2am.engine.train`` & co.      :mod:`df2am.train` (trainer, checkpoint, optim, precision,
                                  distributed, runlock, rundir, resume, metrics_log, ...)
``evaluate_model``, results       :mod:`df2am.assess` (evaluator, results, plots, visualize)
``load_model``, features, index   :mod:`df2am.deploy` (api, features, index, export)
``run_demo``, sweeps              :mod:`df2am.experiments` (demo, sweep)
``engine.atomic``                 :mod:`df2am.atomic`
================================  =============================================================

For one release the old names still work: ``from df2am.engine import load_model`` and every old
module (``df2am.engine.trainer``, ``df2am.engine.api``, ...) import as before, with a
``DeprecationWarning`` naming the new place. Nothing inside df2am imports from here.
"""

from __future__ import annotations

import importlib
from typing import Any

from df2am.engine.moved import warn_moved

#: The names ``df2am.engine`` exported, and the room that exports them now.
MOVED: dict[str, str] = {
    "train": "df2am.train",
    "TrainResult": "df2am.train",
    "run_status": "df2am.train",
    "save_checkpoint": "df2am.train",
    "load_checkpoint": "df2am.train",
    "FORMAT_VERSION": "df2am.train",
    "evaluate_model": "df2am.assess",
    "write_eval_outputs": "df2am.assess",
    "EvalReport": "df2am.assess",
    "format_table": "df2am.assess",
    "load_model": "df2am.deploy",
    "extract_features": "df2am.deploy",
    "search": "df2am.deploy",
    "evaluate_checkpoint": "df2am.deploy",
    "run_demo": "df2am.experiments",
    "DemoResult": "df2am.experiments",
    "run_sweep": "df2am.experiments",
}

__all__ = sorted(MOVED)


def __getattr__(name: str) -> Any:
    room = MOVED.get(name)
    if room is None:
        raise AttributeError(f"module 'df2am.engine' has no attribute {name!r}")
    # Not cached in this module: every use of an old name warns.
    warn_moved(f"df2am.engine.{name}", f"{room}.{name}")
    return getattr(importlib.import_module(room), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(MOVED))
