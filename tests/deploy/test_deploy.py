"""Deployment verbs: ``df2am extract``, ``index build|calibrate``, ``search`` end to end (CPU).

A tiny untrained but seeded ResNet-18 checkpoint at 32 × 16 and a synthetic image tree
(``<id>/<n>.jpg``) stand in for a trained model and a real gallery.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

# faiss is in the deploy extra that `make test` installs: a missing one fails here, never skips.
import faiss  # noqa: E402, F401
import numpy as np
import pytest
from PIL import Image

from df2am.cli import main
from df2am.deploy.api import extract_features, load_model, search
from df2am.deploy.features import list_images, load_features, save_features
from df2am.deploy.index import (
    SearchIndexError,
    build_index,
    calibrate_threshold,
    import_faiss,
    load_index,
)
from tiny import H, W, make_checkpoint


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """``df2am.cli.main`` (its real error handling: a Df2amError → one line, exit 2)."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("deploy")
    rng = np.random.default_rng(0)
    gallery = root / "gallery"
    for pid in range(3):
        for n in range(3):
            d = gallery / f"{pid:04d}"
            d.mkdir(parents=True, exist_ok=True)
            arr = rng.integers(0, 256, size=(40 + n, 20 + pid, 3), dtype=np.uint8)
            suffix = ".JPG" if (pid, n) == (1, 2) else ".png"  # case-insensitive suffixes
            Image.fromarray(arr).save(d / f"{n}{suffix}", format="PNG")
    (gallery / "notes.txt").write_text("not an image")
    ck = root / "ckpt"
    env = {"root": root, "gallery": gallery,
           "ckpt": make_checkpoint(ck / "a.pt", seed=1),
           "other": make_checkpoint(ck / "b.pt", seed=2),
           "tall": make_checkpoint(ck / "c.pt", seed=1, height=64)}
    env["feats"] = root / "out" / "gallery"
    env["index"] = root / "out" / "gallery_index"
    return env


@pytest.fixture(scope="module")
def built(env: dict[str, Path]) -> dict[str, Path]:
    """Gallery features (fp32, RGB) and their exact index, through the CLI."""
    cap = _NullCapture()
    rc, _, err = run_cli(["extract", env["ckpt"], "--images", env["gallery"], "--modality",
                          "rgb", "--out", env["feats"], "--dtype", "float32",
                          "--device", "cpu", "--batch-size", "4"], cap)
    assert rc == 0, err
    rc, _, err = run_cli(["index", "build", env["feats"], "--out", env["index"]], cap)
    assert rc == 0, err
    return env


class _NullCapture:
    """capsys stand-in for module fixtures (output is not checked there)."""

    def readouterr(self) -> tuple[str, str]:
        return "", ""


def test_list_images_sorted_recursive_and_list_file(env, tmp_path: Path):
    root, paths = list_images(env["gallery"])
    assert paths == sorted(paths) and len(paths) == 9 and "0001/2.JPG" in paths
    assert not any(p.endswith(".txt") for p in paths)
    lst = tmp_path / "list.txt"
    absolute = env["gallery"] / "0000" / "0.png"
    lst.write_text(f"# probes\nrel/a.png\n\n{absolute}\n")
    root, paths = list_images(lst)
    assert root == tmp_path.resolve() and paths == ["rel/a.png", str(absolute)]


def test_extract_matches_api_and_sidecar(built):
    fs = load_features(built["feats"])
    model, _ = load_model(built["ckpt"])
    files = fs.resolved_paths()
    want = extract_features(model, files, "rgb").numpy()
    assert fs.features.dtype == np.float32 and fs.features.shape == want.shape
    np.testing.assert_allclose(fs.features, want, atol=1e-5)
    meta = json.loads(built["feats"].with_suffix(".json").read_text())
    assert meta["modality"] == "rgb" and meta["dim"] == want.shape[1]
    assert meta["preprocessing"]["height"] == H and meta["preprocessing"]["width"] == W
    assert len(meta["fingerprint"]) == 64 and meta["df2am_version"] and meta["skipped"] == []


