"""The sweep spec format: its dataclasses, :func:`load_spec` and the paper's shipped specs.

Owns the YAML schema (see :mod:`df2am.experiments.sweep` and docs/reproduce.md), its parsing and
checking, the metric and ``df2am eval`` option names a spec may use, the config keys that do
not change a trained model, and :class:`SweepError`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from df2am.config import load_config, read_yaml_file
from df2am.data.datasets import get_dataset
from df2am.errors import ConfigError, Df2amError
from df2am.evaluation.metrics import METRIC_KEYS

#: The specs shipped with the package, one per table/figure of the paper.
PAPER_SPECS: tuple[str, ...] = ("table1", "table2", "table3", "table4", "figure3", "figure4",
                               "llcm")

#: Metric keys read from every results JSON (percent), each with an optional ``_std`` twin.
METRICS: tuple[str, ...] = METRIC_KEYS  # the evaluation room's one list

#: ``df2am eval`` options a spec's ``evals`` may set → the config key the trainer's own final
#: test used for it (a run's ``results.json`` answers an eval when all of them agree).
EVAL_OPTIONS: dict[str, str] = {
    "mode": "eval.mode",
    "direction": "eval.direction",
    "sampler": "eval.sampler",
    "shots": "eval.shots",
    "trials": "eval.trials",
    "split_file": "eval.split_file",
    "feature": "model.test_feature",
    "flip": "model.flip_test",
    "rerank": "eval.rerank",
    "rerank_k1": "eval.rerank_k1",
    "rerank_k2": "eval.rerank_k2",
    "rerank_lambda": "eval.rerank_lambda",
}

#: Config keys that do not change the trained model: two units whose resolved configs differ
#: only here are the same run. (Test protocol settings, names, and where/how the job runs;
#: ``train.epochs`` is *not* here: a shorter run is another model.)
MODEL_NEUTRAL_PREFIXES: tuple[str, ...] = (
    "name",
    "output_dir",
    "eval.",
    "train.final_eval",
    "train.device",
    "train.log_every",
    "data.root",
    "data.num_workers",
    "data.cache_dir",
)

_SPEC_KEYS = {"name", "title", "base", "overrides", "groups", "runs", "grid", "trials", "evals",
              "table", "plots"}
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]*$")


class SweepError(Df2amError):
    """A sweep spec is malformed, or a run of the sweep failed (the message names its log)."""


# --------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class RunSpec:
    """One row of a table / point of a figure: ``overrides`` on top of the spec's, on the
    run's own ``base`` config when it has one (another method's recipe, e.g. AGW's), else on
    the spec's."""

    name: str
    group: str
    overrides: tuple[str, ...]
    base: Path | None = None


@dataclass(frozen=True)
class EvalSpec:
    """A test protocol every run is evaluated with: ``df2am eval`` options (``mode``, ...)."""

    name: str
    options: Mapping[str, Any]

    @property
    def tag(self) -> str:
        """Folder name of this evaluation inside a unit: ``eval_mode-indoor`` etc."""
        if not self.options:
            return "eval_default"
        return "eval_" + "_".join(f"{k}-{fmt_value(v)}" for k, v in sorted(self.options.items()))


@dataclass(frozen=True)
class SeriesSpec:
    """One line of a figure: the runs of ``group`` against config key ``x``."""

    label: str
    group: str
    x: str
    #: Published points we know: x value → {metric: value} (percent).
    paper: Mapping[float, Mapping[str, float]] = field(default_factory=dict)
    #: The paper's best value of a metric, drawn as a dashed horizontal line.
    paper_best: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PlotSpec:
    """A figure: one panel per metric, ``series`` lines, written to ``OUT/<spec>_<name>.png``."""

    name: str
    eval: str
    series: tuple[SeriesSpec, ...]
    title: str = ""
    xlabel: str = ""
    metrics: tuple[str, ...] = ("rank1", "mAP")
    logx: bool = False


@dataclass(frozen=True)
class ColumnSpec:
    eval: str
    metric: str
    header: str


