"""Sweep planning: a run's config, model identity, and skip / resume / reuse per unit.

Owns :func:`resolve_run`, the model key that makes two units the same trained model, matching
the run directories already in ``OUT``, and :class:`SweepPlan` / :class:`UnitPlan` with the
``df2am train`` / ``df2am eval`` command of every unit (what ``--dry-run`` prints).
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from df2am.config import Config, complete_config_dict, config_to_dict, flatten, load_config
from df2am.errors import ConfigError
from df2am.experiments.sweep.spec import (
    EVAL_OPTIONS,
    MODEL_NEUTRAL_PREFIXES,
    EvalSpec,
    RunSpec,
    SweepError,
    SweepSpec,
    fmt_value,
)
from df2am.train.rundir import run_status


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
    """The full config of one run (one trial): ``load_config(base, overrides)`` with the run's
    own base config when it has one (:meth:`SweepSpec.base_of`).

    Raises:
        SweepError: the run's overrides are rejected by the config (message names the run).
    """
    if isinstance(run, str):
        run = spec.run(run)
    try:
        return load_config(spec.base_of(run), _run_overrides(spec, run, extra, trial))
    except ConfigError as exc:
        raise SweepError(f"{spec.path}: run {run.name!r}: {exc}") from None



_flatten = flatten  # dotted config keys (df2am.config.flatten)


def model_key(cfg_dict: Mapping[str, Any]) -> str:
    """A canonical string of the settings that determine the trained model."""
    flat = _flatten(cfg_dict)
    kept = {k: v for k, v in flat.items()
            if not any(k == p or (p.endswith(".") and k.startswith(p))
                       for p in MODEL_NEUTRAL_PREFIXES)}
    return json.dumps(kept, sort_keys=True, default=str)


def _model_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    fa, fb = json.loads(model_key(a)), json.loads(model_key(b))
    return sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))


def read_saved(run_dir: Path) -> dict[str, Any] | None:
    """The config a run directory trained with (``config.yaml``, completed with the keys added
    since), or None when there is none; :class:`SweepError` if it is not a run config."""
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
    """``finished`` (tested), ``partial`` (started, or trained but not tested: the sweep resumes
    it, which runs the missing test) or ``empty`` — :func:`df2am.train.rundir.run_status`."""
    status = run_status(run_dir)
    return "partial" if status == "trained" else status


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
            argv += [flag, fmt_value(v)]
    return argv


def _index_runs(out_dir: Path) -> dict[str, Path]:
    """Model key → run directory of every run already in ``out_dir`` (one or two levels)."""
    index: dict[str, Path] = {}
    if not out_dir.is_dir():
        return index
    found = [*out_dir.glob("*/config.yaml"), *out_dir.glob("*/trial_*/config.yaml")]
    for cfg_path in sorted(found):
        saved = read_saved(cfg_path.parent)
        if saved is not None:
            index.setdefault(model_key(saved), cfg_path.parent)
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
            key = model_key(cfg_dict)
            own = out / run.name if trial is None else out / run.name / f"trial_{trial}"
            status = _status(own)
            unit_dir, alias_of = own, None
            if status == "empty":
                other = planned.get(key) or existing.get(key)
                if other is not None and other != own:
                    unit_dir, alias_of = other, other
                    status = "alias" if other in planned.values() else _status(other)
            saved = read_saved(unit_dir)
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
                train_argv = [*launch, "-m", "df2am.cli", "train", str(spec.base_of(run)),
                              *overrides, "--out", str(unit_dir)]
            elif status == "partial":
                # The run's own config.yaml is authoritative on --resume: pass only the keys
                # that say where it runs (the trainer rejects any other change).
                from df2am.train.resume import RESUME_OVERRIDABLE

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
