"""``df2am demo``: the tiny mode end to end, its outputs, and the recipe that configs/ mirrors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from df2am.cli import main
from df2am.config import config_from_dict, config_to_dict, load_config
from df2am.deploy.api import load_model
from df2am.experiments.demo import DEMO_CONFIG, TINY_CONFIG, demo_config, run_demo

KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("demo") / "run"
    return run_demo(out, tiny=True), out


def test_tiny_demo_outputs(tiny_run):
    result, out = tiny_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {k for key in KEYS for k in (key, f"{key}_std")}
    assert metrics == pytest.approx(result.trained.metrics())
    for key in KEYS:
        assert 0.0 <= metrics[key] <= 100.0 and metrics[f"{key}_std"] >= 0.0
    untrained = json.loads((out / "metrics_untrained.json").read_text())
    assert untrained == pytest.approx(result.untrained.metrics())
    # SYSU all-search over the 10 seeded trials, for both models
    for report in (result.trained, result.untrained):
        assert (report.dataset, report.mode, report.trials) == ("sysu", "all", list(range(10)))
    results = json.loads((out / "results.json").read_text())
    assert results["rank1"] == pytest.approx(metrics["rank1"])
    assert results["untrained"] == pytest.approx(untrained)

    # the resolved config, the checkpoint it loads into, TensorBoard logs, the CMC plot
    cfg = load_config(out / "config.yaml")
    assert config_to_dict(cfg) == config_to_dict(demo_config(cfg.data.root, tiny=True))
    assert Path(cfg.data.root) == out / "data" / "synthetic_sysu"
    model, ckpt_cfg = load_model(out / "model_final.pt")
    assert ckpt_cfg.model.depth == TINY_CONFIG["model"]["depth"]
    assert result.checkpoint == out / "model_final.pt"
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tb").rglob("*"))
    assert (out / "cmc.png").read_bytes()[:4] == b"\x89PNG"

    text = result.summary_text()
    assert text.count("Rank-20") == 2 and "untrained:" in text and "trained:" in text
    assert f"{metrics['rank1']:.2f}" in text and f"{untrained['rank1']:.2f}" in text


def test_demo_cli_rerun_reuses_finished_run(tiny_run, capsys: pytest.CaptureFixture[str]):
    result, out = tiny_run
    before = (out / "model_final.pt").stat().st_mtime_ns
    assert main(["demo", "--tiny", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    # finished run: not retrained, same evaluation
    assert (out / "model_final.pt").stat().st_mtime_ns == before
    assert f"{result.trained.metrics()['rank1']:.2f}" in printed
    assert "time:" in printed


def test_demo_refuses_a_folder_of_another_recipe_before_any_work(
        tiny_run, capsys: pytest.CaptureFixture[str]):
    # the full demo into the tiny demo's folder (as an upgrade into an old runs/demo would be)
    _, out = tiny_run
    before = sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*"))
    assert main(["demo", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out} holds a demo run of another recipe" in err
    assert "model.num_parts" in err and "data.height" in err and "Traceback" not in err
    assert sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*")) == before


def test_demo_yaml_mirrors_the_recipe():
    yaml_cfg = load_config(REPO / "configs" / "demo.yaml")
    code_cfg = config_from_dict(DEMO_CONFIG)
    assert config_to_dict(yaml_cfg) == config_to_dict(code_cfg)
