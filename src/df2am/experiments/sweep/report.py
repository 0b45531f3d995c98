"""Sweep results: read each unit's metrics, :class:`SweepReport`, the Markdown table, the
plots and the JSON written next to them.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from df2am.assess.results import read_metrics as read_results_metrics
from df2am.atomic import atomic_write_text
from df2am.experiments.sweep.plan import SweepPlan, UnitPlan
from df2am.experiments.sweep.spec import (
    EVAL_OPTIONS,
    METRICS,
    EvalSpec,
    SweepError,
    SweepSpec,
    fmt_value,
)

# The package's logger name, as before the split into modules.
logger = logging.getLogger("df2am.experiments.sweep")


def read_metrics(path: str | Path) -> dict[str, float]:
    """The metrics (percent) of one results JSON (:func:`df2am.assess.results.read_metrics`,
    the one reader of the format), its errors as :class:`SweepError`."""
    return read_results_metrics(path, error=SweepError)


def _mean_over_trials(rows: list[dict[str, float]]) -> dict[str, float]:
    """RegDB: mean ± population std over the per-trial models (as aggregate_trials)."""
    out: dict[str, float] = {}
    for key in METRICS:
        vals = [r[key] for r in rows if key in r]
        if len(vals) == len(rows):
            mean = sum(vals) / len(vals)
            out[key] = mean
            out[f"{key}_std"] = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
    return out


@dataclass
class SweepReport:
    """Collected results: ``results[run][eval]`` = metrics (percent) or None when missing."""

    spec: SweepSpec
    out_dir: Path
    results: dict[str, dict[str, dict[str, float] | None]]
    values: dict[str, dict[str, Any]]
    markdown: str = ""
    files: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "title": self.spec.title,
            "spec": str(self.spec.path),
            "out": str(self.out_dir),
            "runs": {
                run.name: {
                    "group": run.group,
                    "base": str(self.spec.base_of(run)),
                    "overrides": list(run.overrides),
                    "config": self.values.get(run.name, {}),
                    "results": self.results.get(run.name, {}),
                }
                for run in self.spec.runs
            },
        }


def collect(plan: SweepPlan) -> SweepReport:
    """Read every unit's results; a run's value for an eval is None until all its units have it.

    RegDB runs (``trials``) report the mean and population std over their trial models.
    """
    results: dict[str, dict[str, dict[str, float] | None]] = {}
    values: dict[str, dict[str, Any]] = {}
    by_run: dict[str, list[UnitPlan]] = {}
    for unit in plan.units:
        by_run.setdefault(unit.run, []).append(unit)
    for run in plan.spec.runs:
        units = by_run.get(run.name, [])
        values[run.name] = dict(units[0].config) if units else {}
        results[run.name] = {}
        for ev in plan.spec.evals:
            paths = [next(e.results for e in u.evals if e.eval == ev.name) for u in units]
            if not paths or not all(p.is_file() for p in paths):
                results[run.name][ev.name] = None
                continue
            rows = [read_metrics(p) for p in paths]
            results[run.name][ev.name] = rows[0] if len(rows) == 1 and not plan.spec.trials \
                else _mean_over_trials(rows)
    return SweepReport(plan.spec, plan.out_dir, results, values)


def _cell(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def _tricks(report: SweepReport, ev: EvalSpec) -> str:
    """Flip averaging and re-ranking of one eval, as its runs resolve them (stated always:
    published numbers often use them unsaid)."""
    def value(run: str, key: str, default: Any) -> Any:
        if key in ev.options:
            return ev.options[key]
        return report.values.get(run, {}).get(EVAL_OPTIONS[key], default)

    def describe(flip: bool, rr: bool, params: tuple | None) -> str:
        text = "on (k1={}, k2={}, λ={})".format(*params) if rr and params else "off"
        return f"flip averaging {'on' if flip else 'off'}, re-ranking {text}"

    runs_by: dict[str, list[str]] = {}  # description → runs, in spec order
    for run in report.spec.runs:
        rr = value(run.name, "rerank", False)
        params = tuple(value(run.name, k, d) for k, d in
                       (("rerank_k1", 20), ("rerank_k2", 6), ("rerank_lambda", 0.3)))
        text = describe(bool(value(run.name, "flip", False)), bool(rr), params if rr else None)
        runs_by.setdefault(text, []).append(report.spec.table.labels.get(run.name, run.name)
                                            if report.spec.table else run.name)
    if len(runs_by) == 1:
        return next(iter(runs_by))
    # Each method tested its own way (e.g. CAJ flips): say which run did what.
    return "differs between runs — " + "; ".join(
        f"{', '.join(names)}: {text}" for text, names in runs_by.items())


def render_markdown(report: SweepReport) -> str:
    """The spec's table in Markdown, each cell ``ours / paper`` in percent."""
    spec, table = report.spec, report.spec.table
    lines = [f"# {spec.title}", ""]
    if table is None:
        return "\n".join(lines) + "\n"
    trials = f", mean over RegDB trials {spec.trials}" if spec.trials else ""
    lines += [
        f"Each cell: ours / paper (%). Ours: `{spec.name}` runs under `{report.out_dir}`"
        f"{trials}; — = not run yet / not reported.",
        "",
        "| " + " | ".join([table.row_header, *(c.header for c in table.columns)]) + " |",
        "| " + " | ".join(["---"] + ["---:"] * len(table.columns)) + " |",
    ]
    lines[-2:-2] = [f"Evaluation `{ev.name}`: {_tricks(report, ev)}." for ev in spec.evals
                    if any(c.eval == ev.name for c in table.columns)] + [""]
    for name in table.rows:
        paper = table.paper.get(name, (None,) * len(table.columns))
        cells = []
        for col, pv in zip(table.columns, paper, strict=True):
            ours = (report.results.get(name, {}).get(col.eval) or {}).get(col.metric)
            cells.append(f"{_cell(ours)} / {_cell(pv)}")
        lines.append("| " + " | ".join([table.labels.get(name, name), *cells]) + " |")
    for label, paper_vals in table.references.items():
        cells = [f"— / {_cell(v)}" for v in paper_vals]
        lines.append("| " + " | ".join([f"{label} (paper)", *cells]) + " |")
    if table.notes:
        lines.append("")
        lines += [f"- {n}" for n in table.notes]
    return "\n".join(lines) + "\n"


