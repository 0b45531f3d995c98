"""benchmarks/scaling_study.py's own logic: nested views with one fixed test set, the step
budget as epochs, and which runs make up each axis of the figure."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "scaling_study.py"


@pytest.fixture(scope="module")
def ss():
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("scaling_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(SCRIPT.parent))


def _pool(root: Path) -> Path:
    # The layout the views need: camera folders and the three id files (no images).
    for cam in range(1, 7):
        (root / f"cam{cam}").mkdir(parents=True)
    (root / "exp").mkdir()
    (root / "exp" / "train_id.txt").write_text(",".join(map(str, range(1, 31))) + "\n")
    (root / "exp" / "val_id.txt").write_text("31,32,33,34,35\n")
    (root / "exp" / "test_id.txt").write_text(",".join(map(str, range(36, 51))) + "\n")
    return root


def _ids(path: Path) -> list[int]:
    return [int(t) for t in path.read_text().split(",")]


def test_views_are_nested_and_share_one_test_set(ss, tmp_path: Path) -> None:
    pool = _pool(tmp_path / "pool")
    small = ss.make_view(pool, tmp_path / "v10", 10, 5)
    large = ss.make_view(pool, tmp_path / "v20", 20, 5)
    train = {n: set(_ids(v / "exp" / "train_id.txt")) | set(_ids(v / "exp" / "val_id.txt"))
             for n, v in (("small", small), ("large", large))}
    assert len(train["small"]) == 10 and len(train["large"]) == 20
    assert train["small"] < train["large"]  # the first N of one fixed order
    assert train["large"] <= set(range(1, 36))  # the pool's training ids come first
    for v in (small, large):
        assert _ids(v / "exp" / "test_id.txt") == [36, 37, 38, 39, 40]
        assert (v / "cam3").resolve() == (pool / "cam3").resolve()
    # Beyond the pool's training ids: its unused test ids, never the fixed test set.
    big = ss.make_view(pool, tmp_path / "v40", 40, 5)
    ids = set(_ids(big / "exp" / "train_id.txt")) | set(_ids(big / "exp" / "val_id.txt"))
    assert len(ids) == 40 and not ids & set(range(36, 41))
    with pytest.raises(SystemExit, match="45 training ids"):
        ss.make_view(pool, tmp_path / "v99", 46, 5)


def test_schedule_is_the_demo_shape(ss) -> None:
    assert ss.schedule(672, 56) == ["train.epochs=12", "train.max_iters_per_epoch=56",
                                    "optim.milestones=[8,11]", "train.checkpoint_every=4"]
    assert ss.schedule(2016, 56)[:3] == ["train.epochs=36", "train.max_iters_per_epoch=56",
                                         "optim.milestones=[24,33]"]
    with pytest.raises(SystemExit, match="multiple"):
        ss.schedule(100, 56)


def test_axes_pick_runs_that_differ_in_one_coordinate(ss) -> None:
    def run(ids, steps, *over):
        return {"train_ids": ids, "steps": steps, "steps_run": steps,
                "overrides": ["loss.center_weight=1.0", *over]}

    rows = [("base", run(280, 2016, "model.width=32")),
            ("ids70", run(70, 2016, "model.width=32")),
            ("s672", run(280, 672, "model.width=32")),
            ("w16", run(280, 2016, "model.width=16")),
            ("in96", run(280, 2016, "model.width=32", "data.height=96", "data.width=48")),
            ("two", run(70, 672, "model.width=32")),  # two coordinates: on no axis
            ("other", {**run(280, 2016, "model.width=32"), "overrides": ["model.width=32"]})]
    axes = ss._axes(rows, "base")
    assert [x for x, _ in axes["train_ids"]] == [70, 280]
    assert [x for x, _ in axes["steps"]] == [672, 2016]
    assert [x for x, _ in axes["width"]] == [16, 32]
    assert [x for x, _ in axes["height"]] == [64, 96]
    with pytest.raises(SystemExit, match="--base 'ids70'"):
        ss._axes(rows, "ids70")
