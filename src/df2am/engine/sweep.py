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

    from df2am.engine.sweep import load_spec, run_sweep

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
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from df2am.config import Config, complete_config_dict, config_to_dict, load_config
from df2am.data.datasets import get_dataset
from df2am.errors import ConfigError, Df2amError

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

logger = logging.getLogger(__name__)

#: The specs shipped with the package, one per table/figure of the paper.
PAPER_SPECS: tuple[str, ...] = ("table1", "table2", "table3", "table4", "figure3", "figure4",
                               "llcm")

#: Metric keys read from every results JSON (percent), each with an optional ``_std`` twin.
METRICS: tuple[str, ...] = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")

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

#: ``runner(argv, log_path) -> exit status``; the default runs a subprocess and tees its output.
Runner = Callable[[list[str], Path], int]


class SweepError(Df2amError):
    """A sweep spec is malformed, or a run of the sweep failed (the message names its log)."""


# --------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class RunSpec:
    """One row of a table / point of a figure: ``overrides`` on top of the spec's."""

    name: str
    group: str
    overrides: tuple[str, ...]


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
        return "eval_" + "_".join(f"{k}-{_fmt_value(v)}" for k, v in sorted(self.options.items()))


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
    """A parsed sweep spec (see the module docstring). ``base`` is resolved to a path."""

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


def paper_spec_dir() -> Path:
    """The folder of the shipped paper specs (package data: ``df2am/configs/paper``)."""
    return Path(__file__).resolve().parent.parent / "configs" / "paper"


def paper_spec_path(name: str) -> Path:
    """``"table3"`` → the shipped spec file; unknown names raise :class:`SweepError`."""
    if name not in PAPER_SPECS:
        raise SweepError(f"unknown paper table/figure {name!r}; expected one of {PAPER_SPECS}")
    path = paper_spec_dir() / f"{name}.yaml"
    if not path.is_file():
        raise SweepError(f"{path}: the shipped spec is missing (broken installation?)")
    return path


def _fmt_value(v: Any) -> str:
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


def _parse_runs(data: Any, group: str, where: str) -> list[RunSpec]:
    _expect(isinstance(data, dict) and bool(data), where, "expected a mapping run name → overrides")
    return [
        RunSpec(str(name), group, tuple(_str_list(ov or [], f"{where}.{name}")))
        for name, ov in data.items()
    ]


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
                name = "_".join(f"{k.rsplit('.', 1)[-1]}{_fmt_value(v)}" for k, v in point.items())
            else:
                _expect(isinstance(template, str), f"{where}.name", "expected a string template")
                name = template
                for k, v in point.items():
                    name = name.replace("{" + k + "}", _fmt_value(v))
                _expect("{" not in name, f"{where}.name",
                        f"template {template!r} names a key that is not in the grid")
            runs.append(RunSpec(name, group, tuple(_override(k, v) for k, v in point.items())))
    return runs


def _parse_group(name: str, data: Any, where: str) -> list[RunSpec]:
    _expect(isinstance(data, dict), where, "expected a mapping with 'runs' and/or 'grid'")
    unknown = set(data) - {"runs", "grid", "name"}
    _expect(not unknown, where, f"unknown keys {sorted(unknown)} (expected runs, grid, name)")
    _expect("runs" in data or "grid" in data, where, "needs 'runs' or 'grid'")
    runs: list[RunSpec] = []
    if "runs" in data:
        runs += _parse_runs(data["runs"], name, f"{where}.runs")
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
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise SweepError(f"{p}: not valid YAML: {exc}") from None
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
        runs += _parse_runs(data["runs"], "runs", f"{p}: runs")
    if "grid" in data:
        runs += _parse_grid(data["grid"], None, "grid", f"{p}: grid")
    for gname, gdata in (data.get("groups") or {}).items():
        runs += _parse_group(str(gname), gdata, f"{p}: groups.{gname}")
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
        # The dataset of the base + spec overrides (run overrides do not change the dataset).
        spec_overrides = _str_list(data.get("overrides") or [], f"{p}: overrides")
        ds = get_dataset(load_config(base, spec_overrides).data.dataset)
        _expect(ds.trial_per_model and all(t in ds.trials for t in trials), f"{p}: trials",
                f"one model per trial needs a dataset with a training split per trial and its "
                f"trial numbers ({ds.title}: "
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


def _run_overrides(
    spec: SweepSpec, run: RunSpec, extra: Sequence[str], trial: int | None
) -> list[str]:
    # Later overrides win: spec-wide, then the run's, then the command line's, then the trial.
    out = [*spec.overrides, *run.overrides, *extra]
    if trial is not None:
        out.append(f"data.trial={trial}")
    return out


def resolve_run(
    spec: SweepSpec, run: RunSpec | str, extra: Sequence[str] = (), trial: int | None = None
) -> Config:
    """The full config of one run (one trial): ``load_config(base, overrides)``.

    Raises:
        SweepError: the run's overrides are rejected by the config (message names the run).
    """
    if isinstance(run, str):
        run = spec.run(run)
    try:
        return load_config(spec.base, _run_overrides(spec, run, extra, trial))
    except ConfigError as exc:
        raise SweepError(f"{spec.path}: run {run.name!r}: {exc}") from None


# --------------------------------------------------------------------------- planning


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _model_key(cfg_dict: Mapping[str, Any]) -> str:
    """A canonical string of the settings that determine the trained model."""
    flat = _flatten(cfg_dict)
    kept = {k: v for k, v in flat.items()
            if not any(k == p or (p.endswith(".") and k.startswith(p))
                       for p in MODEL_NEUTRAL_PREFIXES)}
    return json.dumps(kept, sort_keys=True, default=str)


def _model_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    fa, fb = json.loads(_model_key(a)), json.loads(_model_key(b))
    return sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))