def write_plots(report: SweepReport) -> list[Path]:
    """One PNG per plot of the spec: Rank-1 / mAP against the swept key, paper points starred.

    Series with no finished run yet are drawn from the paper's points only; a plot with no data
    at all is still written (empty axes), so the file set does not depend on progress.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    paths = []
    names = {"rank1": "Rank-1 (%)", "rank5": "Rank-5 (%)", "rank10": "Rank-10 (%)",
             "rank20": "Rank-20 (%)", "mAP": "mAP (%)", "mINP": "mINP (%)"}
    for plot in report.spec.plots:
        fig = Figure(figsize=(4.6 * len(plot.metrics), 3.6), dpi=120)
        FigureCanvasAgg(fig)
        for mi, metric in enumerate(plot.metrics):
            ax = fig.add_subplot(1, len(plot.metrics), mi + 1)
            for si, series in enumerate(plot.series):
                color = f"C{si}"
                pts = []
                for run in report.spec.group(series.group):
                    x = report.values[run.name].get(series.x)
                    res = report.results[run.name].get(plot.eval)
                    if isinstance(x, (int, float)) and res and metric in res:
                        pts.append((float(x), res[metric]))
                pts.sort()
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=color,
                            label=f"{series.label} (ours)")
                paper_pts = sorted((x, v[metric]) for x, v in series.paper.items() if metric in v)
                if paper_pts:
                    ax.plot([p[0] for p in paper_pts], [p[1] for p in paper_pts], "*",
                            color=color, markersize=12, label=f"{series.label} (paper)")
                if metric in series.paper_best:
                    ax.axhline(series.paper_best[metric], color=color, linestyle="--",
                               linewidth=1, label=f"{series.label} (paper best)")
            if plot.logx:
                ax.set_xscale("log", base=2)
                # Label the swept values themselves (1, 2, 4, ...) rather than powers of two.
                xs = sorted({float(report.values[r.name].get(s.x, 0) or 0)
                             for s in plot.series for r in report.spec.group(s.group)} - {0.0})
                ax.set_xticks(xs, [fmt_value(x) for x in xs])
                ax.minorticks_off()
            ax.set_xlabel(plot.xlabel or plot.series[0].x)
            ax.set_ylabel(names[metric])
            ax.grid(True, alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        if plot.title:
            fig.suptitle(plot.title)
        fig.tight_layout()
        path = report.out_dir / f"{report.spec.name}_{plot.name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        paths.append(path)
    return paths


def write_report(report: SweepReport) -> SweepReport:
    """Write ``OUT/<name>.md``, ``OUT/<name>.json`` and the plots; fill ``report.files``."""
    out = report.out_dir
    out.mkdir(parents=True, exist_ok=True)
    report.markdown = render_markdown(report)
    md = out / f"{report.spec.name}.md"
    md.write_text(report.markdown)
    js = out / f"{report.spec.name}.json"
    atomic_write_text(js, json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    report.files = [md, js, *write_plots(report)]
    for f in report.files:
        logger.info("wrote %s", f)
    return report
