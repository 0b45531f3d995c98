"""Experiments: the offline demo and sweeps (the paper's tables and figures as grids of runs).

::

    from df2am.experiments import run_demo, load_spec, run_sweep

    result = run_demo("runs/demo")                         # df2am demo
    report = run_sweep(load_spec("table3.yaml"), "runs/paper", root="/data/SYSU-MM01")

Modules: :mod:`~df2am.experiments.demo` (the demo recipe and :func:`run_demo`) and
:mod:`~df2am.experiments.sweep` (``spec``, ``plan``, ``run``, ``report``). They drive the other
jobs (train, assess, deploy) and nothing imports them but the CLI.

Names are imported lazily, so ``import df2am.experiments`` stays cheap for the CLI.
"""

from __future__ import annotations

from df2am.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "run_demo": "df2am.experiments.demo",
    "DemoResult": "df2am.experiments.demo",
    "demo_config": "df2am.experiments.demo",
    "load_spec": "df2am.experiments.sweep",
    "plan_sweep": "df2am.experiments.sweep",
    "run_sweep": "df2am.experiments.sweep",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
