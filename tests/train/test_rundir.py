"""train.rundir: the one "where does this run stand" rule."""

from __future__ import annotations

from pathlib import Path

import torch

from df2am.train.rundir import run_status


def test_run_status_one_rule(tmp_path: Path) -> None:
    d = tmp_path / "run"
    assert run_status(d) == "empty"
    (d / "checkpoints").mkdir(parents=True)
    (d / "config.yaml").write_text("{}")
    assert run_status(d) == "partial"
    torch.save({"epoch": 2}, d / "checkpoints" / "last.pt")
    (d / "model_final.pt").write_bytes(b"x")
    assert run_status(d) == "trained"  # trained, the final test not written
    (d / "results.json").write_text("{}")
    assert run_status(d) == "finished"
    # A resume asking for more epochs extends the run: not finished.
    assert run_status(d, epochs=2, trained=2) == "finished"
    assert run_status(d, epochs=3, trained=2) == "partial"
    # A results.json alone (a fake or a --trials summary) is finished, but nothing to resume.
    only = tmp_path / "only"
    only.mkdir()
    (only / "results.json").write_text("{}")
    assert run_status(only) == "finished"
    assert run_status(only, epochs=1, trained=0) == "partial"