def _read_saved(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SweepError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SweepError(f"{path}: not a df2am run config")
    # Older run folders (written before a key existed) still match.
    return complete_config_dict(data, source=str(path))


def _status(run_dir: Path) -> str:
    """``finished`` (``results.json``), ``partial`` (a started run) or ``empty``."""
    if (run_dir / "results.json").is_file():
        return "finished"
    if ((run_dir / "config.yaml").is_file() or (run_dir / "checkpoints" / "last.pt").is_file()
            or (run_dir / "model_final.pt").is_file()):
        return "partial"
    return "empty"


@dataclass
class EvalPlan:
    """Where one evaluation of a unit comes from, and the command that makes it (or None)."""

    eval: str
    results: Path
    argv: list[str] | None


@dataclass
class UnitPlan:
    """One training job of the sweep: a run, or one RegDB trial of a run."""

    run: str
    trial: int | None
    dir: Path
    status: str  # "finished" | "partial" | "empty" | "alias"
    train_argv: list[str] | None
    evals: list[EvalPlan]
    #: The unit whose directory this one reuses (same model), if any.
    alias_of: Path | None = None
    #: The resolved config of the unit, flattened (``"loss.lambda_df2": 1.1``).
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.run if self.trial is None else f"{self.run} (trial {self.trial})"

    @property
    def log(self) -> Path:
        return self.dir / "log.txt"


@dataclass
class SweepPlan:
    spec: SweepSpec
    out_dir: Path
    units: list[UnitPlan]

    def commands(self) -> list[list[str]]:
        """Every command the sweep would run, in order (what ``--dry-run`` prints)."""
        cmds: list[list[str]] = []
        for u in self.units:
            if u.train_argv:
                cmds.append(u.train_argv)
            cmds += [e.argv for e in u.evals if e.argv]
        return cmds


def _eval_matches(opts: Mapping[str, Any], cfg_dict: Mapping[str, Any]) -> bool:
    flat = _flatten(cfg_dict)
    return all(flat.get(EVAL_OPTIONS[k]) == v for k, v in opts.items())


def _eval_argv(unit_dir: Path, root: str, ev: EvalSpec, python: str) -> list[str]:
    argv = [python, "-m", "df2am.cli", "eval", str(unit_dir / "model_final.pt"),
            "--root", root, "--out", str(unit_dir / ev.tag)]
    for k, v in sorted(ev.options.items()):
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            argv.append(flag if v else f"--no-{k.replace('_', '-')}")
        else:
            argv += [flag, _fmt_value(v)]
    return argv


def _index_runs(out_dir: Path) -> dict[str, Path]:
    """Model key → run directory of every run already in ``out_dir`` (one or two levels)."""
    index: dict[str, Path] = {}
    if not out_dir.is_dir():
        return index
    found = [*out_dir.glob("*/config.yaml"), *out_dir.glob("*/trial_*/config.yaml")]
    for cfg_path in sorted(found):
        saved = _read_saved(cfg_path.parent)
        if saved is not None:
            index.setdefault(_model_key(saved), cfg_path.parent)
    return index


def plan_sweep(
    spec: SweepSpec,
    out_dir: str | Path,
    *,
    root: str | None,
    extra: Sequence[str] = (),
    launcher: str | Sequence[str] | None = None,
    python: str = sys.executable,
) -> SweepPlan:
    """Resolve every run and decide, per unit, skip / resume / train and which evals to run.

    ``root`` is the dataset folder (``data.root`` of each run, ``--root`` of each eval); it may
    be None only when the plan is used to collect results. The decoded-image cache is shared by
    all runs (``data.cache_dir=OUT/cache``) unless ``extra`` sets ``data.cache_dir``.
    """
    out = Path(out_dir).resolve()
    launch = shlex.split(launcher) if isinstance(launcher, str) else list(launcher or [python])
    extra = list(extra)
    if root is not None:
        extra = [f"data.root={root}", *extra]
    if not any(e.startswith("data.cache_dir=") for e in extra):
        extra = [f"data.cache_dir={out / 'cache'}", *extra]
    existing = _index_runs(out)
    planned: dict[str, Path] = {}
    units: list[UnitPlan] = []
    for run in spec.runs:
        for trial in spec.trials or [None]:
            cfg = resolve_run(spec, run, extra, trial)
            cfg_dict = config_to_dict(cfg)
            key = _model_key(cfg_dict)
            own = out / run.name if trial is None else out / run.name / f"trial_{trial}"
            status = _status(own)
            unit_dir, alias_of = own, None
            if status == "empty":
                other = planned.get(key) or existing.get(key)
                if other is not None and other != own:
                    unit_dir, alias_of = other, other
                    status = "alias" if other in planned.values() else _status(other)
            saved = _read_saved(unit_dir)
            if saved is not None:
                diff = _model_diff(saved, cfg_dict)
                if diff:
                    raise SweepError(
                        f"run {run.name!r}: {unit_dir} holds a run with a different config "
                        f"(keys: {', '.join(diff)}); delete it or choose another --out"
                    )
            planned.setdefault(key, unit_dir)
            overrides = _run_overrides(spec, run, extra, trial)
            train_argv: list[str] | None = None
            if status == "empty":
                train_argv = [*launch, "-m", "df2am.cli", "train", str(spec.base), *overrides,
                              "--out", str(unit_dir)]
            elif status == "partial":
                # The run's own config.yaml is authoritative on --resume: pass only the keys
                # that say where it runs (the trainer rejects any other change).
                from df2am.engine.trainer import RESUME_OVERRIDABLE

                keep = [o for o in overrides if o.split("=", 1)[0] in RESUME_OVERRIDABLE
                        and o.split("=", 1)[0] != "train.epochs"]
                train_argv = [*launch, "-m", "df2am.cli", "train", "--resume", str(unit_dir),
                              *keep]
            trained_cfg = saved if saved is not None else cfg_dict
            evals: list[EvalPlan] = []
            for ev in spec.evals:
                if _eval_matches(ev.options, trained_cfg):
                    evals.append(EvalPlan(ev.name, unit_dir / "results.json", None))
                    continue
                res = unit_dir / ev.tag / "results.json"
                already = res.is_file() or any(
                    e.results == res for u in units for e in u.evals if e.argv
                )
                argv = None if already else _eval_argv(unit_dir, root or "<ROOT>", ev, python)
                evals.append(EvalPlan(ev.name, res, argv))
            units.append(UnitPlan(run.name, trial, unit_dir, status, train_argv, evals, alias_of,
                                  _flatten(cfg_dict)))
    return SweepPlan(spec, out, units)


# --------------------------------------------------------------------------- running


def subprocess_runner(
    argv: list[str], log_path: Path, stream: IO[str] | None = None
) -> int:
    """Run ``argv``, appending its stdout+stderr to ``log_path`` and echoing it to ``stream``.

    The echo is a tee of the child's own output (default ``sys.stdout``), not a log record.
    Returns the exit status.
    """
    stream = sys.stdout if stream is None else stream
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"$ {shlex.join(argv)}\n")
        log.flush()
        # Unbuffered child: its lines reach the log as they are written, not at exit.
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            stream.write(line)
        rc = proc.wait()
        log.write(f"[exit status {rc}]\n")
    return rc