def test_float16_default_and_bf16(env, tmp_path: Path, capsys):
    rc, out, err = run_cli(["extract", env["ckpt"], "--images", env["gallery"] / "0000",
                            "--modality", "ir", "--out", tmp_path / "q", "--bf16",
                            "--device", "cpu"], capsys)
    assert rc == 0, err
    fs = load_features(tmp_path / "q.npy")
    assert fs.features.dtype == np.float16 and fs.precision == "bf16"
    model, _ = load_model(env["ckpt"])
    want = extract_features(model, fs.resolved_paths(), "ir").numpy()
    cos = (fs.features.astype(np.float32) * want).sum(axis=1)
    assert cos.min() > 0.9  # bf16 keeps the embedding's direction, not every digit


def test_exact_index_equals_api_search(built):
    index = load_index(built["index"])
    fs = load_features(built["feats"])
    model, _ = load_model(built["ckpt"])
    queries = fs.resolved_paths()[::4]
    q = extract_features(model, queries, "ir").numpy()
    rows, dist = index.search(q, k=5)
    idx, want = search(model, queries, "ir", fs.resolved_paths(), "rgb", k=5)
    assert rows.tolist() == idx.tolist()
    np.testing.assert_allclose(dist, want.numpy(), atol=1e-5)


def test_search_cli_twin_threshold_json_grid(built, tmp_path: Path, capsys, caplog):
    twin = tmp_path / "copy.png"
    shutil.copy(built["gallery"] / "0002" / "1.png", twin)
    base = ["search", built["index"], "--query", twin, "--modality", "rgb",
            "--checkpoint", built["ckpt"], "--top-k", "3", "--device", "cpu"]
    rc, out, err = run_cli([*base, "--json", tmp_path / "r.json", "--grid",
                            tmp_path / "g.png", "--threshold", "0.01"], capsys)
    assert rc == 0, err
    assert "same-modality" in caplog.text  # allowed, but warned
    res = json.loads((tmp_path / "r.json").read_text())["results"][0]
    assert res["matches"][0]["path"] == "0002/1.png" and res["matches"][0]["distance"] < 1e-5
    assert res["in_gallery"] is True and len(res["matches"]) == 3
    assert Image.open(tmp_path / "g.png").size[0] == 4 * (int(W * 128 / H) + 4)
    other = tmp_path / "other.png"  # an image that is in no gallery
    noise = np.random.default_rng(5).integers(0, 256, size=(40, 20, 3), dtype=np.uint8)
    Image.fromarray(noise).save(other)
    rc, out, err = run_cli([*base[:3], other, *base[4:], "--threshold", "0"], capsys)
    assert rc == 0 and "not in gallery" in out, err
    # A threshold is a cosine distance in [0, 2]: -1 would reject every query, true ones too.
    rc, _, err = run_cli([*base, "--threshold", "-1"], capsys)
    assert rc == 2 and "--threshold must be a cosine distance in [0, 2]" in err


def test_other_checkpoint_or_image_size_refused(built, tmp_path: Path, capsys):
    index = load_index(built["index"])
    for ck in ("other", "tall"):
        rc, _, err = run_cli(["search", built["index"], "--query", built["gallery"] /
                              "0000" / "0.png", "--modality", "ir", "--checkpoint",
                              built[ck], "--device", "cpu"], capsys)
        assert rc == 2 and "Traceback" not in err
        assert index.fingerprint in err and "fingerprint" in err
    # A features file from the 64 × 16 model, used to calibrate the 32 × 16 index.
    rc, _, err = run_cli(["extract", built["tall"], "--images", built["gallery"] / "0001",
                          "--modality", "ir", "--out", tmp_path / "tall"], capsys)
    assert rc == 0, err
    tall = load_features(tmp_path / "tall")
    rc, _, err = run_cli(["index", "calibrate", built["index"], "--queries", tmp_path / "tall"],
                         capsys)
    assert rc == 2 and tall.fingerprint in err and index.fingerprint in err


def test_dimension_mismatch(built, tmp_path: Path, capsys):
    index = load_index(built["index"])
    with pytest.raises(SearchIndexError, match=f"dimension 7 .* {index.dim}-d"):
        index.search(np.ones((2, 7), np.float32))
    fs = load_features(built["feats"])
    fs.features = np.ascontiguousarray(fs.features[:, :7])  # same fingerprint, wrong width
    save_features(fs, tmp_path / "narrow")
    rc, _, err = run_cli(["index", "calibrate", built["index"], "--queries",
                          tmp_path / "narrow"], capsys)
    assert rc == 2 and "dimension 7" in err and "Traceback" not in err


