"""One-shot GPU check: the CUDA tests, the GPU benchmarks and a torchrun training run.

Meant for a lent GPU machine with little time on it (the whole run stays under ``--budget``
seconds, default 270; ``--quick`` 180). Each step is a subprocess, timed and recorded as
``passed`` / ``failed`` / ``timeout`` / ``skipped`` with the tail of its output and the figures
parsed from it; a failed step does not stop the next one. When the budget runs out, the step
in flight is stopped and the remaining ones are recorded as skipped. The JSON summary is
rewritten after every step, so a run killed from outside still leaves the steps done so far.

Steps:

1. ``env``          torch / CUDA / cuDNN / NCCL versions, GPU name and memory (fails without
                    a visible CUDA device).
2. ``cuda_tests``   ``pytest tests/cuda`` (marker ``cuda``: CPU-vs-CUDA evaluation, fp32/bf16/
                    fp16 training steps, one-rank NCCL + DDP) and the CUDA test of
                    tests/evaluation; a skipped test counts as a failure here.
3. ``bench_train_step``  benchmarks/bench_train_step.py on CUDA at 256×128, DF²AM vs bare
                    ResNet-50, fp32 and bf16 (img/s, ratio).
4. ``synth_data``   ``df2am data synth``: a tiny SYSU-layout dataset.
5. ``train_torchrun``  ``torchrun --nproc_per_node=1 -m df2am.cli train ... train.device=cuda``
                    with tiny overrides (losses, img/s and test metrics from metrics.jsonl).
6. ``bench_evaluation``  benchmarks/bench_evaluation.py --device cuda --case a.

Usage::

    python benchmarks/gpu_check.py --out gpu_check.json            # full, < 5 minutes
    python benchmarks/gpu_check.py --quick --out gpu_check.json    # smaller, < 3 minutes
    python benchmarks/gpu_check.py --dry-run                       # list the commands
    python benchmarks/gpu_check.py --skip bench_evaluation --budget 200

No installation is needed: every subprocess gets ``src/`` on ``PYTHONPATH`` and runs with this
interpreter (``python -m df2am.cli``, ``python -m torch.distributed.run``). Exit status: 0 when
every step passed, 1 otherwise. This module imports only the standard library.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = 1
DEFAULT_BUDGET_S = 270.0
QUICK_BUDGET_S = 180.0
TAIL_CHARS = 3000
#: A step is not started with less budget left than this (it is recorded as skipped).
MIN_START_S = 5.0

# Overrides of the torchrun run (as in tests/train/test_trainer.py, on CUDA).
TINY = [
    "data.height=32",
    "data.width=16",
    "data.pad=2",
    "data.num_workers=0",
    "model.depth=18",
    "model.num_parts=2",
    "sampler.num_ids=2",
    "sampler.num_per_modality=2",
    "train.device=cuda",
    "train.log_every=1",
    "train.checkpoint_every=1",
    "optim.lr=0.01",
    "optim.warmup_epochs=0",
    "eval.trials=1",
    "eval.batch_size=64",
]

ENV_SNIPPET = r"""
import json, platform, subprocess
import torch
d = {"python": platform.python_version(), "torch": torch.__version__,
     "cuda_build": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
     "device_count": torch.cuda.device_count(),
     "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
try:
    import df2am
    d["df2am"] = df2am.__file__
except Exception as e:
    d["df2am"] = "import failed: %r" % (e,)
if d["cuda_available"]:
    p = torch.cuda.get_device_properties(0)
    d.update(gpu=p.name, capability="%d.%d" % (p.major, p.minor),
             memory_gib=round(p.total_memory / 2**30, 1),
             multiprocessors=p.multi_processor_count,
             bf16_supported=torch.cuda.is_bf16_supported())
    try:
        v = torch.cuda.nccl.version()
        d["nccl"] = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
    except Exception as e:
        d["nccl"] = "unavailable: %r" % (e,)
    try:
        d["driver"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:
        d["driver"] = None
print("GPU_CHECK_ENV " + json.dumps(d))
raise SystemExit(0 if d["cuda_available"] and not str(d["df2am"]).startswith("import failed")
                 else 1)
"""


# ------------------------------------------------------------------------------------------
# the step runner


Parser = Callable[[str, Path], dict[str, Any]]
Checker = Callable[[dict[str, Any]], str | None]


@dataclass
class Step:
    """One subprocess of the check.

    ``parse(output, workdir)`` returns the step's figures (an exception there is recorded, it
    does not fail the step); ``check(figures)`` returns a failure reason for a step that exited
    0 but is wrong all the same (None = fine); ``needs`` names steps that must have passed.
    """

    name: str
    cmd: list[str]
    timeout_s: float
    description: str = ""
    parse: Parser | None = None
    check: Checker | None = None
    needs: tuple[str, ...] = ()


@dataclass
class StepResult:
    name: str
    description: str
    cmd: list[str]
    status: str  # passed | failed | timeout | skipped
    returncode: int | None = None
    seconds: float = 0.0
    timeout_s: float | None = None
    reason: str | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    output_tail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "cmd": self.cmd,
            "command": display_cmd(self.cmd),
            "status": self.status,
            "returncode": self.returncode,
            "seconds": round(self.seconds, 3),
            "timeout_s": None if self.timeout_s is None else round(self.timeout_s, 1),
            "reason": self.reason,
            "figures": self.figures,
            "output_tail": self.output_tail,
        }


def display_cmd(cmd: Sequence[str]) -> str:
    """``cmd`` as a shell line, an inline ``-c`` script shown as ``<script>``."""
    return shlex.join("<script>" if "\n" in a else a for a in cmd)


def subprocess_env() -> dict[str, str]:
    """This environment with ``src/`` first on ``PYTHONPATH`` and unbuffered Python output."""
    env = dict(os.environ)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def run_command(cmd: Sequence[str], timeout_s: float, cwd: Path = ROOT,
                env: dict[str, str] | None = None) -> tuple[int | None, str, bool]:
    """Run ``cmd`` (stdout and stderr together) → (returncode, output, timed_out).

    The command gets its own process group, killed whole at the timeout (torchrun's workers,
    bench_evaluation's workers go with it).
    """
    proc = subprocess.Popen(
        list(cmd), cwd=cwd, env=env if env is not None else subprocess_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        text=True, errors="replace", start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=max(timeout_s, 0.1))
        return proc.returncode, out or "", False
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, _ = proc.communicate()
        return None, out or "", True


def run_steps(
    steps: Sequence[Step],
    budget_s: float,
    workdir: Path,
    on_step: Callable[[list[StepResult]], None] | None = None,
    echo: Callable[[str], None] = print,
    tail_chars: int = TAIL_CHARS,
) -> list[StepResult]:
    """Run every step in order within ``budget_s`` seconds in all; never stops at a failure.

    Each step runs for at most ``min(step.timeout_s, budget left)``; a step is skipped when
    less than ``MIN_START_S`` of the budget is left or a step it needs did not pass.
    ``on_step(results so far)`` is called after each step (to rewrite the JSON).
    """
    start = time.monotonic()
    results: list[StepResult] = []
    status_of: dict[str, str] = {}
    for step in steps:
        left = budget_s - (time.monotonic() - start)
        res = StepResult(step.name, step.description, list(step.cmd), "skipped")
        missing = [n for n in step.needs if status_of.get(n) != "passed"]
        if missing:
            res.reason = f"needs step(s) that did not pass: {', '.join(missing)}"
        elif left < MIN_START_S:
            res.reason = f"time budget of {budget_s:.0f} s used up ({max(left, 0):.1f} s left)"
        else:
            timeout = min(step.timeout_s, left)
            res.timeout_s = timeout
            echo(f"[gpu_check] {step.name}: {display_cmd(step.cmd)} (timeout {timeout:.0f} s)")
            t0 = time.monotonic()
            try:
                rc, out, timed_out = run_command(step.cmd, timeout)
            except OSError as exc:  # e.g. the program does not exist
                rc, out, timed_out = None, f"could not start: {exc!r}", False
            res.seconds = time.monotonic() - t0
            res.returncode = rc
            res.output_tail = out[-tail_chars:] if tail_chars else ""
            if step.parse is not None:
                try:
                    res.figures = step.parse(out, workdir)
                except Exception as exc:  # figures are a bonus: never fail a step over them
                    res.figures = {"parse_error": repr(exc)}
            if timed_out:
                res.status = "timeout"
                why = "the time budget" if timeout < step.timeout_s else "its timeout"
                res.reason = f"stopped after {timeout:.0f} s ({why})"
            elif rc != 0:
                res.status = "failed"
                res.reason = f"exit status {rc}"
            else:
                problem = step.check(res.figures) if step.check is not None else None
                res.status = "failed" if problem else "passed"
                res.reason = problem
        status_of[step.name] = res.status
        results.append(res)
        echo(f"[gpu_check] {step.name}: {res.status} in {res.seconds:.1f} s"
             + (f" ({res.reason})" if res.reason else ""))
        if on_step is not None:
            on_step(results)
    return results


def build_report(results: Sequence[StepResult], *, budget_s: float, quick: bool,
                 started: str, wall_s: float, argv: Sequence[str],
                 workdir: Path) -> dict[str, Any]:
    """The JSON summary (layout: see the module docstring)."""
    env = next((r.figures for r in results if r.name == "env"), {})
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    return {
        "schema": SCHEMA,
        "tool": "benchmarks/gpu_check.py",
        "started": started,
        "wall_s": round(wall_s, 3),
        "budget_s": budget_s,
        "quick": quick,
        "argv": list(argv),
        "workdir": str(workdir),
        "host": {"hostname": platform.node(), "platform": platform.platform(),
                 "python": platform.python_version(), "executable": sys.executable,
                 "cpus": os.cpu_count()},
        "env": env,
        "ok": bool(results) and all(r.status == "passed" for r in results),
        "counts": counts,
        "steps": [r.to_json() for r in results],
    }


def format_table(results: Sequence[StepResult]) -> str:
    rows = [("step", "status", "seconds", "figures / reason")]
    for r in results:
        note = summarize(r)
        rows.append((r.name, r.status, f"{r.seconds:.1f}", note))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = [f"{a:<{w0}}  {b:<{w1}}  {c:>7}  {d}" for a, b, c, d in rows]
    lines.insert(1, "-" * min(max(len(x) for x in lines), 100))
    return "\n".join(lines)


def summarize(r: StepResult) -> str:
    """A short line of a step's headline figures (or its failure reason)."""
    f = r.figures
    parts: list[str] = []
    if r.name == "env" and f.get("torch"):
        parts.append(f"torch {f.get('torch')} CUDA {f.get('cuda_build')} {f.get('gpu', 'no GPU')}")
    elif r.name == "cuda_tests" and "counts" in f:
        parts.append(", ".join(f"{v} {k}" for k, v in f["counts"].items()))
    elif r.name == "bench_train_step" and "runs" in f:
        for prec, row in f["runs"].items():
            parts.append(f"{prec}: DF2AM {row['df2am_img_s']:.0f} / bare {row['bare_img_s']:.0f}"
                         f" img/s ({row['ratio']:.2f})")
    elif r.name == "train_torchrun" and "last_loss" in f:
        parts.append(f"loss {f.get('first_loss'):.3f} -> {f.get('last_loss'):.3f}")
        if f.get("test"):
            parts.append(f"test rank1 {f['test'].get('rank1', float('nan')):.1f}")
    elif r.name == "bench_evaluation" and "kinds" in f:
        for kind, row in f["kinds"].items():
            parts.append(f"{kind} {row.get('seconds_first', float('nan')):.2f}s"
                         f"{'' if row.get('equal') else ' NOT EQUAL'}")
    if r.reason:
        parts.append(r.reason)
    return "; ".join(parts)[:160]


# ------------------------------------------------------------------------------------------
# parsers of each tool's output


def parse_env(out: str, workdir: Path) -> dict[str, Any]:
    for line in reversed(out.splitlines()):
        if line.startswith("GPU_CHECK_ENV "):
            return json.loads(line.split(" ", 1)[1])
    return {}


_PYTEST_COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)")


def parse_pytest(out: str, workdir: Path) -> dict[str, Any]:
    """Counts from pytest's last summary line, and the failed / skipped test lines."""
    counts: dict[str, int] = {}
    for line in reversed(out.splitlines()):
        found = _PYTEST_COUNT.findall(line)
        if found and re.search(r"\bin [\d.]+s", line):
            counts = {("error" if k.startswith("error") else k): int(n) for n, k in found}
            break
    failed = [ln for ln in out.splitlines() if ln.startswith(("FAILED ", "ERROR "))][:20]
    skipped = [ln for ln in out.splitlines() if ln.startswith("SKIPPED ")][:20]
    return {"counts": counts, "failed": failed, "skipped": skipped}


def check_pytest(figures: dict[str, Any]) -> str | None:
    counts = figures.get("counts", {})
    if not counts:
        return "no pytest summary line found"
    if counts.get("skipped"):
        return f"{counts['skipped']} test(s) skipped on a GPU machine (see figures.skipped)"
    if not counts.get("passed"):
        return "no test passed"
    return None


def parse_bench_train(out: str, workdir: Path) -> dict[str, Any]:
    data = json.loads((workdir / "bench_train_step.json").read_text())
    runs = {
        r["precision"]: {k: r[k] for k in ("bare_img_s", "df2am_img_s", "ratio", "ratio_best",
                                           "memory_format")}
        for r in data["runs"]
    }
    return {"runs": runs, "batch": data["args"]["batch"],
            "size": f"{data['args']['height']}x{data['args']['width']}"}


def parse_train(out: str, workdir: Path) -> dict[str, Any]:
    run = workdir / "run_torchrun"
    records = []
    metrics = run / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    train = [r for r in records if r.get("event") == "train"]
    test = next((r for r in reversed(records) if r.get("event") == "test"), None)
    fig: dict[str, Any] = {
        "iterations": len(train),
        "model_final": (run / "model_final.pt").is_file(),
        "results_json": (run / "results.json").is_file(),
        # torchrun at one process: init_distributed makes no process group (world size 1).
        "process_group_backend": ("nccl" if "backend nccl" in out else
                                  "gloo" if "backend gloo" in out else None),
    }
    if train:
        fig["losses"] = [round(r["loss"], 4) for r in train]
        fig["first_loss"], fig["last_loss"] = train[0]["loss"], train[-1]["loss"]
        fig["img_per_s_last"] = train[-1].get("img_per_s")
    if test is not None:
        fig["test"] = {k: test[k] for k in ("rank1", "mAP", "mINP") if k in test}
    return fig


def check_train(figures: dict[str, Any]) -> str | None:
    if not figures.get("iterations"):
        return "no training iteration was logged"
    if not figures.get("model_final"):
        return "no model_final.pt written"
    return None


def parse_bench_eval(out: str, workdir: Path) -> dict[str, Any]:
    data = json.loads((workdir / "bench_evaluation.json").read_text())
    kinds = {}
    for key, row in data.get("a", {}).items():
        kinds[key] = {k: row[k] for k in ("seconds_first", "seconds_first_call", "speedup",
                                          "equal", "peak_rss_gib") if k in row}
    return {"device": data.get("device"), "kinds": kinds}


def check_bench_eval(figures: dict[str, Any]) -> str | None:
    bad = [k for k, row in figures.get("kinds", {}).items() if row.get("equal") is False]
    return f"CUDA results differ from the loop: {', '.join(bad)}" if bad else None


# ------------------------------------------------------------------------------------------
# the steps


def build_steps(quick: bool, workdir: Path, python: str = sys.executable) -> list[Step]:
    py = [python]
    data_root = workdir / "synth_sysu"
    bench_train = (["--batch", "32", "--iters", "5", "--warmup", "2"] if quick
                   else ["--batch", "64", "--iters", "15", "--warmup", "3"])
    epochs = ["train.epochs=1", "train.max_iters_per_epoch=3"] if quick else [
        "train.epochs=2", "train.max_iters_per_epoch=5"]
    return [
        Step("env", [*py, "-c", ENV_SNIPPET], 60,
             "torch / CUDA / cuDNN / NCCL versions and the GPU", parse_env),
        Step("cuda_tests",
             [*py, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", "tests/cuda",
              "tests/evaluation/test_evaluation_metrics.py::test_gpu_matches_cpu"],
             150, "pytest: tests/cuda (marker cuda) + the CUDA test of tests/evaluation",
             parse_pytest, check_pytest),
        Step("bench_train_step",
             [*py, "benchmarks/bench_train_step.py", "--device", "cuda", "--height", "256",
              "--width", "128", *bench_train, "--precision", "fp32", "bf16",
              "--json", str(workdir / "bench_train_step.json")],
             60 if quick else 100,
             "training step, DF2AM vs bare ResNet-50, 256x128, fp32 + bf16, CUDA",
             parse_bench_train),
        Step("synth_data",
             [*py, "-m", "df2am.cli", "data", "synth", "--layout", "sysu", "--out",
              str(data_root), "--ids", "12", "--size", "64x32", "--seed", "0"],
             40, "tiny synthetic SYSU-MM01-layout dataset"),
        Step("train_torchrun",
             [*py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
              "-m", "df2am.cli", "train", str(workdir / "tiny.yaml"), *TINY, *epochs,
              f"data.root={data_root}", "--out", str(workdir / "run_torchrun")],
             90, "torchrun --nproc_per_node=1 df2am train on CUDA (tiny)",
             parse_train, check_train, needs=("synth_data",)),
        Step("bench_evaluation",
             [*py, "benchmarks/bench_evaluation.py", "--device", "cuda", "--case", "a",
              "--json", str(workdir / "bench_evaluation.json")],
             90, "evaluation benchmark (a), vectorised side on CUDA", parse_bench_eval,
             check_bench_eval),
    ]


def prepare_workdir(workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "tiny.yaml").write_text("name: gpu_check\n")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="gpu_check.json", help="the JSON summary")
    p.add_argument("--quick", action="store_true", help="smaller benchmarks and training run")
    p.add_argument("--budget", type=float, default=None,
                   help=f"total seconds (default {DEFAULT_BUDGET_S:.0f}, --quick "
                        f"{QUICK_BUDGET_S:.0f})")
    p.add_argument("--workdir", default=None,
                   help="scratch folder (dataset, run, benchmark JSON); default: a new temp dir")
    p.add_argument("--skip", nargs="+", default=[], metavar="STEP", help="steps to leave out")
    p.add_argument("--only", nargs="+", default=[], metavar="STEP", help="run just these steps")
    p.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    p.add_argument("--tail-chars", type=int, default=TAIL_CHARS,
                   help="characters of each step's output kept in the JSON")
    args = p.parse_args(argv)
    budget = args.budget if args.budget is not None else (
        QUICK_BUDGET_S if args.quick else DEFAULT_BUDGET_S)
    workdir = Path(args.workdir or os.path.join(tempfile.gettempdir(), "df2am_gpu_check"))
    if not args.workdir and not args.dry_run:
        workdir = Path(tempfile.mkdtemp(prefix="df2am_gpu_check_"))
    steps = build_steps(args.quick, workdir.resolve())
    names = [s.name for s in steps]
    unknown = sorted(set(args.skip + args.only) - set(names))
    if unknown:
        p.error(f"unknown step(s) {unknown}; steps: {', '.join(names)}")
    steps = [s for s in steps if s.name not in args.skip and (not args.only or s.name in args.only)]

    if args.dry_run:
        print(f"# budget {budget:.0f} s, workdir {workdir}, cwd {ROOT}, PYTHONPATH={ROOT / 'src'}")
        for s in steps:
            print(f"{s.name}: {display_cmd(s.cmd)}")
        return 0

    prepare_workdir(workdir)
    out_path = Path(args.out)
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    t0 = time.monotonic()

    def write(results: list[StepResult]) -> None:
        report = build_report(results, budget_s=budget, quick=args.quick, started=started,
                              wall_s=time.monotonic() - t0, argv=argv, workdir=workdir)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_name(out_path.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2))
        tmp.replace(out_path)

    results = run_steps(steps, budget, workdir, on_step=write, tail_chars=args.tail_chars)
    write(results)
    print()
    print(format_table(results))
    ok = all(r.status == "passed" for r in results)
    print(f"\n{'OK' if ok else 'NOT OK'}: {sum(r.status == 'passed' for r in results)}/"
          f"{len(results)} steps passed in {time.monotonic() - t0:.0f} s -> {out_path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
