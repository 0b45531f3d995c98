"""Model-level evaluation: a trained network through a test protocol, and its reports.

Beside :mod:`df2am.evaluation` (arrays in, numbers out), never inside it: this room extracts
features with a model, scores every trial with the evaluation leaf, and writes and draws the
results::

    from df2am.assess import evaluate_model, format_table, write_eval_outputs

    report = evaluate_model(model, cfg, "/data/SYSU-MM01", mode="all", trials=10)
    print(format_table(report))
    write_eval_outputs(report, "runs/sysu/eval_sysu_all")   # results.json + cmc.png

Modules: :mod:`~df2am.assess.evaluator` (extract → score → report),
:mod:`~df2am.assess.results` (the one reader/writer of ``results.json``),
:mod:`~df2am.assess.plots` (CMC curves), :mod:`~df2am.assess.visualize` (ranked strips, part
attention, t-SNE).

Names are imported lazily, so ``import df2am.assess`` stays cheap for the CLI.
"""

from __future__ import annotations

from df2am.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "evaluate_model": "df2am.assess.evaluator",
    "write_eval_outputs": "df2am.assess.evaluator",
    "EvalReport": "df2am.assess.evaluator",
    "EvalSplits": "df2am.assess.evaluator",
    "build_eval_splits": "df2am.assess.evaluator",
    "extract_records": "df2am.assess.evaluator",
    "format_table": "df2am.assess.evaluator",
    "read_results": "df2am.assess.results",
    "read_metrics": "df2am.assess.results",
    "write_results": "df2am.assess.results",
    "plot_cmc": "df2am.assess.plots",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
