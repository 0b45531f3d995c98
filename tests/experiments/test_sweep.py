"""The sweep runner with a fake runner: skip, resume, reuse, fail, aggregate, plot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from df2am.cli import main
from df2am.config import load_config, save_config
from df2am.experiments import sweep
from df2am.experiments.sweep import (
    SweepError,
    load_spec,
    plan_sweep,
    read_metrics,
    resolve_run,
    run_sweep,
    subprocess_runner,
)

BASE = {"model": {"depth": 18}, "train": {"epochs": 2}}

SPEC = {
    "name": "tiny",
    "title": "Tiny table",
    "base": "base.yaml",
    "runs": {"a": ["loss.use_affinity=false"], "b": ["model.num_parts=2"]},
    "evals": {"all": {"mode": "all"}, "indoor": {"mode": "indoor"}},
    "table": {
        "row_header": "Setting",
        "columns": [
            {"eval": "all", "metric": "rank1", "header": "All r=1"},
            {"eval": "indoor", "metric": "mAP", "header": "Indoor mAP"},
        ],
        "labels": {"a": "Run A"},
        "paper": {"a": [52.88, 64.27], "b": [None, 71.52]},
        "references": {"DDAG": [54.75, 67.98]},
        "notes": ["a note"],
    },
}

#: Fake metrics per (run dir name, eval) — what the fake runner writes.
FAKE = {
    ("a", "all"): 50.0,
    ("a", "indoor"): 60.0,
    ("b", "all"): 51.5,
    ("b", "indoor"): 61.25,
}


def _write_spec(tmp: Path, spec: dict | None = None, base: dict | None = None) -> Path:
    (tmp / "base.yaml").write_text(yaml.safe_dump(base or BASE))
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(spec or SPEC, sort_keys=False))
    return path


def _results(value: float) -> dict:
    doc = {k: value + i for i, k in enumerate(sweep.METRICS)}
    doc.update({f"{k}_std": 0.5 for k in sweep.METRICS})
    doc["per_trial"] = [{"trial": 0}]
    return doc


class FakeRunner:
    """Plays ``df2am train`` / ``df2am eval``: writes config.yaml and results.json files."""

    def __init__(self, fail_on: str | None = None, fake: dict | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_on = fail_on
        self.fake = {**FAKE, **(fake or {})}

    def __call__(self, argv: list[str], log: Path) -> int:
        self.calls.append(argv)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            f.write("fake output\n")
        cmd = argv[argv.index("df2am.cli") + 1]
        if cmd == "train":
            if "--resume" in argv:
                run_dir = Path(argv[argv.index("--resume") + 1])
            else:
                run_dir = Path(argv[argv.index("--out") + 1])
                i = argv.index("train")
                overrides = argv[i + 2 : argv.index("--out")]
                run_dir.mkdir(parents=True, exist_ok=True)
                save_config(load_config(argv[i + 1], overrides), run_dir / "config.yaml")
            name = run_dir.name
            if self.fail_on == name:
                return 1
            mode = yaml.safe_load((run_dir / "config.yaml").read_text())["eval"]["mode"]
            (run_dir / "results.json").write_text(json.dumps(_results(self.fake[(name, mode)])))
        elif cmd == "eval":
            out = Path(argv[argv.index("--out") + 1])
            mode = argv[argv.index("--mode") + 1]
            out.mkdir(parents=True, exist_ok=True)
            name = out.parent.name
            (out / "results.json").write_text(json.dumps(_results(self.fake[(name, mode)])))
        return 0


def _trains(calls: list[list[str]]) -> list[list[str]]:
    return [c for c in calls if "train" in c]


def test_fresh_sweep_commands_and_exact_table(tmp_path: Path) -> None:
    spec_path = _write_spec(tmp_path)
    out = tmp_path / "out"
    runner = FakeRunner()
    report = run_sweep(spec_path, out, root="/data/sysu", runner=runner)

    base = str((tmp_path / "base.yaml").resolve())
    cache = f"data.cache_dir={out.resolve() / 'cache'}"
    assert runner.calls[0] == [
        sys.executable, "-m", "df2am.cli", "train", base, "loss.use_affinity=false", cache,
        "data.root=/data/sysu", "--out", str(out.resolve() / "a"),
    ]
    # The trainer's own final test is the all-search one; indoor needs df2am eval.
    assert runner.calls[1] == [
        sys.executable, "-m", "df2am.cli", "eval", str(out.resolve() / "a" / "model_final.pt"),
        "--root", "/data/sysu", "--out", str(out.resolve() / "a" / "eval_mode-indoor"),
        "--mode", "indoor",
    ]
    assert len(runner.calls) == 4

    # Indoor mAP = fake value + 4 (mAP is the 5th metric key).
    expected = "\n".join([
        "# Tiny table",
        "",
        f"Each cell: ours / paper (%). Ours: `tiny` runs under `{out.resolve()}`; — = not run "
        "yet / not reported.",
        "",
        # Tricks are stated for every evaluation of the table (flip/re-ranking off here).
        "Evaluation `all`: flip averaging off, re-ranking off.",
        "Evaluation `indoor`: flip averaging off, re-ranking off.",
        "",
        "| Setting | All r=1 | Indoor mAP |",
        "| --- | ---: | ---: |",
        "| Run A | 50.00 / 52.88 | 64.00 / 64.27 |",
        "| b | 51.50 / — | 65.25 / 71.52 |",
        "| DDAG (paper) | — / 54.75 | — / 67.98 |",
        "",
        "- a note",
        "",
    ])
    assert report.markdown == expected
    assert (out / "tiny.md").read_text() == expected
    doc = json.loads((out / "tiny.json").read_text())
    assert doc["runs"]["b"]["results"]["indoor"]["mAP"] == 65.25
    assert doc["runs"]["b"]["config"]["model.num_parts"] == 2


def test_rerun_skips_finished_runs(tmp_path: Path) -> None:
    spec_path = _write_spec(tmp_path)
    out = tmp_path / "out"
    run_sweep(spec_path, out, root="/d", runner=FakeRunner())
    again = FakeRunner()
    report = run_sweep(spec_path, out, root="/d", runner=again)
    assert again.calls == []
    assert report.results["a"]["all"]["rank1"] == 50.0


def test_finished_run_skipped_and_partial_run_resumed(tmp_path: Path) -> None:
    spec = load_spec(_write_spec(tmp_path))
    out = (tmp_path / "out").resolve()
    # a: finished (results.json present); b: interrupted (config + last.pt, no results).
    for name in ("a", "b"):
        (out / name / "checkpoints").mkdir(parents=True)
        cfg = resolve_run(spec, name, ["data.root=/d"])
        save_config(cfg, out / name / "config.yaml")
    (out / "a" / "results.json").write_text(json.dumps(_results(50.0)))
    (out / "b" / "checkpoints" / "last.pt").write_bytes(b"x")

    runner = FakeRunner()
    run_sweep(spec, out, root="/d", runner=runner)
    trains = _trains(runner.calls)
    assert len(trains) == 1
    assert trains[0] == [
        sys.executable, "-m", "df2am.cli", "train", "--resume", str(out / "b"),
        f"data.cache_dir={out / 'cache'}", "data.root=/d",
    ]
    evals = [c for c in runner.calls if "eval" in c]
    assert [c[c.index("--out") + 1] for c in evals] == [
        str(out / "a" / "eval_mode-indoor"), str(out / "b" / "eval_mode-indoor")
    ]


def test_run_dir_with_other_config_is_an_error(tmp_path: Path) -> None:
    spec = load_spec(_write_spec(tmp_path))
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    save_config(resolve_run(spec, "b"), out / "a" / "config.yaml")  # b's config in a's dir
    with pytest.raises(SweepError, match=r"run 'a'.*different config.*model.num_parts"):
        plan_sweep(spec, out, root="/d")


def test_failed_run_names_run_and_log(tmp_path: Path) -> None:
    spec_path = _write_spec(tmp_path)
    out = (tmp_path / "out").resolve()
    with pytest.raises(SweepError, match=r"run 'b' failed.*exit status 1.*" + str(out / "b")):
        run_sweep(spec_path, out, root="/d", runner=FakeRunner(fail_on="b"))
    assert (out / "b" / "log.txt").read_text() == "fake output\n"


def test_equal_configs_share_one_run(tmp_path: Path) -> None:
    spec = dict(SPEC, runs={"a": ["loss.lambda_df2=1.1"], "b": ["loss.lambda_df2=1.1"]})
    spec["table"] = None
    out = tmp_path / "out"
    runner = FakeRunner()
    report = run_sweep(_write_spec(tmp_path, spec), out, root="/d", runner=runner)
    assert len(_trains(runner.calls)) == 1
    assert report.results["b"] == report.results["a"]
    assert not (out / "b").exists()


def test_eval_options_of_the_training_config_reuse_results_json(tmp_path: Path) -> None:
    spec = dict(SPEC, overrides=["eval.mode=indoor"], evals={"indoor": {"mode": "indoor"}})
    spec["table"] = None
    runner = FakeRunner()
    report = run_sweep(_write_spec(tmp_path, spec), tmp_path / "out", root="/d", runner=runner)
    assert [c[3] for c in runner.calls] == ["train", "train"]
    assert report.results["b"]["indoor"]["rank1"] == 61.25


def test_trials_mean_and_population_std(tmp_path: Path) -> None:
    spec = {"name": "reg", "base": "base.yaml", "trials": [1, 2], "runs": {"r": []},
            "evals": {"v2t": {"direction": "v2t"}}}
    base = {"data": {"dataset": "regdb"}}
    out = (tmp_path / "out").resolve()
    values = {1: 70.0, 2: 74.0}

    def runner(argv: list[str], log: Path) -> int:
        run_dir = Path(argv[argv.index("--out") + 1])
        trial = int(run_dir.name.split("_")[1])
        assert f"data.trial={trial}" in argv
        run_dir.mkdir(parents=True, exist_ok=True)  # the sweep made it for log.txt
        i = argv.index("train")
        save_config(load_config(argv[i + 1], argv[i + 2 : argv.index("--out")]),
                    run_dir / "config.yaml")
        (run_dir / "results.json").write_text(json.dumps(_results(values[trial])))
        return 0

    report = run_sweep(_write_spec(tmp_path, spec, base), out, root="/d", runner=runner)
    res = report.results["r"]["v2t"]
    assert res["rank1"] == pytest.approx(72.0)
    assert res["rank1_std"] == pytest.approx(2.0)  # population std of (70, 74)
    assert res["mAP"] == pytest.approx(76.0)
    assert (out / "r" / "trial_2" / "results.json").is_file()


def test_figure_plots_are_written(tmp_path: Path) -> None:
    spec = {
        "name": "fig",
        "base": "base.yaml",
        "overrides": ["eval.mode=indoor"],
        "groups": {
            "lam": {"grid": {"loss.lambda_df2": [0.5, 1.1]}, "name": "lam{loss.lambda_df2}"}
        },
        "evals": {"indoor": {"mode": "indoor"}},
        "plots": [{"name": "lambda", "eval": "indoor", "xlabel": "λ",
                   "series": [{"label": "DF²AM", "group": "lam", "x": "loss.lambda_df2",
                               "paper": {1.1: {"rank1": 66.39, "mAP": 71.52}},
                               "paper_best": {"mAP": 71.52}}]}],
    }
    fake = {("lam0.5", "indoor"): 40.0, ("lam1.1", "indoor"): 45.0}
    out = tmp_path / "out"
    runner = FakeRunner(fake=fake)
    report = run_sweep(_write_spec(tmp_path, spec), out, root="/d", runner=runner)
    png = out / "fig_lambda.png"
    assert png in report.files
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.values["lam0.5"]["loss.lambda_df2"] == 0.5


def test_collect_only_reports_missing_runs(tmp_path: Path) -> None:
    spec_path = _write_spec(tmp_path)
    report = run_sweep(spec_path, tmp_path / "out", root=None, collect_only=True)
    assert report.results["a"] == {"all": None, "indoor": None}
    assert "| Run A | — / 52.88 | — / 64.27 |" in report.markdown


def test_read_metrics_formats(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"summary": {"rank1": 1.5, "mAP": 2.0, "mAP_std": 0.1}}))
    assert read_metrics(p) == {"rank1": 1.5, "mAP": 2.0, "mAP_std": 0.1}
    p.write_text(json.dumps({"rank5": 3.0}))
    with pytest.raises(SweepError, match="no numeric rank1/mAP"):
        read_metrics(p)


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        ({"bogus": 1}, "unknown keys"),
        ({"runs": {"a": ["x"]}}, "key=value"),
        ({"base": "missing.yaml"}, "not found"),
        ({"evals": {"e": {"colour": "red"}}}, "unknown options"),
        ({"runs": {"a b": []}}, "run names"),
        # Trials train one model each: only for datasets with a training split per trial.
        ({"trials": [1, 2]}, r"one model per trial.*SYSU-MM01: one model for all trials"),
        ({"trials": [0, 1], "overrides": ["data.dataset=regdb"]}, r"RegDB: 1\.\.10"),
        ({"trials": [1, 1], "overrides": ["data.dataset=regdb"]}, "distinct trial numbers"),
    ],
)
def test_bad_specs(tmp_path: Path, patch: dict, match: str) -> None:
    spec = {**SPEC, **patch}
    spec["table"] = None
    with pytest.raises(SweepError, match=match):
        load_spec(_write_spec(tmp_path, spec))


def test_a_run_on_its_own_base_config(tmp_path: Path) -> None:
    """``name: {base: FILE, overrides: [...]}``: another recipe in the same table."""
    (tmp_path / "other.yaml").write_text(yaml.safe_dump({"model": {"depth": 34},
                                                         "train": {"epochs": 3}}))
    spec = {**SPEC, "runs": {"a": ["loss.use_affinity=false"],
                             "b": {"base": "other.yaml", "overrides": ["model.num_parts=2"]}}}
    spec_path = _write_spec(tmp_path, spec)
    loaded = load_spec(spec_path)
    assert loaded.run("a").base is None and loaded.base_of(loaded.run("a")).name == "base.yaml"
    assert loaded.base_of(loaded.run("b")) == (tmp_path / "other.yaml").resolve()
    cfg = resolve_run(loaded, "b")
    assert (cfg.model.depth, cfg.train.epochs, cfg.model.num_parts) == (34, 3, 2)
    out = tmp_path / "out"
    runner = FakeRunner()
    report = run_sweep(spec_path, out, root="/d", runner=runner)
    b_train = next(c for c in _trains(runner.calls) if c[-1] == str(out.resolve() / "b"))
    assert b_train[b_train.index("train") + 1] == str((tmp_path / "other.yaml").resolve())
    assert report.to_dict()["runs"]["b"]["base"] == str((tmp_path / "other.yaml").resolve())
    assert report.to_dict()["runs"]["b"]["config"]["model.depth"] == 34
    # A run without overrides may omit them; a wrong key or file is named.
    spec["runs"] = {"b": {"base": "other.yaml"}}
    assert load_spec(_write_spec(tmp_path, {**spec, "table": None})).run("b").overrides == ()
    for runs, match in (({"b": {"base": "nope.yaml"}}, r"runs\.b\.base.*not found"),
                        ({"b": {"bas": "other.yaml"}}, r"runs\.b: unknown keys \['bas'\]"),
                        ({"b": {"overrides": []}}, r"runs\.b\.base: required")):
        with pytest.raises(SweepError, match=match):
            load_spec(_write_spec(tmp_path, {**SPEC, "runs": runs, "table": None}))


def test_trials_are_checked_against_every_run_base(tmp_path: Path) -> None:
    (tmp_path / "sysu.yaml").write_text(yaml.safe_dump({"data": {"dataset": "sysu"}}))
    spec = {**SPEC, "overrides": [], "trials": [1, 2], "table": None,
            "runs": {"a": [], "b": {"base": "sysu.yaml"}}}
    base = {"data": {"dataset": "regdb"}}
    with pytest.raises(SweepError, match=r"SYSU-MM01, sysu\.yaml: one model for all trials"):
        load_spec(_write_spec(tmp_path, spec, base))


def test_bad_override_names_the_run(tmp_path: Path) -> None:
    spec = {**SPEC, "runs": {"a": ["loss.no_such_key=1"]}, "table": None}
    with pytest.raises(SweepError, match=r"run 'a'.*loss.no_such_key"):
        resolve_run(load_spec(_write_spec(tmp_path, spec)), "a")


def test_subprocess_runner_tees_output(tmp_path: Path) -> None:
    log = tmp_path / "run" / "log.txt"
    import io

    echo = io.StringIO()
    rc = subprocess_runner(
        [sys.executable, "-c", "import sys; print('hello'); sys.exit(3)"], log, echo
    )
    assert rc == 3
    assert echo.getvalue() == "hello\n"
    text = log.read_text()
    assert "hello\n" in text and text.endswith("[exit status 3]\n")


def test_cli_dry_run_and_collect_only(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec_path = _write_spec(tmp_path)
    out = tmp_path / "out"
    assert main(["sweep", str(spec_path), "--out", str(out), "--root", "/d", "--dry-run",
                 "train.epochs=1"]) == 0
    text = capsys.readouterr().out
    assert "tiny: 2 unit(s)" in text
    assert "train.epochs=1" in text and "--mode indoor" in text
    assert not out.exists()
    assert main(["sweep", str(spec_path), "--out", str(out), "--collect-only"]) == 0
    assert (out / "tiny.md").is_file()
    assert main(["sweep", str(spec_path), "--out", str(out)]) == 2  # no --root


def test_saved_config_from_before_a_new_key_still_matches(tmp_path):
    # A run folder written before model.part_pooling / loss.affinity_reduction existed: the
    # missing keys take their defaults (what that run trained with), so the sweep keeps it.
    import yaml

    from df2am.config import Config, config_to_dict
    from df2am.experiments.sweep import read_saved

    doc = config_to_dict(Config())
    del doc["model"]["part_pooling"], doc["loss"]["affinity_reduction"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(doc))
    assert read_saved(tmp_path) == config_to_dict(Config())


def test_spec_with_a_duplicated_key_names_both_lines(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("{}\n")
    path = tmp_path / "dup.yaml"
    path.write_text("name: a\nbase: base.yaml\nruns: {r: []}\nname: b\n")
    with pytest.raises(SweepError, match=r"duplicated key 'name' at lines 1 and 4"):
        load_spec(path)