def _call(runner: Runner, argv: list[str], unit: UnitPlan, what: str) -> None:
    logger.info("%s: %s", unit.label, what)
    unit.dir.mkdir(parents=True, exist_ok=True)
    rc = runner(argv, unit.log)
    if rc != 0:
        raise SweepError(
            f"run {unit.label!r} failed ({what}, exit status {rc}); its output is in {unit.log}"
        )


def execute_plan(plan: SweepPlan, runner: Runner = subprocess_runner) -> None:
    """Run the plan's commands one after another; stop at the first failure."""
    for unit in plan.units:
        if unit.train_argv:
            what = "resume training" if unit.status == "partial" else "train"
            _call(runner, unit.train_argv, unit, what)
            if not (unit.dir / "results.json").is_file():
                raise SweepError(
                    f"run {unit.label!r}: training ended without {unit.dir / 'results.json'} "
                    f"(is train.final_eval false?); see {unit.log}"
                )
        elif unit.status == "finished":
            logger.info("%s: finished, skipped (%s)", unit.label, unit.dir)
        elif unit.alias_of is not None:
            logger.info("%s: same model as %s, reused", unit.label, unit.alias_of)
        for ev in unit.evals:
            if ev.argv and not ev.results.is_file():
                _call(runner, ev.argv, unit, f"evaluate {ev.eval}")
                if not ev.results.is_file():
                    raise SweepError(
                        f"run {unit.label!r}: evaluation {ev.eval!r} wrote no {ev.results}; "
                        f"see {unit.log}"
                    )


