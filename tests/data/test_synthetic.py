"""The synthetic RGB–IR dataset: determinism, layout/counts read back by the real readers,
manifest reuse rules, and IR that is rendered from materials rather than copied from RGB."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from df2am.data.datasets import regdb, sysu
from df2am.data.synthetic import (
    SyntheticSpec,
    draw_person,
    regdb_trials,
    render_frame,
    sysu_plan,
    write_synthetic,
)
from df2am.data.synthetic.render import SKIN, TOP
from df2am.errors import ConfigError, DatasetError

SMALL = {"size": (40, 20), "images_per_camera": (2, 3)}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _gray(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


# --- determinism --------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["sysu", "regdb"])
def test_same_seed_gives_byte_identical_files(tmp_path: Path, layout: str) -> None:
    kwargs = {**SMALL, "images_per_modality": 2}
    a = _files(write_synthetic(tmp_path / "a", layout, num_ids=5, seed=3, **kwargs))
    b = _files(write_synthetic(tmp_path / "b", layout, num_ids=5, seed=3, **kwargs))
    c = _files(write_synthetic(tmp_path / "c", layout, num_ids=5, seed=4, **kwargs))
    assert a == b
    images = [k for k in a if k.endswith((".jpg", ".bmp"))]
    assert images
    # Another seed changes the images (and possibly which files exist at all).
    shared = [k for k in images if k in c]
    assert sum(a[k] != c[k] for k in shared) == len(shared)


@pytest.mark.parametrize("layout", ["sysu", "regdb", "llcm"])
def test_parallel_writing_gives_the_same_files(tmp_path: Path, layout: str) -> None:
    # Two rendering processes write exactly the bytes one process writes, manifest included.
    kwargs = {**SMALL, "images_per_modality": 2}
    one = _files(write_synthetic(tmp_path / "one", layout, num_ids=6, seed=2, **kwargs))
    two = _files(write_synthetic(tmp_path / "two", layout, num_ids=6, seed=2, workers=2, **kwargs))
    assert one == two
    assert sum(k.endswith((".jpg", ".bmp")) for k in one) > 10
    with pytest.raises(ConfigError, match="workers=0"):
        write_synthetic(tmp_path / "zero", layout, num_ids=6, workers=0, **kwargs)


def test_frames_depend_only_on_their_own_coordinates(tmp_path: Path) -> None:
    # An identity renders the same whatever the dataset size: frame k of id 1 in camera c is the
    # same file in a 4-id and a 7-id dataset (counts per camera may differ).
    small = _files(write_synthetic(tmp_path / "s", "sysu", num_ids=4, seed=0, **SMALL))
    large = _files(write_synthetic(tmp_path / "l", "sysu", num_ids=7, seed=0, **SMALL))
    common = [k for k in small if k.startswith("cam") and "/0001/" in k and k in large]
    assert common
    assert all(small[k] == large[k] for k in common)
    assert draw_person(0, 1) == draw_person(0, 1) != draw_person(0, 2)


# --- SYSU layout, read back by the real reader ----------------------------------------------


def test_sysu_layout_and_counts_read_back(tmp_path: Path) -> None:
    n = 10
    root = write_synthetic(tmp_path / "sysu", "sysu", num_ids=n, seed=1, **SMALL)
    spec = SyntheticSpec("sysu", n, seed=1, **SMALL)
    plan = sysu_plan(spec)

    # Split: 60 % train, max(1, 10 %) val, the rest (≥ 2) test, disjoint and covering 1..N.
    assert (len(plan.train), len(plan.val), len(plan.test)) == (6, 1, 3)
    assert sorted(plan.train + plan.val + plan.test) == list(range(1, n + 1))
    for name, ids in (("train", plan.train), ("val", plan.val), ("test", plan.test)):
        line = (root / "exp" / f"{name}_id.txt").read_text()
        assert line == ",".join(map(str, ids)) + "\n"

    # Files on disk match the plan: cam<c>/<pid:04d>/0001.jpg … numbered without gaps.
    for pid, cams in plan.counts.items():
        assert cams.keys() & {1, 2} and cams.keys() & {3, 6}  # protocol guarantees
        for cam in range(1, 7):
            folder = root / f"cam{cam}" / f"{pid:04d}"
            names = sorted(p.name for p in folder.glob("*")) if folder.is_dir() else []
            assert names == [f"{k:04d}.jpg" for k in range(1, cams.get(cam, 0) + 1)]
    # Some ids miss some cameras, as in the release.
    assert any(len(c) < 6 for c in plan.counts.values())

    train = sysu.read_sysu_train(root)
    train_ids = sorted(plan.train + plan.val)
    expected = sum(sum(plan.counts[p].values()) for p in train_ids)
    assert len(train) == expected
    assert sorted({r.label for r in train}) == list(range(len(train_ids)))
    assert sum(r.modality == "ir" for r in train) == sum(
        plan.counts[p].get(3, 0) + plan.counts[p].get(6, 0) for p in train_ids)

    query = sysu.sysu_query(root, "all")
    assert len(query) == sum(plan.counts[p].get(3, 0) + plan.counts[p].get(6, 0)
                             for p in plan.test)
    for mode, cams in (("all", (1, 2, 4, 5)), ("indoor", (1, 2))):
        gallery = sysu.sysu_gallery(root, mode, trial=0)
        # Single-shot seeded sampler: one image per (test id, gallery camera) folder.
        assert len(gallery) == sum(c in plan.counts[p] for p in plan.test for c in cams)
        assert {r.pid for r in gallery} == set(plan.test)

    with Image.open(root / query[0].path) as im:
        ir = np.asarray(im.convert("RGB")).astype(int)
    # IR frames are 3-channel gray (JPEG chroma rounding allows ±2).
    assert ir.shape == (40, 20, 3) and np.abs(ir - ir[..., :1]).max() <= 2
    with Image.open(root / next(r for r in train if r.modality == "rgb").path) as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    assert np.abs(rgb - rgb[..., :1]).max() > 20  # RGB frames have colour

    manifest = json.loads((root / "synthetic.json").read_text())
    assert manifest["complete"] is True and manifest["spec"]["num_ids"] == n
    assert manifest["files"] == sum(sum(c.values()) for c in plan.counts.values())


# --- RegDB layout, read back by the real reader ---------------------------------------------


def test_regdb_layout_and_counts_read_back(tmp_path: Path) -> None:
    n, per = 7, 3
    root = write_synthetic(tmp_path / "regdb", "regdb", num_ids=n, seed=2, size=(40, 20),
                           images_per_modality=per)
    pattern = re.compile(r"(female|male)_(front|back|side)_([vt])_(\d{5})_(\d+)\.bmp")
    for folder, letter in (("Visible", "v"), ("Thermal", "t")):
        for pid in range(1, n + 1):
            names = sorted(p.name for p in (root / folder / str(pid)).iterdir())
            assert len(names) == per
            for name in names:
                m = pattern.fullmatch(name)
                assert m and m[3] == letter and int(m[5]) == pid
    # Registered pairs: every visible file has its thermal twin.
    vis = {p.name.replace("_v_", "_t_") for p in (root / "Visible").rglob("*.bmp")}
    assert vis == {p.name for p in (root / "Thermal").rglob("*.bmp")}

    trials = regdb_trials(SyntheticSpec("regdb", n, seed=2))
    assert len({tuple(tr) for tr, _ in trials}) > 1  # trials differ
    for t, (train_ids, test_ids) in enumerate(trials, start=1):
        assert (len(train_ids), len(test_ids)) == (n // 2, n - n // 2)
        assert sorted(train_ids + test_ids) == list(range(1, n + 1))
        train = regdb.read_regdb_train(root, t)
        assert len(train) == 2 * per * len(train_ids)
        assert sorted({r.label for r in train}) == list(range(len(train_ids)))
        # Label l is the l-th training id (ascending) in both modalities.
        for r in train:
            assert r.path.split("/")[1] == str(train_ids[r.label])
        query, gallery = regdb.regdb_test(root, t, "v2t")
        assert len(query) == len(gallery) == per * len(test_ids)
        assert {r.path.split("/")[1] for r in query} == {str(p) for p in test_ids}
        assert all(r.modality == "rgb" for r in query) and all(
            r.modality == "ir" for r in gallery)
    with Image.open(root / "Thermal" / "1" / sorted(
            p.name for p in (root / "Thermal" / "1").iterdir())[0]) as im:
        th = np.asarray(im)
    assert th.shape == (40, 20, 3) and (th == th[..., :1]).all()  # lossless 3-channel gray


# --- the IR image is rendered, not converted -------------------------------------------------


def test_ir_is_not_a_gray_copy_of_rgb() -> None:
    spec = SyntheticSpec("regdb", 40, seed=0, size=(128, 64))
    top_gray, top_ir, skin_brighter, r2 = [], [], 0, []
    for pid in range(1, 41):
        frame = render_frame(spec, pid, 1)
        vis, th = _gray(frame.images[1]), frame.images[2][..., 0].astype(np.float64)
        top, skin = frame.parts == TOP, frame.parts == SKIN
        top_gray.append(vis[top].mean())
        top_ir.append(th[top].mean())
        skin_brighter += th[skin].mean() > th[top].mean()
        # Pixel level, over the whole person: how much of the IR a linear map of gray explains.
        person = frame.parts > 0
        r2.append(np.corrcoef(vis[person], th[person])[0, 1] ** 2)
    # Across identities the garment's IR level is unrelated to its RGB brightness (colour)…
    assert abs(np.corrcoef(top_gray, top_ir)[0, 1]) < 0.4
    # …within a frame a gray conversion explains little of the IR image…
    assert np.median(r2) < 0.3
    # …and skin is the warmest surface for nearly everyone (body heat).
    assert skin_brighter >= 36


def _separation(values: list[list[float]]) -> float:
    """Between-identity variance of the per-identity means over the mean within-identity
    variance (a one-way ANOVA ratio): large when a cue is stable per identity."""
    return float(np.var([np.mean(v) for v in values]) / np.mean([np.var(v) for v in values]))


def test_identity_cues_are_stable_across_cameras_and_frames() -> None:
    # The re-ID problem must be learnable: an identity's thermal material signature (garment
    # warmth relative to skin and background) and its garment colour (RGB chromaticity) vary
    # much less across cameras/frames than across identities, despite the camera nuisance.
    spec = SyntheticSpec("sysu", 12, seed=0, size=(64, 32))
    thermal, chroma = [], []
    for pid in range(1, 13):
        t_vals, c_vals = [], []
        for cam in (1, 2, 3, 4, 5, 6):
            for k in (1, 2):
                frame = render_frame(spec, pid, k, cam)
                img = frame.images[cam].astype(np.float64)
                top, skin, bg = (frame.parts == TOP), (frame.parts == SKIN), (frame.parts == 0)
                if cam in (3, 6):
                    ir = img[..., 0]
                    t_vals.append((ir[top].mean() - ir[bg].mean())
                                  / (ir[skin].mean() - ir[bg].mean()))
                else:
                    c = img[top].mean(axis=0)
                    c_vals.append(c[0] / c.sum())
        thermal.append(t_vals)
        chroma.append(c_vals)
    assert _separation(thermal) > 3.0
    assert _separation(chroma) > 3.0


def test_render_frame_is_what_is_written(tmp_path: Path) -> None:
    root = write_synthetic(tmp_path / "r", "regdb", num_ids=2, seed=5, size=(32, 16),
                           images_per_modality=2)
    frame = render_frame(SyntheticSpec("regdb", 2, seed=5, size=(32, 16),
                                       images_per_modality=2), 2, 1)
    assert frame.parts.shape == (32, 16) and frame.parts.max() > 0
    name = f"{draw_person(5, 2).gender}_{frame.view}_v_00003_2.bmp"
    with Image.open(root / "Visible" / "2" / name) as im:
        assert np.array_equal(np.asarray(im), frame.images[1])
    with Image.open(root / "Thermal" / "2" / name.replace("_v_", "_t_")) as im:
        assert np.array_equal(np.asarray(im), frame.images[2])


# --- manifest and reuse rules ----------------------------------------------------------------


def test_reuse_refuse_and_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    write_synthetic(out, "sysu", num_ids=4, seed=0, **SMALL)
    probe = next((out / "cam3").rglob("*.jpg"))
    probe.write_bytes(b"marker")  # a reused dataset is not rewritten
    assert write_synthetic(out, "sysu", num_ids=4, seed=0, **SMALL) == out
    assert probe.read_bytes() == b"marker"

    with pytest.raises(DatasetError, match="synthetic.json"):
        write_synthetic(out, "sysu", num_ids=5, seed=0, **SMALL)
    foreign = out / "notes.txt"
    foreign.write_text("keep me")
    write_synthetic(out, "sysu", num_ids=5, seed=0, overwrite=True, **SMALL)
    assert foreign.read_text() == "keep me"  # only the synthetic folders are replaced
    assert json.loads((out / "synthetic.json").read_text())["spec"]["num_ids"] == 5
    assert not probe.exists() or probe.read_bytes() != b"marker"

    other = tmp_path / "other"
    other.mkdir()
    (other / "data.bin").write_bytes(b"x")
    for overwrite in (False, True):
        with pytest.raises(DatasetError, match="no synthetic.json"):
            write_synthetic(other, "regdb", num_ids=4, overwrite=overwrite)
    assert (other / "data.bin").read_bytes() == b"x"


def test_incomplete_dataset_is_not_reused(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    write_synthetic(out, "regdb", num_ids=2, size=(32, 16), images_per_modality=1)
    manifest = json.loads((out / "synthetic.json").read_text())
    manifest["complete"] = False
    (out / "synthetic.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="incomplete"):
        write_synthetic(out, "regdb", num_ids=2, size=(32, 16), images_per_modality=1)


@pytest.mark.parametrize(
    ("layout", "num_ids", "size"),
    [("market", 10, (64, 32)), ("sysu", 3, (64, 32)), ("regdb", 1, (64, 32)),
     ("sysu", 10, (16, 8))],
)
def test_invalid_parameters(tmp_path: Path, layout: str, num_ids: int,
                            size: tuple[int, int]) -> None:
    with pytest.raises(ConfigError):
        write_synthetic(tmp_path / "x", layout, num_ids=num_ids, size=size)
    assert not (tmp_path / "x").exists()


def test_split_sets_the_number_of_test_ids(tmp_path: Path) -> None:
    root = write_synthetic(tmp_path / "s", "sysu", num_ids=40, split=(0.8, 0.1), **SMALL)
    ids = {name: sysu.parse_id_file(root / "exp" / f"{name}_id.txt")
           for name in ("train", "val", "test")}
    assert (len(ids["train"]), len(ids["val"]), len(ids["test"])) == (32, 4, 4)
    assert json.loads((root / "synthetic.json").read_text())["spec"]["split"] == [0.8, 0.1]
    with pytest.raises(ConfigError, match="split"):
        write_synthetic(tmp_path / "bad", "sysu", num_ids=40, split=(0.9, 0.2), **SMALL)
