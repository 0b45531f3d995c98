"""benchmarks/bench_index.py at a toy size: every setting measured and recorded as it goes, a
rerun resumes (nothing measured twice), the table and the plot are written."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import faiss  # noqa: F401  (deploy extra)

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_index.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_index", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_bench_index_small_and_resumable(tmp_path: Path, capsys):
    bench = _load()
    argv = ["--size", "2000", "--dim", "16", "--queries", "50", "--nlist", "8",
            "--nprobe", "1", "8", "--m", "8", "--ef-search", "16", "64", "--out",
            str(tmp_path), "--passes", "1", "--auto"]
    assert bench.main(argv) == 0
    rows = [json.loads(ln) for ln in (tmp_path / "results.jsonl").read_text().splitlines()]
    settings = [r for r in rows if r["event"] == "setting"]
    assert [(r["type"], r["params"].get("nprobe", r["params"].get("ef_search"))) for r in
            settings] == [("exact", None), ("ivf", 1), ("ivf", 8), ("hnsw", 16), ("hnsw", 64)]
    exact = settings[0]
    assert exact["recall@10"] == 1.0 and exact["index_gb"] >= 0 and exact["build_s"] >= 0
    ivf_all = next(r for r in settings if r["params"].get("nprobe") == 8)
    assert ivf_all["recall@10"] == 1.0  # nprobe = nlist is exhaustive
    (auto,) = [r for r in rows if r["event"] == "auto"]
    assert auto["recall"] >= 0.95 and auto["type"] in ("exact", "ivf", "hnsw")
    table = (tmp_path / "table.md").read_text()
    assert "| ivf | nlist=8, nprobe=8 |" in table and "--type auto" in table
    assert (tmp_path / "recall_qps.png").stat().st_size > 1000
    capsys.readouterr()
    assert bench.main(argv) == 0  # resumes: nothing rebuilt, nothing appended
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == len(rows)
    assert "done in an earlier run" not in capsys.readouterr().out  # (logged, not printed)