@dataclass(frozen=True)
class TableSpec:
    """Markdown layout: one row per run (``rows``), one column per (eval, metric)."""

    columns: tuple[ColumnSpec, ...]
    row_header: str = "Run"
    rows: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    #: run → the paper's value of every column (None where the paper gives none).
    paper: Mapping[str, tuple[float | None, ...]] = field(default_factory=dict)
    #: Paper-only rows (other methods in the paper's table): label → values.
    references: Mapping[str, tuple[float | None, ...]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


@dataclass
class SweepSpec:
    """A parsed sweep spec (see :mod:`df2am.experiments.sweep`). ``base`` is resolved to a path."""

    path: Path
    name: str
    title: str
    base: Path
    overrides: list[str]
    runs: list[RunSpec]
    trials: list[int]
    evals: list[EvalSpec]
    table: TableSpec | None
    plots: list[PlotSpec]

    def run(self, name: str) -> RunSpec:
        for run in self.runs:
            if run.name == name:
                return run
        raise KeyError(name)

    def group(self, name: str) -> list[RunSpec]:
        return [r for r in self.runs if r.group == name]

    def base_of(self, run: RunSpec) -> Path:
        """The base config a run is resolved on: its own, else the spec's."""
        return run.base or self.base


def paper_spec_dir() -> Path:
    """The folder of the shipped paper specs (package data: ``df2am/configs/paper``)."""
    return Path(__file__).resolve().parents[2] / "configs" / "paper"


def paper_spec_path(name: str) -> Path:
    """``"table3"`` → the shipped spec file; unknown names raise :class:`SweepError`."""
    if name not in PAPER_SPECS:
        raise SweepError(f"unknown paper table/figure {name!r}; expected one of {PAPER_SPECS}")
    path = paper_spec_dir() / f"{name}.yaml"
    if not path.is_file():
        raise SweepError(f"{path}: the shipped spec is missing (broken installation?)")
    return path


def fmt_value(v: Any) -> str:
    """A config value as run names, eval folder names and ``key=value`` overrides write it."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _override(key: str, value: Any) -> str:
    """``key=value`` with the value in YAML flow style (what :func:`load_config` parses)."""
    if isinstance(value, str):
        return f"{key}={value}"
    text = yaml.safe_dump(value, default_flow_style=True, width=1_000_000).strip()
    return f"{key}={text.removesuffix(chr(10) + '...').strip()}"


def _expect(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise SweepError(f"{where}: {what}")


def _str_list(value: Any, where: str) -> list[str]:
    _expect(
        isinstance(value, list) and all(isinstance(v, str) and "=" in v for v in value),
        where,
        f"expected a list of key=value strings, got {value!r}",
    )
    return list(value)


def _parse_runs(data: Any, group: str, where: str, spec_dir: Path) -> list[RunSpec]:
    """``name: [overrides]``, or ``name: {base: FILE, overrides: [...]}`` for a run on its own
    base config (relative to the spec file)."""
    _expect(isinstance(data, dict) and bool(data), where, "expected a mapping run name → overrides")
    runs = []
    for name, value in data.items():
        w = f"{where}.{name}"
        base = None
        if isinstance(value, dict):
            unknown = set(value) - {"base", "overrides"}
            _expect(not unknown, w, f"unknown keys {sorted(unknown)} (expected base, overrides)")
            _expect(isinstance(value.get("base"), str) and bool(value.get("base")), f"{w}.base",
                    "required in the mapping form (a config file relative to the spec)")
            base = (spec_dir / value["base"]).resolve()
            _expect(base.is_file(), f"{w}.base", f"base config {base} not found")
            value = value.get("overrides")
        runs.append(RunSpec(str(name), group, tuple(_str_list(value or [], w)), base))
    return runs


def _parse_grid(data: Any, template: Any, group: str, where: str) -> list[RunSpec]:
    grids = data if isinstance(data, list) else [data]
    runs: list[RunSpec] = []
    for gi, grid in enumerate(grids):
        w = f"{where}[{gi}]" if isinstance(data, list) else where
        _expect(isinstance(grid, dict) and bool(grid), w, "expected a mapping key → list of values")
        for key, values in grid.items():
            _expect(isinstance(values, list) and bool(values), f"{w}.{key}",
                    f"expected a non-empty list of values, got {values!r}")
        keys = list(grid)
        for combo in itertools.product(*(grid[k] for k in keys)):
            point = dict(zip(keys, combo, strict=True))
            if template is None:
                name = "_".join(f"{k.rsplit('.', 1)[-1]}{fmt_value(v)}" for k, v in point.items())
            else:
                _expect(isinstance(template, str), f"{where}.name", "expected a string template")
                name = template
                for k, v in point.items():
                    name = name.replace("{" + k + "}", fmt_value(v))
                _expect("{" not in name, f"{where}.name",
                        f"template {template!r} names a key that is not in the grid")
            runs.append(RunSpec(name, group, tuple(_override(k, v) for k, v in point.items())))
    return runs


def _parse_group(name: str, data: Any, where: str, spec_dir: Path) -> list[RunSpec]:
    _expect(isinstance(data, dict), where, "expected a mapping with 'runs' and/or 'grid'")
    unknown = set(data) - {"runs", "grid", "name"}
    _expect(not unknown, where, f"unknown keys {sorted(unknown)} (expected runs, grid, name)")
    _expect("runs" in data or "grid" in data, where, "needs 'runs' or 'grid'")
    runs: list[RunSpec] = []
    if "runs" in data:
        runs += _parse_runs(data["runs"], name, f"{where}.runs", spec_dir)
    if "grid" in data:
        runs += _parse_grid(data["grid"], data.get("name"), name, f"{where}.grid")
    return runs


def _parse_evals(data: Any, where: str) -> list[EvalSpec]:
    if data is None:
        return [EvalSpec("test", {})]
    _expect(isinstance(data, dict) and bool(data), where, "expected a mapping eval name → options")
    evals = []
    for name, options in data.items():
        options = options or {}
        _expect(isinstance(options, dict), f"{where}.{name}", "expected a mapping of options")
        unknown = set(options) - set(EVAL_OPTIONS)
        _expect(not unknown, f"{where}.{name}",
                f"unknown options {sorted(unknown)}; known: {sorted(EVAL_OPTIONS)}")
        evals.append(EvalSpec(str(name), dict(options)))
    return evals


def _values(data: Any, n: int, where: str) -> tuple[float | None, ...]:
    _expect(isinstance(data, list) and len(data) == n
            and all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
                    for v in data),
            where, f"expected a list of {n} numbers (null where unknown), got {data!r}")
    return tuple(None if v is None else float(v) for v in data)


def _parse_table(data: Any, spec: SweepSpec, where: str) -> TableSpec:
    _expect(isinstance(data, dict), where, "expected a mapping")
    known = {"columns", "row_header", "rows", "labels", "paper", "references", "notes"}
    unknown = set(data) - known
    _expect(not unknown, where, f"unknown keys {sorted(unknown)}; known: {sorted(known)}")
    evals = {e.name for e in spec.evals}
    columns = []
    for i, col in enumerate(data.get("columns") or []):
        w = f"{where}.columns[{i}]"
        _expect(isinstance(col, dict) and {"eval", "metric"} <= set(col), w,
                "expected {eval: NAME, metric: KEY, header: TEXT}")
        _expect(col["eval"] in evals, w, f"eval {col['eval']!r} is not in evals {sorted(evals)}")
        _expect(col["metric"] in METRICS, w, f"metric {col['metric']!r} not in {METRICS}")
        columns.append(ColumnSpec(col["eval"], col["metric"],
                                  str(col.get("header", f"{col['eval']} {col['metric']}"))))
    _expect(bool(columns), f"{where}.columns", "needs at least one column")
    names = {r.name for r in spec.runs}
    rows = tuple(data.get("rows") or [r.name for r in spec.runs])
    labels = dict(data.get("labels") or {})
    paper = {str(k): _values(v, len(columns), f"{where}.paper.{k}")
             for k, v in (data.get("paper") or {}).items()}
    for key, what in ((rows, "rows"), (labels, "labels"), (paper, "paper")):
        bad = sorted(set(key) - names)
        _expect(not bad, f"{where}.{what}", f"names runs that the spec does not have: {bad}")
    references = {str(k): _values(v, len(columns), f"{where}.references.{k}")
                  for k, v in (data.get("references") or {}).items()}
    notes = data.get("notes") or []
    _expect(isinstance(notes, list), f"{where}.notes", "expected a list of strings")
    return TableSpec(
        columns=tuple(columns),
        row_header=str(data.get("row_header", "Run")),
        rows=rows,
        labels=labels,
        paper=paper,
        references=references,
        notes=tuple(str(n) for n in notes),
    )


def _parse_plots(data: Any, spec: SweepSpec, where: str) -> list[PlotSpec]:
    _expect(isinstance(data, list), where, "expected a list of plots")
    evals = {e.name for e in spec.evals}
    groups = {r.group for r in spec.runs}
    plots = []
    for i, p in enumerate(data):
        w = f"{where}[{i}]"
        _expect(isinstance(p, dict) and {"name", "eval", "series"} <= set(p), w,
                "expected {name, eval, series, [title, xlabel, metrics, logx]}")
        _expect(p["eval"] in evals, w, f"eval {p['eval']!r} is not in evals {sorted(evals)}")
        metrics = tuple(p.get("metrics") or ("rank1", "mAP"))
        _expect(all(m in METRICS for m in metrics), w, f"metrics must be among {METRICS}")
        series = []
        for j, s in enumerate(p["series"] or []):
            ws = f"{w}.series[{j}]"
            _expect(isinstance(s, dict) and {"group", "x"} <= set(s), ws,
                    "expected {label, group, x, [paper, paper_best]}")
            _expect(s["group"] in groups, ws, f"group {s['group']!r} not in {sorted(groups)}")
            series.append(SeriesSpec(
                label=str(s.get("label", s["group"])),
                group=s["group"],
                x=str(s["x"]),
                paper={float(k): dict(v) for k, v in (s.get("paper") or {}).items()},
                paper_best=dict(s.get("paper_best") or {}),
            ))
        _expect(bool(series), w, "needs at least one series")
        plots.append(PlotSpec(
            name=str(p["name"]),
            eval=p["eval"],
            series=tuple(series),
            title=str(p.get("title", "")),
            xlabel=str(p.get("xlabel", "")),
            metrics=metrics,
            logx=bool(p.get("logx", False)),
        ))
    return plots


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a sweep spec; ``base`` is resolved relative to the spec file.

    Raises:
        SweepError: a missing file, unknown keys, duplicate run names, a table/plot that
            names an unknown run/eval/group. (Run configs are resolved by :func:`resolve_run`.)
    """
    p = Path(path)
    if not p.is_file():
        raise SweepError(f"sweep spec not found: {p}")
    try:
        # The config loader's reader: duplicated keys (both lines), non-UTF-8 bytes and YAML
        # errors are named, never "last one wins".
        data = read_yaml_file(p)
    except ConfigError as exc:
        raise SweepError(str(exc)) from None
    _expect(isinstance(data, dict), str(p), "expected a mapping at the top level")
    unknown = set(data) - _SPEC_KEYS
    _expect(not unknown, str(p), f"unknown keys {sorted(unknown)}; known: {sorted(_SPEC_KEYS)}")
    for key in ("name", "base"):
        _expect(isinstance(data.get(key), str) and bool(data.get(key)), f"{p}: {key}",
                "required (a non-empty string)")
    base = (p.parent / data["base"]).resolve()
    _expect(base.is_file(), f"{p}: base", f"base config {base} not found")

    runs: list[RunSpec] = []
    if "runs" in data:
        runs += _parse_runs(data["runs"], "runs", f"{p}: runs", p.parent)
    if "grid" in data:
        runs += _parse_grid(data["grid"], None, "grid", f"{p}: grid")
    for gname, gdata in (data.get("groups") or {}).items():
        runs += _parse_group(str(gname), gdata, f"{p}: groups.{gname}", p.parent)
    _expect(bool(runs), str(p), "defines no runs (give runs, grid or groups)")
    seen: set[str] = set()
    for run in runs:
        _expect(bool(_RUN_NAME.match(run.name)), f"{p}: run {run.name!r}",
                "run names may hold letters, digits and _ . + = - only")
        _expect(run.name not in seen, f"{p}: run {run.name!r}", "defined twice")
        seen.add(run.name)

    trials = data.get("trials") or []
    _expect(isinstance(trials, list) and len(set(trials)) == len(trials)
            and all(isinstance(t, int) and not isinstance(t, bool) for t in trials),
            f"{p}: trials", f"expected distinct trial numbers, got {trials!r}")
    if trials:
        # The dataset of each base + spec overrides (run overrides do not change the dataset).
        spec_overrides = _str_list(data.get("overrides") or [], f"{p}: overrides")
        for run_base in sorted({base, *(r.base for r in runs if r.base is not None)}):
            ds = get_dataset(load_config(run_base, spec_overrides).data.dataset)
            _expect(ds.trial_per_model and all(t in ds.trials for t in trials), f"{p}: trials",
                    f"one model per trial needs a dataset with a training split per trial and "
                    f"its trial numbers ({ds.title}"
                    + ("" if run_base == base else f", {run_base.name}") + ": "
                    + (ds.trial_rule if ds.trial_per_model else "one model for all trials")
                    + f"), got {trials!r}")

    spec = SweepSpec(
        path=p.resolve(),
        name=data["name"],
        title=str(data.get("title", data["name"])),
        base=base,
        overrides=_str_list(data.get("overrides") or [], f"{p}: overrides"),
        runs=runs,
        trials=list(trials),
        evals=_parse_evals(data.get("evals"), f"{p}: evals"),
        table=None,
        plots=[],
    )
    if data.get("table") is not None:
        spec.table = _parse_table(data["table"], spec, f"{p}: table")
    if data.get("plots") is not None:
        spec.plots = _parse_plots(data["plots"], spec, f"{p}: plots")
    return spec