def test_plain_errors(env, tmp_path: Path, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    cases = {
        "no image files": ["extract", env["ckpt"], "--images", tmp_path / "empty",
                           "--modality", "rgb", "--out", tmp_path / "x"],
        "'rgb' or 'ir'": ["extract", env["ckpt"], "--images", env["gallery"],
                          "--modality", "thermal", "--out", tmp_path / "x"],
        "checkpoint not found": ["extract", tmp_path / "nope.pt", "--images", env["gallery"],
                                 "--modality", "rgb", "--out", tmp_path / "x"],
        "index file not found": ["index", "calibrate", tmp_path / "noidx", "--queries",
                                 tmp_path / "x"],
        "feature file not found": ["index", "build", tmp_path / "nofeats", "--out",
                                   tmp_path / "i"],
    }
    for message, argv in cases.items():
        rc, _, err = run_cli(argv, capsys)
        assert rc == 2 and message in err and err.startswith("error:"), (message, err)


def test_unreadable_image_error_vs_skip_bad(env, tmp_path: Path, capsys):
    folder = tmp_path / "imgs"
    shutil.copytree(env["gallery"] / "0000", folder)
    (folder / "broken.jpg").write_bytes(b"this is not a jpeg")
    argv = ["extract", env["ckpt"], "--images", folder, "--modality", "rgb",
            "--out", tmp_path / "f", "--device", "cpu"]
    rc, _, err = run_cli(argv, capsys)
    assert rc == 2 and "broken.jpg" in err and "--skip-bad" in err
    rc, _, err = run_cli([*argv, "--skip-bad"], capsys)
    assert rc == 0, err
    fs = load_features(tmp_path / "f")
    assert fs.paths == ["0.png", "1.png", "2.png"] and len(fs.features) == 3
    assert fs.skipped[0]["path"].endswith("broken.jpg") and fs.skipped[0]["error"]


def test_approximate_indexes_and_calibrate(built, tmp_path: Path, capsys):
    fs = load_features(built["feats"])
    exact = load_index(built["index"]).search(fs.features, k=1)[0]
    for kind in ("ivf", "hnsw"):
        rc, _, err = run_cli(["index", "build", built["feats"], "--out", tmp_path / kind,
                              "--type", kind, "--nlist", "2", "--nprobe", "2"], capsys)
        assert rc == 0, err
        got = load_index(tmp_path / kind)
        assert got.meta["type"] == kind
        assert got.search(fs.features, k=1)[0].tolist() == exact.tolist()
    # The gallery's own features as validation queries: ids from the folders, all correct.
    rc, out, err = run_cli(["index", "calibrate", built["index"], "--queries", built["feats"],
                            "--json", tmp_path / "cal.json"], capsys)
    assert rc == 0, err
    cal = json.loads((tmp_path / "cal.json").read_text())
    assert cal["far"] == 0.0 and cal["tar"] == 1.0 and "threshold" in out


def test_calibrate_threshold_rule():
    dist = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    correct = np.array([True, True, False, True, False])
    res = calibrate_threshold(dist, correct, np.ones(5, bool), target_far=0.2)
    assert res["threshold"] == 0.4 and res["far"] == 0.2 and res["tar"] == 0.6
    res = calibrate_threshold(dist, correct, np.ones(5, bool), target_far=0.0)
    assert res["threshold"] == 0.2 and res["tar"] == 0.4
    res = calibrate_threshold(np.array([0.1]), np.array([False]), np.array([False]), 0.0)
    assert res["threshold"] < 0.1 and res["tar"] == 0.0


def test_missing_faiss_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` fail
    with pytest.raises(SearchIndexError, match=r"pip install 'df2am\[deploy\]'"):
        import_faiss()
    fs_index = pytest.raises(SearchIndexError)
    with fs_index:
        build_index(None, "exact")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- issue 21


def test_search_without_checkpoint_uses_the_recorded_one(built, tmp_path: Path, capsys):
    """The index records the checkpoint of extraction; search without --checkpoint equals
    search with it. A moved or changed file is an error naming the recorded path and what
    is there now."""
    query = built["gallery"] / "0001" / "1.png"
    base = ["search", None, "--query", query, "--modality", "ir", "--top-k", "4",
            "--device", "cpu"]

    def run(index: Path, *extra) -> tuple[int, dict, str]:
        argv = [index if a is None else a for a in base] + ["--json", tmp_path / "r.json",
                                                            *extra]
        rc, _, err = run_cli(argv, capsys)
        return rc, (json.loads((tmp_path / "r.json").read_text()) if rc == 0 else {}), err

    rc, remembered, err = run(built["index"])
    assert rc == 0, err
    rc, given, err = run(built["index"], "--checkpoint", built["ckpt"])
    assert rc == 0, err
    assert remembered["results"] == given["results"]
    assert remembered["model"] == str(built["ckpt"].resolve())
    assert remembered["query_numerics"] == ["torch", "fp32"]
    assert remembered["mixed_numerics"] is None

    # Moved: a copy of the run elsewhere whose recorded checkpoint is gone.
    moved = tmp_path / "moved"
    shutil.copytree(built["ckpt"].parent, moved / "ckpt")
    fs = load_features(built["feats"])
    fs.checkpoint = str((moved / "ckpt" / built["ckpt"].name).resolve())
    save_features(fs, moved / "feats")
    rc, _, err = run_cli(["index", "build", moved / "feats", "--out", moved / "idx"], capsys)
    assert rc == 0, err
    (moved / "ckpt" / built["ckpt"].name).rename(moved / "ckpt" / "renamed.pt")
    rc, _, err = run(moved / "idx")
    assert rc == 2 and fs.checkpoint in err and "nothing is there now" in err
    # Changed: another model's weights at the recorded path.
    shutil.copy(built["other"], fs.checkpoint)
    rc, _, err = run(moved / "idx")
    assert rc == 2 and fs.checkpoint in err and "has changed" in err
    assert fs.fingerprint[:16] in err and "found fingerprint" in err
    # An explicit checkpoint still works for the moved index.
    rc, again, err = run(moved / "idx", "--checkpoint", moved / "ckpt" / "renamed.pt")
    assert rc == 0 and again["results"][0]["matches"] == given["results"][0]["matches"], err


def test_index_auto_picks_a_setting_that_reaches_the_target(tmp_path: Path, capsys):
    """--type auto on a small random gallery with identity structure: the chosen setting's
    measured recall is >= the target, recorded in the sidecar and printed; an unreachable
    target names the best recall found."""
    from df2am.deploy.features import FeatureSet
    from df2am.deploy.index_auto import TargetRecallError, choose_index

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((300, 32)).astype(np.float32)
    x = centres[np.arange(3000) % 300] + 0.6 * rng.standard_normal((3000, 32)).astype(np.float32)
    fs = FeatureSet(features=x / np.linalg.norm(x, axis=1, keepdims=True),
                    paths=[f"{i % 300:04d}/{i}.jpg" for i in range(3000)], root=str(tmp_path),
                    modality="rgb", fingerprint="f" * 64, weights_sha256="w", preprocessing={})
    save_features(fs, tmp_path / "g")
    rc, out, err = run_cli(["index", "build", tmp_path / "g", "--out", tmp_path / "auto",
                            "--type", "auto", "--target-recall", "0.9"], capsys)
    assert rc == 0, err
    index = load_index(tmp_path / "auto")
    auto = index.meta["auto"]
    assert index.meta["type"] in ("exact", "ivf", "hnsw") and auto["recall"] >= 0.9
    assert auto["target_recall"] == 0.9 and auto["k"] == 10 and auto["queries"] == 300
    assert auto["method"] == "held-out rows" and len(auto["tried"]) >= 3
    chosen = [t for t in auto["tried"] if t["kind"] == index.meta["type"]
              and all(t["params"].get(k) == v for k, v in index.meta["params"].items())]
    assert chosen and chosen[0]["recall"] == auto["recall"]
    fast = [t for t in auto["tried"] if t["recall"] >= 0.9]
    assert auto["queries_per_s"] == max(t["queries_per_s"] for t in fast)
    assert f"recall@10 {auto['recall']:.4f}" in out and "target 0.9" in out
    assert index.index.ntotal == 3000
    assert index.meta["paths"] == fs.paths  # every row, in the features' order
    exact = build_index(fs, "exact").search(fs.features[:50], k=1)[0]
    assert (index.search(fs.features[:50], k=1)[0] == exact).mean() >= 0.9

    with pytest.raises(TargetRecallError, match=r"best was 0\.\d+ \(ivf"):
        choose_index(fs, target_recall=1.0, kinds=["ivf"])
    rc, _, err = run_cli(["index", "build", tmp_path / "g", "--out", tmp_path / "x", "--type",
                          "auto", "--target-recall", "1.5"], capsys)
    assert rc == 2 and "--target-recall must be in (0, 1]" in err
