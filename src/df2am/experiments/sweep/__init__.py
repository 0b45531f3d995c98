"""Sweeps: a table or figure of the paper as a small grid of runs over a base config.

A *sweep spec* is a YAML file (schema in docs/reproduce.md; the paper's Tables 1–4 and
Figures 3–4 ship in ``df2am/configs/paper/``)::

    name: table3
    title: "Table 3: ablation on SYSU-MM01"
    base: base/sysu.yaml               # relative to the spec file
    overrides: []                      # applied to every run
    groups:                            # named sets of runs: explicit ...
      ablation:
        runs:
          sysu_baseline: [model.df2_module=false, model.test_feature=bn_global,
                          loss.use_df2=false, loss.use_affinity=false]
      lambda:                          # ... or a cartesian grid (run names from a template)
        grid: {loss.lambda_df2: [0.1, 0.3]}
        name: "sysu_lambda{loss.lambda_df2}"
    trials: []                         # RegDB: [1, ..., 10] trains one model per trial
    evals:                             # what each run is tested with (df2am eval options)
      all: {mode: all}
      indoor: {mode: indoor}
    table: {...}                       # Markdown layout + the paper's numbers
    plots: [...]                       # figure specs: line plots over a config key

Python API::

    from df2am.experiments.sweep import load_spec, run_sweep

    spec = load_spec("src/df2am/configs/paper/table3.yaml")
    report = run_sweep(spec, "runs/paper", root="/data/SYSU-MM01")
    print(report.markdown)             # also runs/paper/table3.md, table3.json

Every *unit* (a run, or one trial of a RegDB run) is one ``df2am train`` subprocess (optionally
under a launcher such as ``torchrun --nproc_per_node=4``) into ``OUT/<run>[/trial_<t>]``:

* a unit whose ``results.json`` exists is skipped (finished);
* a unit that holds a started run (``config.yaml`` or ``checkpoints/last.pt``) but no
  ``results.json`` is continued with ``df2am train --resume``;
* a unit whose trained model equals one already in ``OUT`` (another table's run, or a
  duplicate grid point such as λ = 1.1 and ζ = 1.5 in Figure 4) reuses that run directory, so
  the full model is trained once for Tables 1, 3, 4 and Figures 3, 4 when they share ``OUT``.

An evaluation reuses the trainer's final test (``results.json``) when the run's saved config
already has its options (e.g. ``eval.mode=all``); otherwise it runs ``df2am eval
model_final.pt --out UNIT/eval_<options>``. Each subprocess's output is appended to
``UNIT/log.txt``; a failure stops the sweep with an error naming the run and that log.

The package is split by concern (imports run one way: ``spec`` ← ``plan`` ← ``run``, and
``spec``/``plan`` ← ``report`` ← ``run``):

* :mod:`~df2am.experiments.sweep.spec`: the spec format (dataclasses, :func:`load_spec`, the
  shipped paper specs);
* :mod:`~df2am.experiments.sweep.plan`: run configs, model identity, skip / resume / reuse planning;
* :mod:`~df2am.experiments.sweep.run`: executing the plan (runner subprocesses, logs,
  :func:`run_sweep`);
* :mod:`~df2am.experiments.sweep.report`: collecting results, the Markdown table, plots, JSON.
"""

from __future__ import annotations

# The ``noqa: F401`` names are importable from here too (tests use ``METRICS``, ``model_key``
# and ``read_saved``) but stay out of ``__all__``.
from df2am.experiments.sweep.plan import (
    EvalPlan,  # noqa: F401
    SweepPlan,
    UnitPlan,
    model_key,  # noqa: F401
    plan_sweep,
    read_saved,  # noqa: F401
    resolve_run,
)
from df2am.experiments.sweep.report import (
    SweepReport,
    collect,
    read_metrics,
    render_markdown,
    write_plots,
    write_report,
)
from df2am.experiments.sweep.run import Runner, execute_plan, run_sweep, subprocess_runner
from df2am.experiments.sweep.spec import (
    EVAL_OPTIONS,  # noqa: F401
    METRICS,  # noqa: F401
    MODEL_NEUTRAL_PREFIXES,  # noqa: F401
    PAPER_SPECS,
    ColumnSpec,  # noqa: F401
    EvalSpec,
    PlotSpec,
    RunSpec,
    SeriesSpec,
    SweepError,
    SweepSpec,
    TableSpec,
    load_spec,
    paper_spec_dir,
    paper_spec_path,
)

__all__ = [
    "SweepError",
    "SweepSpec",
    "RunSpec",
    "EvalSpec",
    "TableSpec",
    "PlotSpec",
    "SeriesSpec",
    "UnitPlan",
    "SweepPlan",
    "SweepReport",
    "Runner",
    "PAPER_SPECS",
    "paper_spec_dir",
    "paper_spec_path",
    "load_spec",
    "resolve_run",
    "plan_sweep",
    "execute_plan",
    "write_report",
    "run_sweep",
    "collect",
    "read_metrics",
    "render_markdown",
    "write_plots",
    "subprocess_runner",
]
