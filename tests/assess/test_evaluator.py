"""Evaluation runs: one extraction per distinct image, per-trial metrics equal to an
independent computation, the results JSON, the CMC plot and the printed table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from df2am.assess.evaluator import (
    METRIC_KEYS,
    EvalReport,
    evaluate_model,
    format_table,
    write_eval_outputs,
)
from df2am.data import transforms
from df2am.data.datasets.regdb import regdb_test
from df2am.data.datasets.sysu import sysu_gallery, sysu_query
from df2am.errors import ConfigError, DatasetError
from df2am.evaluation import EvalResult, aggregate_trials, evaluate_features
from df2am.models import build_model
from tiny import H, W, make_sysu, tiny_config


def _image(rng: np.random.Generator, path: Path, base: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = rng.integers(-40, 40, size=(H, W, 3))
    Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path)


def make_regdb(root: Path, trial: int = 1) -> Path:
    """A tiny RegDB tree: 3 train and 3 test ids, 2 images per id and modality."""
    rng = np.random.default_rng(1)
    lines: dict[str, list[str]] = {}
    for split, pids in (("train", (1, 2, 3)), ("test", (4, 5, 6))):
        for label, pid in enumerate(pids):
            base = rng.integers(40, 215, size=3)
            for folder, mod, tag in (("Visible", "visible", "v"), ("Thermal", "thermal", "t")):
                for n in range(2):
                    rel = f"{folder}/{pid}/female_{tag}_{n}.bmp"
                    _image(rng, root / rel, base)
                    lines.setdefault(f"{split}_{mod}", []).append(f"{rel} {label}")
    (root / "idx").mkdir()
    for key, rows in lines.items():
        (root / "idx" / f"{key}_{trial}.txt").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def sysu_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sysu(tmp_path_factory.mktemp("sysu"))


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(tiny_config().model, num_classes=3).eval()


def _independent_feats(model: torch.nn.Module, root: Path, records, modality: str) -> torch.Tensor:
    """Features computed without the evaluator: PIL decode, test transform, model.extract."""
    arrs = [np.asarray(Image.open(root / r.path).convert("RGB")) for r in records]
    batch = transforms.TestTransform(H, W)(torch.from_numpy(np.stack(arrs)))
    return model.extract(batch.contiguous(), modality)


def test_sysu_trials_match_independent_evaluation(sysu_root: Path, model: torch.nn.Module):
    cfg = tiny_config()
    calls: list[int] = []
    original = model.extract

    def counting_extract(images, modality, feature=None, flip=None):
        calls.append(images.shape[0])
        return original(images, modality, feature=feature, flip=flip)

    model.extract = counting_extract  # type: ignore[method-assign]
    try:
        report = evaluate_model(model, cfg, sysu_root, mode="all", trials=3)
    finally:
        del model.extract

    query = sysu_query(sysu_root, "all")
    galleries = [sysu_gallery(sysu_root, "all", t) for t in range(3)]
    union = {r.path for g in galleries for r in g}
    # The query once, and every distinct gallery image once across the three trials.
    assert sum(calls) == len(query) + len(union)
    assert report.num_gallery_extracted == len(union)
    assert report.num_query == len(query) == 3 * 2 * 3  # 3 test ids × cams 3, 6 × 3 files
    assert report.num_gallery == [12, 12, 12]  # 3 test ids × cams 1, 2, 4, 5, single-shot
    assert report.trials == [0, 1, 2]

    q = _independent_feats(model, sysu_root, query, "ir")
    expected = []
    for t, gallery in enumerate(galleries):
        g = _independent_feats(model, sysu_root, gallery, "rgb")
        exp = evaluate_features(
            q,
            g,
            np.array([r.pid for r in query]),
            np.array([r.pid for r in gallery]),
            np.array([r.cam for r in query]),
            np.array([r.cam for r in gallery]),
            protocol="sysu",
        )
        got = report.results[t]
        np.testing.assert_allclose(got.cmc, exp.cmc, atol=1e-6)
        assert got.mAP == pytest.approx(exp.mAP, abs=1e-6)
        assert got.mINP == pytest.approx(exp.mINP, abs=1e-6)
        expected.append(exp)
    want = aggregate_trials(expected).to_dict()
    for key, value in report.metrics().items():
        assert value == pytest.approx(want[key], abs=1e-4)


def test_diagnose_reports_alignment_of_the_extracted_features(
    sysu_root: Path, model: torch.nn.Module, tmp_path: Path
):
    from df2am.evaluation import ALIGNMENT_KEYS, modality_alignment

    report = evaluate_model(model, tiny_config(), sysu_root, trials=2, diagnose=True)
    query = sysu_query(sysu_root, "all")
    seen: set[str] = set()
    union = [r for t in range(2) for r in sysu_gallery(sysu_root, "all", t)
             if not (r.path in seen or seen.add(r.path))]
    want = modality_alignment(
        _independent_feats(model, sysu_root, union, "rgb"),
        _independent_feats(model, sysu_root, query, "ir"),
        np.array([r.pid for r in union]), np.array([r.pid for r in query]),
        np.array([r.cam for r in union]), np.array([r.cam for r in query]),
    ).to_dict()
    assert report.alignment is not None and list(report.alignment) == list(ALIGNMENT_KEYS)
    for key, value in want.items():
        assert report.alignment[key] == pytest.approx(value, abs=1e-4), key
    doc = json.loads(write_eval_outputs(report, tmp_path, plot=False).read_text())
    assert doc["alignment"]["cross_gap"] == pytest.approx(want["cross_gap"], abs=1e-4)
    assert "IR → RGB" in format_table(report)
    # Without --diagnose nothing changes in the outputs.
    plain = evaluate_model(model, tiny_config(), sysu_root, trials=2)
    assert plain.alignment is None and "alignment" not in plain.to_dict()


def test_results_json_and_cmc_png(sysu_root: Path, model: torch.nn.Module, tmp_path: Path):
    report = evaluate_model(model, tiny_config(), sysu_root, trials=2)
    path = write_eval_outputs(report, tmp_path / "out", extra={"checkpoint": "x.pt"})
    doc = json.loads(path.read_text())
    for key in METRIC_KEYS:
        assert 0.0 <= doc[key] <= 100.0
        assert doc[f"{key}_std"] >= 0.0
    assert doc["rank1"] <= doc["rank5"] <= doc["rank10"] <= doc["rank20"]
    assert doc["rank1"] == pytest.approx(100.0 * np.mean([r.cmc[0] for r in report.results]))
    assert doc["protocol"]["dataset"] == "sysu"
    assert doc["protocol"]["mode"] == "all"
    assert doc["protocol"]["sampler"] == "seeded"
    assert doc["protocol"]["trials"] == [0, 1]
    assert [row["trial"] for row in doc["per_trial"]] == [0, 1]
    assert len(doc["cmc"]["mean"]) == len(doc["cmc"]["std"]) == 20
    assert doc["cmc"]["mean"][0] == pytest.approx(doc["rank1"])
    assert doc["checkpoint"] == "x.pt"
    png = tmp_path / "out" / "cmc.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as im:
        assert im.size[0] > 100 and im.size[1] > 100


def test_regdb_direction_picks_modalities(tmp_path: Path, model: torch.nn.Module):
    root = make_regdb(tmp_path / "regdb")
    cfg = tiny_config("regdb")
    seen: list[str] = []
    original = model.extract

    def spy(images, modality, feature=None, flip=None):
        seen.append(modality)
        return original(images, modality, feature=feature, flip=flip)

    model.extract = spy  # type: ignore[method-assign]
    try:
        report = evaluate_model(model, cfg, root, direction="t2v")
    finally:
        del model.extract
    assert seen[0] == "ir" and seen[-1] == "rgb"  # thermal query first, visible gallery
    assert report.trials == [1] and report.direction == "t2v" and report.mode is None
    query, gallery = regdb_test(root, 1, "t2v")
    assert report.num_query == len(query) == 6 and report.num_gallery == [len(gallery)]
    assert "RegDB thermal→visible, trial 1" in format_table(report)
    with pytest.raises(ConfigError, match="own trial"):
        evaluate_model(model, cfg, root, trials=10)


def test_bad_inputs(sysu_root: Path, model: torch.nn.Module, tmp_path: Path):
    with pytest.raises(DatasetError, match="not a folder"):
        evaluate_model(model, tiny_config(), tmp_path / "missing")
    cfg = tiny_config()
    cfg.eval.max_rank = 10
    with pytest.raises(ConfigError, match="max_rank"):
        evaluate_model(model, cfg, sysu_root)
    with pytest.raises(ConfigError, match="1..10"):
        evaluate_model(model, tiny_config(), sysu_root, trials=11)


def _report(results: list[EvalResult]) -> EvalReport:
    return EvalReport(
        dataset="sysu",
        mode="all",
        direction=None,
        sampler="seeded",
        shots=1,
        trials=list(range(len(results))),
        metric="cosine",
        feature="fused",
        flip=False,
        max_rank=20,
        results=results,
        summary=aggregate_trials(results),
        num_query=4,
        num_gallery=[4] * len(results),
        num_gallery_extracted=4,
        seconds=0.0,
    )


def test_format_table_hand_computed():
    cmc_a = np.array([0.5] * 4 + [0.75] * 5 + [1.0] * 11)
    cmc_b = np.array([0.7] * 4 + [0.75] * 5 + [1.0] * 11)
    report = _report(
        [EvalResult(cmc_a, 0.4, 0.2, 4), EvalResult(cmc_b, 0.6, 0.3, 4)]
    )
    table = format_table(report)
    lines = table.splitlines()
    assert lines[0].startswith("SYSU-MM01 all-search, seeded sampler, single-shot, 2 trials")
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    # mean ± population std of the two trials, in percent
    assert rows["Rank-1"] == ["60.00", "±", "10.00"]
    assert rows["Rank-5"] == ["75.00", "±", "0.00"]
    assert rows["Rank-10"] == ["100.00", "±", "0.00"]
    assert rows["Rank-20"] == ["100.00", "±", "0.00"]
    assert rows["mAP"] == ["50.00", "±", "10.00"]
    assert rows["mINP"] == ["25.00", "±", "5.00"]
    assert format_table(report, label="trained").startswith("trained: SYSU-MM01")


def test_rerank_option_equals_rerank_then_evaluate(
    sysu_root: Path, model: torch.nn.Module, tmp_path: Path
):
    """eval.rerank: each trial's query + gallery re-ranked (k-reciprocal), then the same
    metric rule; the table, results.json and the default output folder say so."""
    from df2am.evaluation import evaluate, rerank_features

    report = evaluate_model(model, tiny_config(), sysu_root, trials=2, rerank=True,
                            rerank_k1=4, rerank_k2=2, rerank_lambda=0.0)
    query = sysu_query(sysu_root, "all")
    q = _independent_feats(model, sysu_root, query, "ir")
    for t in range(2):
        gallery = sysu_gallery(sysu_root, "all", t)
        g = _independent_feats(model, sysu_root, gallery, "rgb")
        dist = rerank_features(q, g, metric="cosine", k1=4, k2=2, lambda_value=0.0)
        exp = evaluate(dist, np.array([r.pid for r in query]), np.array([r.pid for r in gallery]),
                       np.array([r.cam for r in query]), np.array([r.cam for r in gallery]),
                       protocol="sysu")
        np.testing.assert_allclose(report.results[t].cmc, exp.cmc, atol=1e-6)
        assert report.results[t].mAP == pytest.approx(exp.mAP, abs=1e-5)
    # On this tiny set re-ranking changes the rankings only where the Jaccard term dominates.
    plain = evaluate_model(model, tiny_config(), sysu_root, trials=2)
    assert [r.mAP for r in plain.results] != [r.mAP for r in report.results]
    doc = json.loads(write_eval_outputs(report, tmp_path, plot=False).read_text())
    assert doc["protocol"]["rerank"] is True
    assert doc["protocol"]["rerank_params"] == {"k1": 4, "k2": 2, "lambda": 0.0}
    assert doc["protocol"]["flip"] is False and doc["protocol"]["metric_rule"] == "sysu"
    assert "(fused feature, flip off, re-ranking on (k1=4, k2=2, λ=0.0))" in format_table(report)
    assert json.loads(write_eval_outputs(plain, tmp_path / "p", plot=False).read_text())[
        "protocol"]["rerank"] is False
    with pytest.raises(ConfigError, match="rerank_lambda"):
        evaluate_model(model, tiny_config(), sysu_root, rerank=True, rerank_lambda=1.5)


def test_table_always_states_flip_and_rerank():
    report = _report([EvalResult(np.ones(20), 1.0, 1.0, 4)])
    assert format_table(report).splitlines()[0] == (
        "SYSU-MM01 all-search, seeded sampler, single-shot, 1 trial "
        "(fused feature, flip off, re-ranking off)")


def test_zero_batch_size_is_an_error_not_the_default(sysu_root: Path, model: torch.nn.Module):
    with pytest.raises(ConfigError, match=r"--batch-size \(batch size\) must be >= 1, got 0"):
        evaluate_model(model, tiny_config(), sysu_root, batch_size=0)
