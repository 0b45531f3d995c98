"""assess.results: the one reader/writer of results.json (and metrics.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from df2am.assess import results as rs
from df2am.atomic import atomic_write
from df2am.errors import Df2amError


def test_write_json_format_and_no_temp_left(tmp_path: Path) -> None:
    doc = {"rank1": 12.5, "protocol": {"dataset": "sysu"}}
    path = rs.write_results(tmp_path / "new", doc)
    assert path == tmp_path / "new" / "results.json"
    assert path.read_text() == json.dumps(doc, indent=2) + "\n"
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]
    assert rs.read_results(path) == doc


def test_read_metrics_like_the_sweep(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"summary": {"rank1": 1.5, "mAP": 2, "mAP_std": 0.1,
                                         "mINP": True, "seconds": 3}}))
    assert rs.read_metrics(p) == {"rank1": 1.5, "mAP": 2.0, "mAP_std": 0.1}
    p.write_text(json.dumps({"rank1": "x", "mAP": 1}))
    with pytest.raises(Df2amError, match="no numeric rank1/mAP"):
        rs.read_metrics(p)

    class OtherError(Exception):
        pass

    with pytest.raises(OtherError, match="cannot read results"):
        rs.read_metrics(tmp_path / "missing.json", error=OtherError)


def test_summary_metrics_keeps_top_level_numbers() -> None:
    doc = {"rank1": 1.0, "selected_epoch": 3, "protocol": {}, "checkpoint": "x"}
    assert rs.summary_metrics(doc) == {"rank1": 1.0, "selected_epoch": 3}


def test_trial_result_rebuilds_eval_result(tmp_path: Path) -> None:
    cmc = [40.0] + [100.0] * 19
    doc = {"rank1": 40.0, "mAP": 30.0, "mINP": 10.0,
           "per_trial": [{"trial": 0, "num_valid_queries": 7}],
           "cmc": {"rank": list(range(1, 21)), "mean": cmc, "std": [0.0] * 20}}
    rs.write_results(tmp_path, doc)
    res, row = rs.trial_result(tmp_path / "results.json", 4)
    assert res.mAP == pytest.approx(0.3) and res.num_valid_queries == 7
    assert row["trial"] == 4 and row["rank1"] == pytest.approx(40.0)
    with pytest.raises(Df2amError, match="trial 5 has no test result"):
        rs.trial_result(tmp_path / "nope.json", 5)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(Df2amError, match="not a results.json"):
        rs.trial_result(tmp_path / "bad.json", 1)


def test_atomic_write_fsync_option(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    atomic_write(path, lambda fh: fh.write(b"one"), fsync=True)
    assert path.read_bytes() == b"one"
    with pytest.raises(RuntimeError):
        atomic_write(path, lambda fh: (fh.write(b"half"), (_ for _ in ()).throw(RuntimeError())),
                     fsync=True)
    assert path.read_bytes() == b"one"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]
