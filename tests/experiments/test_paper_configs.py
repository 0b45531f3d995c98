"""The shipped paper specs: every run resolves, and each enables what its table row says."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from df2am.cli import main
from df2am.config import Config, load_config
from df2am.experiments.sweep import (
    PAPER_SPECS,
    load_spec,
    paper_spec_dir,
    paper_spec_path,
    resolve_run,
)

REPO = Path(__file__).resolve().parents[2]


def _cfgs(name: str) -> dict[str, Config]:
    spec = load_spec(paper_spec_path(name))
    return {run.name: resolve_run(spec, run) for run in spec.runs}


def _losses(cfg: Config) -> tuple[bool, bool, bool, bool]:
    """(DF² module built, L_B, L_D, L_A) of a config."""
    return (cfg.model.df2_module, cfg.loss.use_baseline, cfg.loss.use_df2, cfg.loss.use_affinity)


@pytest.mark.parametrize("name", PAPER_SPECS)
def test_every_run_of_every_spec_resolves(name: str) -> None:
    spec = load_spec(paper_spec_path(name))
    assert spec.name == name
    assert spec.table is not None
    for run in spec.runs:
        for trial in spec.trials or [None]:
            cfg = resolve_run(spec, run, trial=trial)
            # The same config through the public loader (what `df2am train` will do).
            overrides = [*spec.overrides, *run.overrides]
            if trial is not None:
                overrides.append(f"data.trial={trial}")
            assert cfg == load_config(spec.base_of(run), overrides)
            # P divides the feature height (input height / 16 with last stride 1), or the
            # strips are adaptive-pooling bins, which need no divisor.
            divides = (cfg.data.height // 16) % cfg.model.num_parts == 0
            parts = cfg.model.arch == "df2am" and cfg.model.df2_module  # AGW/CAJ: no parts
            assert not parts or divides or cfg.model.part_pooling == "adaptive", run.name


def test_spec_dir_holds_exactly_the_paper_specs() -> None:
    assert sorted(p.stem for p in paper_spec_dir().glob("*.yaml")) == sorted(PAPER_SPECS)


@pytest.mark.parametrize("name", ["sysu", "regdb", "llcm", "agw_sysu", "agw_regdb", "caj_sysu"])
def test_shipped_base_configs_equal_the_repo_configs(name: str) -> None:
    shipped = yaml.safe_load((paper_spec_dir() / "base" / f"{name}.yaml").read_text())
    repo = yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())
    assert shipped == repo


def test_table1_full_model_both_sysu_modes() -> None:
    spec = load_spec(paper_spec_path("table1"))
    cfg = _cfgs("table1")["sysu_df2am"]
    assert cfg.data.dataset == "sysu"
    assert _losses(cfg) == (True, True, True, True)
    assert (cfg.loss.lambda_df2, cfg.loss.zeta_affinity) == (1.1, 1.5)
    assert cfg.loss.affinity_type == "margin"
    assert (cfg.model.num_parts, cfg.sampler.num_ids, cfg.sampler.num_per_modality) == (4, 8, 4)
    assert (cfg.optim.lr, cfg.train.epochs, cfg.optim.milestones) == (0.1, 80, [30, 50])
    assert {e.name: dict(e.options) for e in spec.evals} == {
        "all": {"mode": "all"}, "indoor": {"mode": "indoor"}
    }
    # The published numbers (protocols.md): Rank-1 / mAP all and indoor (no mINP published).
    paper = spec.table.paper["sysu_df2am"]
    assert (paper[0], paper[3], paper[4], paper[5], paper[8]) == (56.93, 55.10, None, 66.39,
                                                                   71.52)


def test_table1_agw_and_caj_rows_train_their_own_recipes() -> None:
    """AGW and CAJ run on their shipped recipes (the spec's per-run base), beside the published
    README numbers, which the table marks as test-set-selected."""
    spec = load_spec(paper_spec_path("table1"))
    assert [r.name for r in spec.runs] == ["sysu_df2am", "sysu_agw", "sysu_caj"]
    assert spec.base_of(spec.run("sysu_agw")).name == "agw_sysu.yaml"
    assert spec.base_of(spec.run("sysu_caj")).name == "caj_sysu.yaml"
    cfgs = _cfgs("table1")
    agw, caj = cfgs["sysu_agw"], cfgs["sysu_caj"]
    for cfg in (agw, caj):
        assert (cfg.model.arch, cfg.model.non_local, cfg.model.pooling) == ("agw", True, "gem")
        assert (cfg.loss.use_df2, cfg.loss.use_affinity, cfg.loss.id_mode) == (False, False,
                                                                               "joint")
        assert (cfg.data.dataset, cfg.eval.mode, cfg.data.height) == ("sysu", "all", 288)
    assert (agw.loss.triplet_type, agw.train.epochs, agw.model.flip_test) == ("wrt", 81, False)
    assert (caj.loss.triplet_type, caj.train.epochs, caj.model.flip_test) == ("adp", 100, True)
    assert caj.data.rgb_exchange_copy and caj.data.ir_channel_gray
    assert caj.data.erasing_mode == "caj" and caj.data.random_erasing == 0.5
    headers = [c.header for c in spec.table.columns]
    published = {name: dict(zip(headers, spec.table.paper[name], strict=True))
                 for name in ("sysu_agw", "sysu_caj")}
    assert {k: v for k, v in published["sysu_agw"].items() if v is not None} == {
        "All r=1": 47.50, "All mAP": 47.65, "All mINP": 35.30}
    assert {k: v for k, v in published["sysu_caj"].items() if v is not None} == {
        "All r=1": 69.88, "All mAP": 66.89, "All mINP": 53.61}
    assert all(spec.table.labels[n].endswith("†") for n in ("sysu_agw", "sysu_caj"))
    assert any(n.startswith("† ") and "test-set-selected best epochs" in n
               for n in spec.table.notes)


def test_table2_regdb_ten_trials_both_directions() -> None:
    spec = load_spec(paper_spec_path("table2"))
    assert spec.trials == list(range(1, 11))
    cfg = _cfgs("table2")["regdb_df2am"]
    assert cfg.data.dataset == "regdb"
    assert _losses(cfg) == (True, True, True, True)
    assert [e.options["direction"] for e in spec.evals] == ["v2t", "t2v"]
    assert resolve_run(spec, "regdb_df2am", trial=7).data.trial == 7
    paper = spec.table.paper["regdb_df2am"]
    assert (paper[0], paper[3], paper[4], paper[7]) == (73.06, 67.81, 70.49, 63.85)


def test_table3_rows_enable_exactly_their_losses() -> None:
    cfgs = _cfgs("table3")
    expected = {
        #                 (DF² module, L_B,   L_D,   L_A)
        "sysu_baseline": (False, True, False, False),
        "sysu_df2": (True, True, True, False),
        "sysu_am": (False, True, False, True),
        "sysu_df2am_no_lb": (True, False, True, True),
        "sysu_df2am": (True, True, True, True),
    }
    assert {name: _losses(cfg) for name, cfg in cfgs.items()} == expected
    for name, cfg in cfgs.items():
        feature = "fused" if cfg.model.df2_module else "bn_global"
        assert cfg.model.test_feature == feature, name
        assert cfg.loss.affinity_type == "margin"
    spec = load_spec(paper_spec_path("table3"))
    assert list(spec.table.rows) == list(expected)
    assert spec.table.paper["sysu_df2am"] == (56.93, 55.10, 66.39, 71.52)
    assert spec.table.paper["sysu_baseline"] == (52.88, 51.14, 56.16, 64.27)


def test_table4_parts() -> None:
    cfgs = _cfgs("table4")
    assert {n: c.model.num_parts for n, c in cfgs.items()} == {
        "sysu_p3": 3, "sysu_p4": 4, "sysu_p5": 5
    }
    # One input size for all rows; P = 3 and 5 (no divisors of H = 16) pool adaptively.
    assert {(c.data.height, c.data.width) for c in cfgs.values()} == {(256, 128)}
    assert {n: c.model.part_pooling for n, c in cfgs.items()} == {
        "sysu_p3": "adaptive", "sysu_p4": "strict", "sysu_p5": "adaptive"
    }
    for cfg in cfgs.values():
        assert _losses(cfg) == (True, True, True, True)
        assert cfg.eval.mode == "indoor"
    # The 4-part row is the full model: Table 1 indoor mAP, r=1, r=10, r=20.
    spec = load_spec(paper_spec_path("table4"))
    assert spec.table.paper["sysu_p4"] == (71.52, 66.39, 94.93, 98.55)


def test_figure3_sampling_and_affinity_variants() -> None:
    spec = load_spec(paper_spec_path("figure3"))
    cfgs = _cfgs("figure3")
    sampling = [cfgs[r.name].sampler for r in spec.group("sampling")]
    assert [s.num_ids for s in sampling] == [1, 2, 4, 8, 16, 32]
    assert all(2 * s.num_ids * s.num_per_modality == 64 for s in sampling)
    grid = [0.1, 0.3, 0.5, 0.7, 0.9, 1.1, 1.3]
    margin = [cfgs[r.name].loss for r in spec.group("margin")]
    assert [loss.affinity_type for loss in margin] == ["margin"] * 7
    assert [loss.affinity_margin for loss in margin] == grid
    l1 = [cfgs[r.name].loss for r in spec.group("l1")]
    assert [loss.affinity_type for loss in l1] == ["l1"] * 7
    assert [loss.affinity_delta for loss in l1] == grid
    for cfg in cfgs.values():
        assert _losses(cfg) == (True, True, True, True)
        assert cfg.eval.mode == "indoor"
    assert [p.name for p in spec.plots] == ["sampling", "affinity"]


def test_figure4_lambda_and_zeta() -> None:
    spec = load_spec(paper_spec_path("figure4"))
    cfgs = _cfgs("figure4")
    values = [round(0.1 + 0.2 * i, 1) for i in range(11)]
    lam = [cfgs[r.name].loss for r in spec.group("lambda")]
    assert [loss.lambda_df2 for loss in lam] == values
    assert {loss.zeta_affinity for loss in lam} == {1.5}
    zeta = [cfgs[r.name].loss for r in spec.group("zeta")]
    assert [loss.zeta_affinity for loss in zeta] == values
    assert {loss.lambda_df2 for loss in zeta} == {1.1}
    assert "sysu_lambda1.1" in cfgs and "sysu_zeta1.5" in cfgs


def test_reproduce_dry_run_shares_the_full_model(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Figure 4's λ = 1.1 and ζ = 1.5 points are one model: trained once."""
    assert main(["reproduce", "figure4", "--dry-run", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "figure4: 22 unit(s)" in text
    assert f"sysu_zeta1.5: alias (same model as {tmp_path.resolve() / 'sysu_lambda1.1'})" in text
    assert sum(" train " in line for line in text.splitlines()) == 21


def test_all_specs_together_need_47_sysu_10_regdb_and_1_llcm_models() -> None:
    """Runs with equal model settings share one run directory (docs/reproduce.md's count)."""
    from df2am.config import config_to_dict
    from df2am.experiments.sweep import model_key

    models: dict[str, str] = {}
    for name in PAPER_SPECS:
        spec = load_spec(paper_spec_path(name))
        for run in spec.runs:
            for trial in spec.trials or [None]:
                cfg = resolve_run(spec, run, trial=trial)
                models[model_key(config_to_dict(cfg))] = cfg.data.dataset
    assert sorted(models.values()).count("sysu") == 47  # 45 DF²AM variants + AGW + CAJ
    assert sorted(models.values()).count("regdb") == 10
    assert sorted(models.values()).count("llcm") == 1


def test_demo_scale_example_specs_match_the_paper_rows() -> None:
    """configs/examples: Table 3 and Table 4 on the demo recipe switch the same terms / P as
    the paper's specs, and every P divides its feature height (input height / 16)."""
    t3 = load_spec(REPO / "configs" / "examples" / "demo_table3.yaml")
    got = {run.name: _losses(resolve_run(t3, run)) for run in t3.runs}
    assert got == {
        "baseline": (False, True, False, False),
        "df2": (True, True, True, False),
        "am": (False, True, False, True),
        "df2am_no_lb": (True, False, True, True),
        "df2am": (True, True, True, True),
    }
    t4 = load_spec(REPO / "configs" / "examples" / "demo_table4.yaml")
    parts = {}
    for run in t4.runs:
        cfg = resolve_run(t4, run)
        assert (cfg.data.height // 16) % cfg.model.num_parts == 0
        assert cfg.model.depth == 18 and cfg.loss.triplet_mode == "joint"  # the demo recipe
        parts[run.name] = cfg.model.num_parts
    assert parts == {"p3": 3, "p4": 4, "p5": 5}


def test_llcm_spec_evaluates_one_model_in_all_three_directions() -> None:
    """The LLCM row: one model, I→V (reference default), true V→I and the reference's
    transposed V→I (what published V→I numbers are), each stated in the table notes."""
    spec = load_spec(paper_spec_path("llcm"))
    (run,) = spec.runs
    cfg = resolve_run(spec, run)
    assert (cfg.data.dataset, cfg.eval.direction, spec.trials) == ("llcm", "i2v", [])
    assert {ev.name: ev.options for ev in spec.evals} == {
        "i2v": {"direction": "i2v"},
        "v2i": {"direction": "v2i"},
        "v2i_ref": {"direction": "v2i_transposed"},
    }
    assert spec.table is not None and spec.table.paper == {}
