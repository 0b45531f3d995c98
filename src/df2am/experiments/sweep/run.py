"""Running a sweep: each unit's ``df2am train`` / ``df2am eval`` subprocess, its log, and
:func:`run_sweep` (plan, execute, then write the report).
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from df2am.experiments.sweep.plan import SweepPlan, UnitPlan, plan_sweep
from df2am.experiments.sweep.report import SweepReport, collect, write_report
from df2am.experiments.sweep.spec import SweepError, SweepSpec, load_spec

__all__ = ["Runner", "subprocess_runner", "execute_plan", "run_sweep"]

# The package's logger name, as before the split into modules.
logger = logging.getLogger("df2am.experiments.sweep")

#: ``runner(argv, log_path) -> exit status``; the default runs a subprocess and tees its output.
Runner = Callable[[list[str], Path], int]


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

