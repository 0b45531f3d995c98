"""The deploy room's validators against hand-made inputs (issue 22): feature arrays and
sidecars, list files, FAISS parameters (build and load), thresholds, searches that must return
``k`` rows, calibration and the parity tolerance."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from df2am.deploy.export import check_tolerance
from df2am.deploy.features import (
    FeaturesError,
    FeatureSet,
    check_features,
    load_features,
    read_list_file,
    save_features,
)
from df2am.errors import ConfigError, DatasetError

faiss = pytest.importorskip("faiss")

from df2am.deploy.index import (  # noqa: E402
    SearchIndexError,
    build_index,
    calibrate_threshold,
    check_params,
    check_threshold,
    load_index,
    save_index,
)


def unit_rows(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def feature_set(x: np.ndarray) -> FeatureSet:
    return FeatureSet(features=x, paths=[f"{i // 2}/{i}.png" for i in range(len(x))],
                      root="/g", modality="rgb", fingerprint="f" * 64,
                      weights_sha256="w" * 64, preprocessing={})


# ------------------------------------------------------------------ feature arrays


@pytest.mark.parametrize(("make", "message"), [
    (lambda x: x.astype(np.float64), "dtype float64 is not a feature dtype"),
    (lambda x: (x * 100).astype(np.int32), "dtype int32"),
    (lambda x: x[:0], r"no features \(shape \(0, 8\)\)"),
    (lambda x: x[0], "expected a 2-D"),
    (lambda x: np.where(np.arange(len(x))[:, None] == 3, np.nan, x).astype(np.float32),
     r"row 3 \(image 1/3.png\) holds NaN or infinite values"),
    (lambda x: np.where(np.arange(len(x))[:, None] >= 4, np.inf, x).astype(np.float32),
     r"row 4 \(image 2/4.png\) holds NaN or infinite values, and 1 more row"),
    (lambda x: np.where(np.arange(len(x))[:, None] == 0, 0, x).astype(np.float16),
     r"row 0 \(image 0/0.png\) is all zeros"),
])
def test_check_features_refuses(make, message):
    x = make(unit_rows(6))
    paths = [f"{i // 2}/{i}.png" for i in range(len(x))] if x.ndim == 2 else None
    with pytest.raises(FeaturesError, match=message):
        check_features(x, paths, where="")
    with pytest.raises(FeaturesError, match="6 rows but 5 paths"):
        check_features(unit_rows(6), ["p"] * 5)


def test_a_feature_set_is_checked_when_made_and_loaded(tmp_path: Path, caplog):
    with pytest.raises(FeaturesError, match="holds NaN"):
        feature_set(np.full((2, 8), np.nan, np.float32))
    fs = feature_set(unit_rows(4))
    save_features(fs, tmp_path / "g")
    arr = np.load(tmp_path / "g.npy")
    arr[1, 0] = np.inf
    np.save(tmp_path / "g.npy", arr)
    with pytest.raises(FeaturesError, match=r"g\.npy: row 1 \(image 0/1.png\) holds NaN"):
        load_features(tmp_path / "g")
    # The sidecar: every key with its type, before the array is trusted.
    save_features(fs, tmp_path / "g")
    meta = json.loads((tmp_path / "g.json").read_text())
    for edit, message in [(lambda m: m.pop("fingerprint"), "lacks key 'fingerprint'"),
                          (lambda m: m.__setitem__("dim", "8"), "'dim' must be an integer"),
                          (lambda m: m.__setitem__("modality", "x"), "'modality' must be"),
                          (lambda m: m.__setitem__("paths", [1, 2, 3, 4]), "list strings")]:
        bad = json.loads(json.dumps(meta))
        edit(bad)
        (tmp_path / "g.json").write_text(json.dumps(bad))
        with pytest.raises(FeaturesError, match=message):
            load_features(tmp_path / "g")
    # The array and the sidecar's description of it must agree; the files must be readable.
    for edit, message in [(lambda m: m.__setitem__("dtype", "float16"),
                           "'dtype' is 'float16' but g.npy holds 'float32'"),
                          (lambda m: m.__setitem__("num_images", 5), "'num_images' is 5 but"),
                          (lambda m: m.__setitem__("precision", "fp8"), "'precision' must be"),
                          (lambda m: m.__setitem__("runtime", "tf"), "'runtime' must be one")]:
        bad = json.loads(json.dumps(meta))
        edit(bad)
        (tmp_path / "g.json").write_text(json.dumps(bad))
        with pytest.raises(FeaturesError, match=message):
            load_features(tmp_path / "g")
    (tmp_path / "g.json").write_text("\ufeff" + json.dumps(meta), encoding="utf-8")
    assert load_features(tmp_path / "g").paths == fs.paths  # an editor's byte-order mark
    (tmp_path / "g.json").write_text("{'paths': []}")
    with pytest.raises(FeaturesError, match=r"g\.json: not a readable JSON sidecar"):
        load_features(tmp_path / "g")
    (tmp_path / "g.json").write_text(json.dumps(meta))
    for data in (b"", np.load(tmp_path / "g.npy").tobytes()[:40], b"\x93NUMPY\x01"):
        (tmp_path / "e.npy").write_bytes(data)
        (tmp_path / "e.json").write_text(json.dumps(meta))
        with pytest.raises(FeaturesError, match=r"e\.npy: not a readable NumPy array file"):
            load_features(tmp_path / "e", mmap=bool(data))
    meta["paths"][1] = meta["paths"][0]  # legal but odd: noted
    (tmp_path / "g.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING):
        load_features(tmp_path / "g")
    assert "1 duplicated image path(s), e.g. '0/0.png' at rows 0 and 1" in caplog.text


# ------------------------------------------------------------------ list files


def test_read_list_file_bom_crlf_blank_comments_and_duplicates(tmp_path: Path, caplog):
    lst = tmp_path / "l.txt"
    lst.write_bytes("\ufeffa/1.jpg\r\n\r\n# note\r\n  b/2.jpg  \r\n./a/1.jpg\r\na//1.jpg\r\n"
                    .encode())
    with caplog.at_level(logging.WARNING):
        assert read_list_file(lst) == ["a/1.jpg", "b/2.jpg"]
    assert f"list file {lst}: 2 duplicated entries" in caplog.text
    assert "'./a/1.jpg' on lines 1 and 5" in caplog.text


@pytest.mark.parametrize(("name", "data", "message"), [
    ("latin.txt", "a/caf\xe9.jpg\n".encode("latin-1"), r"is not UTF-8 text \(byte 0xe9 on line 1"),
    ("nul.txt", b"a.jpg\x00\x01\n", "holds binary data"),
    ("probe.JPG", b"\xff\xd8\xff", "is an image file: --images takes a folder"),
])
def test_read_list_file_refuses(tmp_path: Path, name, data, message):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(DatasetError, match=message):
        read_list_file(tmp_path / name)


# ------------------------------------------------------------------ index parameters


@pytest.mark.parametrize(("kind", "params", "message"), [
    ("ivf", {"nlist": 0, "nprobe": 1}, r"--nlist must be in 1\.\.10 \(the gallery size\), got 0"),
    ("ivf", {"nlist": 11, "nprobe": 1}, "--nlist must be in 1..10"),
    ("ivf", {"nlist": 4, "nprobe": 0}, r"--nprobe must be in 1\.\.4 \(nlist\), got 0"),
    ("ivf", {"nlist": 4, "nprobe": 5}, "--nprobe must be in 1..4"),
    ("ivf", {"nlist": 4, "nprobe": True}, "--nprobe must be an integer"),
    ("ivf", {"nlist": 4}, "--nprobe is missing"),
    ("hnsw", {"m": 1, "ef_construction": 40, "ef_search": 64}, "--m must be in 2..512, got 1"),
    ("hnsw", {"m": 513, "ef_construction": 40, "ef_search": 64}, "--m must be in 2..512"),
    ("hnsw", {"m": 8, "ef_construction": 0, "ef_search": 64}, "--ef-construction must be >= 1"),
    ("hnsw", {"m": 8, "ef_construction": 40, "ef_search": 0}, "--ef-search must be >= 1, got 0"),
    ("hnsw", {"m": 8, "ef_construction": 40, "ef_search": "64"}, "--ef-search must be an int"),
    ("exact", {"nlist": 2}, "--nlist: not a parameter of the exact index type"),
    ("lsh", {}, "index type must be one of"),
])
def test_check_params(kind, params, message):
    with pytest.raises(ConfigError, match=message):
        check_params(kind, params, 10)


def test_build_refuses_before_faiss_and_load_rechecks(tmp_path: Path):
    fs = feature_set(unit_rows(10))
    with pytest.raises(ConfigError, match="--m must be in 2..512, got 0"):
        build_index(fs, "hnsw", m=0)  # FAISS aborts the process on m=0
    with pytest.raises(ConfigError, match="--nlist must be in 1..10"):
        build_index(fs, "ivf", nlist=0)  # used to become the default silently
    assert build_index(fs, "ivf", nlist=2).meta["params"] == {"nlist": 2, "nprobe": 2}
    path = save_index(build_index(fs, "hnsw", m=4), tmp_path / "h").with_suffix("")
    meta = json.loads((tmp_path / "h.json").read_text())
    meta["params"]["ef_search"] = 0  # hand-edited
    (tmp_path / "h.json").write_text(json.dumps(meta))
    with pytest.raises(SearchIndexError, match=r"h\.json: params\.ef_search must be >= 1"):
        load_index(path)
    meta["params"]["ef_search"], meta["type"] = 8, "exact"
    (tmp_path / "h.json").write_text(json.dumps(meta))
    with pytest.raises(SearchIndexError,
                       match=r"params\.\w+: not a parameter of the exact index type"):
        load_index(path)
    meta["params"] = {}
    (tmp_path / "h.json").write_text(json.dumps(meta))
    with pytest.raises(SearchIndexError, match="'type' is 'exact' but h.faiss holds a"):
        load_index(path)
    # The sidecar's other descriptions must agree too; an unreadable FAISS file is named.
    path = save_index(build_index(fs, "exact"), tmp_path / "e").with_suffix("")
    good = (tmp_path / "e.json").read_text()
    for key, value, message in [("ntotal", 4, "'ntotal' is 4 but 'paths' lists 10 images"),
                                ("precision", "int4", "'precision' must be one of")]:
        (tmp_path / "e.json").write_text(json.dumps({**json.loads(good), key: value}))
        with pytest.raises(SearchIndexError, match=message):
            load_index(path)
    (tmp_path / "e.json").write_text("\ufeff" + good, encoding="utf-8")
    assert load_index(path).meta["ntotal"] == 10  # an editor's byte-order mark is fine
    whole = (tmp_path / "e.faiss").read_bytes()
    for data in (b"", whole[:60], b"not an index"):
        (tmp_path / "e.faiss").write_bytes(data)
        with pytest.raises(SearchIndexError,
                           match=r"e\.faiss: not a readable FAISS index \(empty, truncated"):
            load_index(path)


def test_search_returns_k_rows_or_refuses(tmp_path: Path):
    x = unit_rows(60, d=16, seed=1)
    fs = feature_set(x)
    exact = build_index(fs, "exact")
    want, _ = exact.search(x[:5], 50)
    hnsw = build_index(fs, "hnsw", m=4, ef_search=1)  # a beam of 1: FAISS returns 1 row
    rows, dist = hnsw.search(x[:5], 50)
    assert (rows >= 0).all() and np.isfinite(dist).all() and rows.shape == (5, 50)
    assert hnsw.index.hnsw.efSearch == 1  # the stored setting is unchanged
    ivf = build_index(fs, "ivf", nlist=6, nprobe=1)  # one cell holds ~10 rows, not 50
    rows, dist = ivf.search(x[:5], 50)
    assert (rows >= 0).all() and rows.shape == (5, 50)
    assert {tuple(sorted(r)) for r in rows} == {tuple(sorted(r)) for r in want}
    assert ivf.index.nprobe == 1
    with pytest.raises(SearchIndexError, match="query row 1 is not a feature"):
        exact.search(np.stack([x[0], np.full(16, np.nan, np.float32)]), 3)
    rows, _ = exact.search(x[:1], 500)  # capped at the gallery
    assert rows.shape == (1, 60)


@pytest.mark.parametrize("bad", [-1, -1e-9, 2.0001, float("nan"), float("inf")])
def test_check_threshold(bad):
    with pytest.raises(ConfigError, match="--threshold must be a cosine distance in"):
        check_threshold(bad)
    assert check_threshold(None) is None and check_threshold(0) == 0 and check_threshold(2) == 2


def test_distances_stay_in_the_cosine_range():
    """Rounding put 1 - q·g of a gallery row searched for itself at -1e-7: shown as such and,
    calibrated, a threshold that search --threshold refuses."""
    x = np.random.default_rng(0).normal(size=(400, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    flat = faiss.IndexFlatIP(64)
    flat.add(x)
    raw = 1.0 - flat.search(np.concatenate([x, -x]), 400)[0]
    if raw.min() >= 0 and raw.max() <= 2:
        pytest.skip("this CPU's rounding puts no distance outside [0, 2]")
    _, dist = build_index(feature_set(x), "exact").search(np.concatenate([x, -x]), 400)
    assert dist.min() == 0.0 and dist.max() <= 2.0
    wrong = np.array([False, True, True])
    with pytest.raises(SearchIndexError, match="1 validation query.* at distance 0"):
        calibrate_threshold(np.array([0.0, 0.3, 0.4]), wrong, np.ones(3, bool), 0.0)
    res = calibrate_threshold(np.array([0.05, 0.3]), wrong[:2], np.ones(2, bool), 0.0)
    assert 0 < res["threshold"] < 0.05 and check_threshold(res["threshold"])


def test_calibration_and_tolerance_refuse_non_finite():
    ok = np.ones(3, bool)
    with pytest.raises(SearchIndexError, match="1 non-finite"):
        calibrate_threshold(np.array([0.1, np.inf, 0.2]), ok, ok)
    with pytest.raises(SearchIndexError, match="no query"):
        calibrate_threshold(np.array([]), ok[:0], ok[:0])
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="--tolerance must be a finite number >= 0"):
            check_tolerance(bad)
    check_tolerance(None)
    check_tolerance(0.0)
