"""CPU tests of benchmarks/gpu_check.py's own logic (its steps themselves need a GPU)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up here
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("gpu_check", None)


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_runner_records_a_failure_and_goes_on(gc, tmp_path):
    seen = []
    steps = [
        gc.Step("one", _py("print('hello')"), 30),
        gc.Step("two", _py("import sys; print('boom'); sys.exit(3)"), 30),
        gc.Step("three", _py("print('after')"), 30, parse=lambda out, wd: {"said": out.strip()}),
    ]
    res = gc.run_steps(steps, 60, tmp_path, on_step=lambda r: seen.append(len(r)),
                       echo=lambda s: None)
    assert [r.status for r in res] == ["passed", "failed", "passed"]
    assert res[1].returncode == 3 and res[1].reason == "exit status 3"
    assert "boom" in res[1].output_tail
    assert res[2].figures == {"said": "after"}
    assert all(r.seconds > 0 for r in res)
    assert seen == [1, 2, 3]


def test_time_budget_stops_the_step_in_flight_and_skips_the_rest(gc, tmp_path, monkeypatch):
    monkeypatch.setattr(gc, "MIN_START_S", 0.5)
    steps = [
        gc.Step("slow", _py("import time; print('started', flush=True); time.sleep(60)"), 60),
        gc.Step("next", _py("print('never')"), 60),
    ]
    res = gc.run_steps(steps, 2.0, tmp_path, echo=lambda s: None)
    assert res[0].status == "timeout" and res[0].returncode is None
    assert "time budget" in res[0].reason and res[0].seconds < 20
    assert "started" in res[0].output_tail  # output up to the kill is kept
    assert res[1].status == "skipped" and "budget" in res[1].reason
    assert res[1].seconds == 0


def test_own_timeout_is_reported_as_such(gc, tmp_path):
    steps = [gc.Step("slow", _py("import time; time.sleep(60)"), 1.0)]
    (res,) = gc.run_steps(steps, 60, tmp_path, echo=lambda s: None)
    assert res.status == "timeout" and "its timeout" in res.reason


def test_check_and_needs_and_unstartable_commands(gc, tmp_path):
    steps = [
        gc.Step("data", _py("pass"), 30, check=lambda fig: "wrong all the same"),
        gc.Step("train", _py("pass"), 30, needs=("data",)),
        gc.Step("missing", ["/nonexistent/program"], 30),
        gc.Step("bad_parse", _py("pass"), 30, parse=lambda out, wd: 1 / 0),
    ]
    res = gc.run_steps(steps, 60, tmp_path, echo=lambda s: None)
    assert res[0].status == "failed" and res[0].reason == "wrong all the same"
    assert res[1].status == "skipped" and "data" in res[1].reason
    assert res[2].status == "failed" and "could not start" in res[2].output_tail
    assert res[3].status == "passed" and "ZeroDivisionError" in res[3].figures["parse_error"]


def test_main_writes_the_json_summary(gc, tmp_path, monkeypatch, capsys):
    def fake_steps(quick, workdir, python=sys.executable):
        return [
            gc.Step("env", _py("print('GPU_CHECK_ENV ' + '{\"torch\": \"9.9\"}')"), 30,
                    parse=gc.parse_env),
            gc.Step("cuda_tests", _py("import sys; sys.exit(1)"), 30),
        ]

    monkeypatch.setattr(gc, "build_steps", fake_steps)
    out = tmp_path / "sub" / "gpu_check.json"
    rc = gc.main(["--out", str(out), "--workdir", str(tmp_path / "wd"), "--budget", "60"])
    assert rc == 1
    report = json.loads(out.read_text())
    assert set(report) >= {"schema", "started", "wall_s", "budget_s", "quick", "argv", "host",
                           "env", "ok", "counts", "steps"}
    assert report["ok"] is False and report["budget_s"] == 60
    assert report["env"] == {"torch": "9.9"}
    assert report["counts"] == {"passed": 1, "failed": 1}
    step = report["steps"][0]
    assert set(step) == {"name", "description", "cmd", "command", "status", "returncode",
                         "seconds", "timeout_s", "reason", "figures", "output_tail"}
    assert (tmp_path / "wd" / "tiny.yaml").is_file()
    table = capsys.readouterr().out
    assert "cuda_tests" in table and "NOT OK: 1/2" in table


def test_dry_run_lists_the_commands_and_runs_nothing(gc, tmp_path, capsys):
    out = tmp_path / "gpu_check.json"
    assert gc.main(["--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert not out.exists()
    lines = {ln.split(":", 1)[0]: ln for ln in text.splitlines() if not ln.startswith("#")}
    assert list(lines) == ["env", "cuda_tests", "bench_train_step", "synth_data",
                           "train_torchrun", "bench_evaluation"]
    assert "pytest" in lines["cuda_tests"] and "tests/cuda" in lines["cuda_tests"]
    assert "test_gpu_matches_cpu" in lines["cuda_tests"]
    assert "--device cuda --height 256 --width 128" in lines["bench_train_step"]
    assert "--precision fp32 bf16" in lines["bench_train_step"]
    assert "torch.distributed.run --standalone --nproc_per_node=1" in lines["train_torchrun"]
    assert "train.device=cuda" in lines["train_torchrun"]
    assert "--device cuda --case a" in lines["bench_evaluation"]

    gc.main(["--dry-run", "--quick", "--only", "bench_train_step"])
    text = capsys.readouterr().out
    assert "--batch 32 --iters 5" in text and "cuda_tests" not in text
    with pytest.raises(SystemExit):
        gc.main(["--dry-run", "--skip", "nonsense"])


def test_every_script_the_steps_call_exists_and_takes_those_flags(gc, tmp_path):
    root = SCRIPT.parents[1]
    for step in gc.build_steps(False, tmp_path):
        for arg in step.cmd:
            if arg.endswith(".py") or arg.startswith("tests/"):
                assert (root / arg.split("::")[0]).exists(), arg
    bench = (root / "benchmarks" / "bench_train_step.py").read_text()
    for flag in ("--device", "--height", "--width", "--batch", "--iters", "--warmup",
                 "--precision", "--json"):
        assert f'"{flag}"' in bench, flag
    ev = (root / "benchmarks" / "bench_evaluation.py").read_text()
    for flag in ("--device", "--case", "--json"):
        assert f'"{flag}"' in ev, flag


def test_parsers(gc, tmp_path):
    out = ("....s\nSKIPPED [1] tests/cuda/test_cuda.py:1: needs a CUDA device\n"
           "FAILED tests/cuda/test_cuda.py::test_x - AssertionError\n"
           "=== 1 failed, 12 passed, 1 skipped in 4.20s ===\n")
    fig = gc.parse_pytest(out, tmp_path)
    assert fig["counts"] == {"failed": 1, "passed": 12, "skipped": 1}
    assert fig["failed"] == ["FAILED tests/cuda/test_cuda.py::test_x - AssertionError"]
    assert "skipped" in gc.check_pytest(fig)
    assert gc.check_pytest(gc.parse_pytest("14 passed in 3.1s\n", tmp_path)) is None
    assert gc.check_pytest(gc.parse_pytest("nothing\n", tmp_path)) is not None

    row = {"precision": "bf16", "bare_img_s": 900.0, "df2am_img_s": 850.0, "ratio": 0.94,
           "ratio_best": 0.95, "memory_format": "channels_last", "bare_step_s": [0.1]}
    (tmp_path / "bench_train_step.json").write_text(json.dumps(
        {"args": {"batch": 64, "height": 256, "width": 128}, "runs": [row]}))
    fig = gc.parse_bench_train("", tmp_path)
    assert fig["runs"]["bf16"]["df2am_img_s"] == 850.0 and fig["size"] == "256x128"
    res = gc.StepResult("bench_train_step", "", [], "passed", figures=fig)
    assert "DF2AM 850" in gc.summarize(res)

    (tmp_path / "bench_evaluation.json").write_text(json.dumps(
        {"device": "cuda", "a": {"torch-float32": {"seconds_first": 0.5, "equal": False},
                                 "loop-float32": {"seconds_first": 9.0}}}))
    fig = gc.parse_bench_eval("", tmp_path)
    assert "torch-float32" in gc.check_bench_eval(fig)

    assert gc.parse_env("noise\nGPU_CHECK_ENV {\"gpu\": \"H200\"}\n", tmp_path) == {"gpu": "H200"}