# --------------------------------------------------------------------------- results


def read_metrics(path: str | Path) -> dict[str, float]:
    """The metrics (percent) of one results JSON of ``df2am train`` / ``df2am eval``.

    The one place that knows the file format: the metrics sit at the top level (or, in a
    ``summary`` mapping) as ``rank1``, ``rank5``, ``rank10``, ``rank20``, ``mAP``, ``mINP`` with
    ``_std`` twins. ``rank1`` and ``mAP`` are required; other keys are read when present.
    """
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SweepError(f"{p}: cannot read results ({exc})") from None
    if isinstance(doc, dict) and isinstance(doc.get("summary"), dict):
        doc = doc["summary"]
    if not isinstance(doc, dict) or not all(
        isinstance(doc.get(k), (int, float)) for k in ("rank1", "mAP")
    ):
        raise SweepError(f"{p}: not a df2am results file (no numeric rank1/mAP)")
    out: dict[str, float] = {}
    for key in METRICS:
        for k in (key, f"{key}_std"):
            if isinstance(doc.get(k), (int, float)) and not isinstance(doc.get(k), bool):
                out[k] = float(doc[k])
    return out


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

    seen = set()
    for run in report.spec.runs:
        rr = value(run.name, "rerank", False)
        params = tuple(value(run.name, k, d) for k, d in
                       (("rerank_k1", 20), ("rerank_k2", 6), ("rerank_lambda", 0.3)))
        seen.add((bool(value(run.name, "flip", False)), bool(rr), params if rr else None))
    if len(seen) != 1:
        return "flip averaging and re-ranking differ between runs (see each run's results.json)"
    flip, rr, params = seen.pop()
    text = "on (k1={}, k2={}, λ={})".format(*params) if rr and params else "off"
    return f"flip averaging {'on' if flip else 'off'}, re-ranking {text}"


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
                ax.set_xticks(xs, [_fmt_value(x) for x in xs])
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
    tmp = js.with_name(js.name + ".tmp")
    tmp.write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    tmp.replace(js)
    report.files = [md, js, *write_plots(report)]
    for f in report.files:
        logger.info("wrote %s", f)
    return report


def run_sweep(
    spec: SweepSpec | str | Path,
    out_dir: str | Path,
    *,
    root: str | None,
    extra: Sequence[str] = (),
    launcher: str | Sequence[str] | None = None,
    runner: Runner = subprocess_runner,
    collect_only: bool = False,
) -> SweepReport:
    """Run (skip / resume / train) every unit of ``spec``, then write its table and plots.

    Args:
        spec: a :class:`SweepSpec` or the path of a spec file.
        out_dir: holds one folder per run plus ``<name>.md``, ``<name>.json``, ``<name>_*.png``.
        root: the dataset folder; required unless ``collect_only``.
        extra: ``key=value`` overrides for every run (after the spec's own).
        launcher: the command that starts training, e.g. ``"torchrun --nproc_per_node=4"``
            (default: this Python interpreter); it is followed by ``-m df2am.cli train ...``.
        runner: ``runner(argv, log_path) -> exit status`` (tests inject a fake one).
        collect_only: only read the results that exist and write the table/plots.

    Raises:
        SweepError: a malformed spec, a run directory holding another config, a failed run
            (the message names its log file).
    """
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    if root is None and not collect_only:
        raise SweepError("give the dataset folder (--root DIR) to run the sweep")
    plan = plan_sweep(spec, out_dir, root=root, extra=extra, launcher=launcher)
    if not collect_only:
        execute_plan(plan, runner)
    return write_report(collect(plan))

