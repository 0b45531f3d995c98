"""LLCM reader: training idx files, test lists equal to an independent re-implementation of the
reference (DEEN folder of ZYK100/LLCM) for every trial and direction, errors, verify, synthetic."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from df2am.cli import main
from df2am.data import protocol
from df2am.data.datasets.base import CountRow, TestOptions
from df2am.data.datasets.llcm import LLCM, parse_test_ids
from df2am.data.synthetic import write_synthetic
from df2am.data.verify import verify_dataset
from df2am.errors import ConfigError, DatasetError

VIS_CAMS = ["cam1", "cam2", "cam3", "cam4", "cam5", "cam6", "cam7", "cam8", "cam9"]
NIR_CAMS = ["cam1", "cam2", "cam4", "cam5", "cam6", "cam7", "cam8", "cam9"]

#: Test images: (folder, id, camera) → file names, in *creation* order (not sorted order).
TEST_IMAGES: dict[tuple[str, int, int], list[str]] = {
    ("test_vis", 3, 1): ["b.jpg", "10.jpg", "a.jpg"],
    ("test_vis", 3, 3): ["z.jpg", "2.jpg"],
    ("test_vis", 3, 9): ["d.jpg", "E.JPG", "c.jpg", "1.png"],
    ("test_nir", 3, 1): ["n2.jpg", "n10.jpg"],
    ("test_nir", 3, 4): ["q.jpg", "p.jpg", "r.jpeg"],
    ("test_vis", 7, 2): ["only.jpg"],  # id 7: one visible camera, nothing in NIR
    ("test_vis", 12, 1): ["x.jpg", "w.jpg"],
    ("test_vis", 12, 5): ["5.jpg", "40.jpg", "300.jpg"],
    ("test_nir", 12, 2): ["k.jpg", "j.jpg", "i.jpg"],
    ("test_nir", 12, 7): ["t.jpg"],
    ("test_nir", 12, 9): ["m.jpg", "l.jpg"],
    ("test_nir", 12, 3): ["ignored.jpg"],  # there is no NIR camera 3: never listed
    ("test_nir", 40, 8): ["e.jpg", "f.jpg", "d.jpg", "c.jpg", "b.jpg"],  # id 40: NIR only
    ("test_vis", 105, 3): ["s.jpg", "r.jpg"],
    ("test_vis", 105, 4): ["y.jpg", "x.jpg", "v.jpg"],
    ("test_vis", 105, 6): ["h.jpg"],
    ("test_vis", 105, 8): ["g2.jpg", "g1.jpg"],
    ("test_nir", 105, 5): ["u.jpg", "o.jpg", "i.jpg", "a.jpg"],
    ("test_nir", 105, 6): ["b.jpg", "a.jpg"],
    ("test_vis", 99, 1): ["stray.jpg"],  # a folder of an id not in test_id.txt: never listed
}
TEST_ID_LINE = "12, 3,105,7 ,40\n"  # unsorted, with spaces the reference's int() accepts
TRAIN_VIS = ["train_vis/0002/v_b.jpg 1", "train_vis/0001/v_a.jpg 0",
             "train_vis/0002/v_a.jpg 1", "train_vis/0001/v_c.jpg 0"]
TRAIN_NIR = ["train_nir/0001/n_a.jpg 0", "train_nir/0002/n_a.jpg 1", "train_nir/0002/n_b.jpg 1"]
DIRECTIONS = ("i2v", "v2i", "v2i_transposed")


def _image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(4, 2, 3), dtype=np.uint8)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    Image.fromarray(pixels).save(path, format=fmt)


def write_llcm_tree(root: Path) -> Path:
    seed = 0
    for line in TRAIN_VIS + TRAIN_NIR:
        seed += 1
        _image(root / line.split(" ")[0], seed)
    for (folder, pid, cam), names in TEST_IMAGES.items():
        for name in names:
            seed += 1
            _image(root / folder / f"cam{cam}" / f"{pid:04d}" / name, seed)
    (root / "idx").mkdir(parents=True, exist_ok=True)
    (root / "idx" / "train_vis.txt").write_text("\n".join(TRAIN_VIS) + "\n")
    (root / "idx" / "train_nir.txt").write_text("\n".join(TRAIN_NIR) + "\n")
    (root / "idx" / "test_id.txt").write_text(TEST_ID_LINE)
    return root


@pytest.fixture
def llcm_root(tmp_path: Path) -> Path:
    # "cam" in the root: the reference's path.split('cam')[1][0] would read 'e' of "camera".
    return write_llcm_tree(tmp_path / "camera_data" / "LLCM")


# ------------------------------------------------------------------ the independent reference


def _ref_ids(root: Path) -> list[str]:
    with open(root / "idx" / "test_id.txt") as f:
        line = f.read().splitlines()[0]
    return sorted(f"{int(y):04d}" for y in line.split(","))  # the "%04d" strings


def _ref_folders(root: Path, modality: str) -> list[tuple[str, str, str]]:
    sub, cams = ("test_vis", VIS_CAMS) if modality == "rgb" else ("test_nir", NIR_CAMS)
    out = []
    for pid in _ref_ids(root):
        for cam in cams:
            folder = os.path.join(str(root), sub, cam, pid)
            if os.path.isdir(folder):
                out.append((folder, pid, cam))
    return out


def _ref_row(root: Path, full: str, pid: str, cam: str, modality: str) -> tuple:
    return (Path(full).relative_to(root).as_posix(), int(pid), int(cam[3:]), modality)


def ref_query(root: Path, modality: str) -> list[tuple]:
    rows = []
    for folder, pid, cam in _ref_folders(root, modality):
        files = [os.path.join(folder, name) for name in sorted(os.listdir(folder))]
        rows.extend(_ref_row(root, f, pid, cam, modality) for f in files)
    return rows


def ref_gallery(root: Path, modality: str, trial: int) -> list[tuple]:
    state = random.getstate()
    try:
        random.seed(trial)
        rows = []
        for folder, pid, cam in _ref_folders(root, modality):
            files = sorted(os.path.join(folder, name) for name in os.listdir(folder))
            rows.append(_ref_row(root, random.choice(files), pid, cam, modality))
    finally:
        random.setstate(state)
    return rows


def ref_split(root: Path, trial: int, direction: str) -> tuple[list[tuple], list[tuple]]:
    if direction == "i2v":
        return ref_query(root, "ir"), ref_gallery(root, "rgb", trial)
    if direction == "v2i":
        return ref_query(root, "rgb"), ref_gallery(root, "ir", trial)
    # The reference's VIS->IR: evaluates distmat.T, so sampled NIR probes vs all visible.
    return ref_gallery(root, "ir", trial), ref_query(root, "rgb")


def rows(records) -> list[tuple]:
    return [(r.path, r.pid, r.cam, r.modality) for r in records]


# --------------------------------------------------------------------------------- test lists


def test_reference_path_parsing_breaks_under_this_root(llcm_root: Path) -> None:
    path = str(llcm_root / "test_vis" / "cam3" / "0105" / "r.jpg")
    with pytest.raises(ValueError):
        int(path.split("cam")[1][0])  # what the reference does; ours reads folder names
    query = LLCM.test_split(llcm_root, 0, LLCM.resolve_options(direction="v2i"))[0]
    record = next(r for r in query if r.path == "test_vis/cam3/0105/r.jpg")
    assert (record.pid, record.cam, record.modality, record.label) == (105, 3, "rgb", -1)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_lists_equal_the_reference_for_every_trial(llcm_root: Path, direction: str) -> None:
    options = LLCM.resolve_options(direction=direction)
    galleries = set()
    for trial in range(10):
        query, gallery = LLCM.test_split(llcm_root, trial, options)
        ref_q, ref_g = ref_split(llcm_root, trial, direction)
        assert rows(query) == ref_q, (direction, trial)
        assert rows(gallery) == ref_g, (direction, trial)
        via = protocol.test_split("llcm", llcm_root, trial=trial, direction=direction)
        assert via == (query, gallery)
        assert all(r.label == -1 for r in query + gallery)
        galleries.add(tuple(rows(gallery if direction != "v2i_transposed" else query)))
    assert len(galleries) > 1  # the sampled side changes with the trial


def test_list_contents_by_hand(llcm_root: Path) -> None:
    query, gallery = LLCM.test_split(llcm_root, 0, LLCM.resolve_options())  # i2v default
    # NIR query: ids 3, 12, 40, 105 (7 has no NIR); cam order; names sorted; no NIR cam3.
    assert [r.path for r in query[:5]] == [
        "test_nir/cam1/0003/n10.jpg", "test_nir/cam1/0003/n2.jpg",
        "test_nir/cam4/0003/p.jpg", "test_nir/cam4/0003/q.jpg", "test_nir/cam4/0003/r.jpeg"]
    assert [(r.pid, r.cam) for r in query[5:]] == [(12, 2)] * 3 + [(12, 7)] + [(12, 9)] * 2 + [
        (40, 8)] * 5 + [(105, 5)] * 4 + [(105, 6)] * 2
    assert {r.modality for r in query} == {"ir"}
    # Visible gallery: one image per existing (id, camera) folder, ids sorted, cams in order.
    assert [(r.pid, r.cam) for r in gallery] == [
        (3, 1), (3, 3), (3, 9), (7, 2), (12, 1), (12, 5), (105, 3), (105, 4), (105, 6), (105, 8)]
    assert gallery[3].path == "test_vis/cam2/0007/only.jpg"
    vis_query = LLCM.test_split(llcm_root, 0, LLCM.resolve_options(direction="v2i"))[0]
    assert [r.path for r in vis_query[5:9]] == [
        "test_vis/cam9/0003/1.png", "test_vis/cam9/0003/E.JPG",  # ASCII order
        "test_vis/cam9/0003/c.jpg", "test_vis/cam9/0003/d.jpg"]
    assert len(vis_query) == 23 and not any("0099" in r.path for r in vis_query)
    assert LLCM.test_records(llcm_root) == vis_query + query


def test_transposed_is_v2i_swapped(llcm_root: Path) -> None:
    for trial in (0, 7):
        q, g = LLCM.test_split(llcm_root, trial, LLCM.resolve_options(direction="v2i"))
        tq, tg = LLCM.test_split(llcm_root, trial,
                                 LLCM.resolve_options(direction="v2i_transposed"))
        assert (tq, tg) == (g, q)


def test_parse_test_ids_sorts(llcm_root: Path) -> None:
    assert parse_test_ids(llcm_root / "idx" / "test_id.txt") == [3, 7, 12, 40, 105]


# ----------------------------------------------------------------------------------- training


def test_train_records(llcm_root: Path) -> None:
    records = LLCM.train_records(llcm_root)
    expected = [(line.split(" ")[0], int(line.split(" ")[1]), 0, "rgb") for line in TRAIN_VIS]
    expected += [(line.split(" ")[0], int(line.split(" ")[1]), 0, "ir") for line in TRAIN_NIR]
    assert [(r.path, r.label, r.cam, r.modality) for r in records] == expected
    assert [r.pid for r in records] == [r.label for r in records] == [1, 0, 1, 0, 0, 1, 1]
    assert protocol.train_records("llcm", llcm_root) == records


def test_train_missing_nir_list(llcm_root: Path) -> None:
    (llcm_root / "idx" / "train_nir.txt").unlink()
    with pytest.raises(DatasetError, match=r"lacks idx/train_nir\.txt"):
        LLCM.train_records(llcm_root)


def test_train_malformed_line(llcm_root: Path) -> None:
    path = llcm_root / "idx" / "train_vis.txt"
    path.write_text(path.read_text() + "\ntrain_vis/0001/v_a.jpg zero\n")
    with pytest.raises(DatasetError, match=r"train_vis\.txt, line 6: .*integer label"):
        LLCM.train_records(llcm_root)


def test_train_missing_image(llcm_root: Path) -> None:
    (llcm_root / "train_nir" / "0002" / "n_b.jpg").unlink()
    with pytest.raises(DatasetError, match=r"train_nir\.txt lists train_nir/0002/n_b\.jpg, but "
                                           r".*does not exist"):
        LLCM.train_records(llcm_root)


def test_train_labels_differ_between_modalities(llcm_root: Path) -> None:
    (llcm_root / "idx" / "train_nir.txt").write_text(TRAIN_NIR[0] + "\n")
    with pytest.raises(DatasetError, match=r"only in train_vis\.txt \[1\], only in "
                                           r"train_nir\.txt \[\]"):
        LLCM.train_records(llcm_root)


def test_train_labels_not_contiguous(llcm_root: Path) -> None:
    for name in ("train_vis.txt", "train_nir.txt"):
        path = llcm_root / "idx" / name
        path.write_text(path.read_text().replace(" 1\n", " 2\n"))
    with pytest.raises(DatasetError, match=r"train_vis\.txt: training labels must be "
                                           r"contiguous from 0, missing \[1\]"):
        LLCM.train_records(llcm_root)


# ------------------------------------------------------------------------------ test errors


def _split(root: Path, trial: int = 0, direction: str = "i2v"):
    return LLCM.test_split(root, trial, LLCM.resolve_options(direction=direction))


def test_missing_test_id_file(llcm_root: Path) -> None:
    path = llcm_root / "idx" / "test_id.txt"
    path.unlink()
    with pytest.raises(DatasetError, match=r"lacks idx/test_id\.txt"):
        _split(llcm_root)
    with pytest.raises(DatasetError, match=rf"missing {path}"):
        parse_test_ids(path)


@pytest.mark.parametrize(("text", "match"), [
    ("3,x,7\n", r"line 1: 'x' is not a positive integer"),
    ("\n3,7,\n", r"line 2: '' is not a positive integer"),
    ("3,0,7\n", r"line 1: '0' is not a positive integer"),
    ("3,-7\n", r"line 1: '-7' is not a positive integer"),
    ("3,\u00b2\n", r"line 1: '\u00b2' is not a positive integer"),
    ("3,12,3\n", r"line 1: id 3 is listed twice"),
    ("3,12\n\n7\n", r"line 3: .*found 2 non-blank lines"),
    ("\n  \n", r"is empty"),
])
def test_malformed_test_id_file(llcm_root: Path, text: str, match: str) -> None:
    path = llcm_root / "idx" / "test_id.txt"
    path.write_text(text)
    with pytest.raises(DatasetError, match=match) as info:
        _split(llcm_root)
    assert str(path) in str(info.value)


def test_id_without_any_folder(llcm_root: Path) -> None:
    (llcm_root / "idx" / "test_id.txt").write_text("12,3,77\n")
    with pytest.raises(DatasetError, match=r"test_id\.txt: line 1: id 77 has no folder") as info:
        _split(llcm_root, direction="v2i")
    assert "test_vis/cam<N>/0077/" in str(info.value)


def test_empty_id_folder(llcm_root: Path) -> None:
    folder = llcm_root / "test_nir" / "cam8" / "0040"
    for path in folder.iterdir():
        path.unlink()
    (folder / "notes.txt").write_text("not an image")  # only non-images: still empty
    with pytest.raises(DatasetError, match=rf"folder {folder} holds no image"):
        _split(llcm_root, direction="i2v")


@pytest.mark.parametrize("trial", [-1, 10, True, "0"])
def test_trial_outside_range(llcm_root: Path, trial) -> None:
    for direction in DIRECTIONS:
        with pytest.raises(ConfigError, match=r"0\.\.9"):
            _split(llcm_root, trial, direction)
    with pytest.raises(ConfigError, match=r"0\.\.9"):
        protocol.test_split("llcm", llcm_root, trial=trial)


def test_invalid_direction(llcm_root: Path) -> None:
    valid = r"\['i2v', 'v2i', 'v2i_transposed'\]"
    with pytest.raises(ConfigError, match=rf"eval\.direction: .*{valid}, got 't2v'"):
        LLCM.resolve_options(direction="t2v")
    with pytest.raises(ConfigError, match=rf"eval\.direction.*{valid}"):
        protocol.test_split("llcm", llcm_root, trial=0, direction="v2t")
    # Options built by hand (or resolved for another dataset) are checked too.
    with pytest.raises(ConfigError, match=rf"eval\.direction.*{valid}"):
        LLCM.test_split(llcm_root, 0, TestOptions(direction="t2v"))


def test_root_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"is not a directory"):
        _split(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match=r"is not a directory"):
        LLCM.train_records(tmp_path / "file")


def test_root_lacking_test_nir(llcm_root: Path) -> None:
    (llcm_root / "test_nir").rename(llcm_root.parent / "elsewhere")
    with pytest.raises(DatasetError, match=rf"LLCM root {llcm_root} lacks test_nir/"):
        _split(llcm_root)
    with pytest.raises(DatasetError, match=r"lacks test_nir/"):
        LLCM.train_records(llcm_root)


# ------------------------------------------------------------------------------------ verify


def test_verify_good_tree(capsys, llcm_root: Path) -> None:
    report = verify_dataset("llcm", llcm_root, workers=2)
    assert report.ok, [str(p) for p in report.problems]
    assert CountRow("train", "all", "rgb", 2, 4) in report.rows
    assert CountRow("train", "all", "ir", 2, 3) in report.rows
    assert CountRow("test", "cam1", "rgb", 2, 5) in report.rows
    assert CountRow("test", "cam3", "rgb", 2, 4) in report.rows
    assert CountRow("test", "cam7", "rgb", 0, 0) in report.rows
    assert CountRow("test", "cam8", "ir", 1, 5) in report.rows
    assert not any(r.modality == "ir" and r.camera == "cam3" for r in report.rows)
    assert report.decoded == 4 + 3 + 23 + 22  # train, visible test, NIR test (no cam3, no 99)
    assert any("[99]" in note for note in report.notes)
    assert main(["data", "verify", "--dataset", "llcm", "--root", str(llcm_root)]) == 0
    assert "no problems found" in capsys.readouterr().out


def test_verify_lists_every_problem(capsys, llcm_root: Path) -> None:
    gone = llcm_root / "train_vis" / "0001" / "v_c.jpg"
    gone.unlink()
    (llcm_root / "idx" / "test_id.txt").write_text("12,3,105,77,7,40\n")
    empty = llcm_root / "test_vis" / "cam5" / "0012"
    for path in empty.iterdir():
        path.unlink()
    broken = llcm_root / "test_nir" / "cam6" / "0105" / "a.jpg"
    broken.write_bytes(broken.read_bytes()[:40])
    report = verify_dataset("llcm", llcm_root, workers=2)
    assert not report.ok
    by_path = {p.path: p.message for p in report.problems}
    assert sorted(by_path) == sorted(
        str(p) for p in (gone, llcm_root / "idx" / "test_id.txt", empty, broken))
    assert len(report.problems) == 4
    assert "listed in idx/train_vis.txt but missing" in by_path[str(gone)]
    assert "id 77 has no folder" in by_path[str(llcm_root / "idx" / "test_id.txt")]
    assert "empty id folder" in by_path[str(empty)]
    assert "does not decode" in by_path[str(broken)]
    assert main(["data", "verify", "--dataset", "llcm", "--root", str(llcm_root)]) == 1
    out = capsys.readouterr().out
    assert "4 problem(s):" in out
    assert all(str(p) in out for p in (gone, empty, broken)) and "id 77" in out


def test_verify_bad_idx_files(llcm_root: Path) -> None:
    (llcm_root / "idx" / "train_nir.txt").unlink()
    (llcm_root / "idx" / "test_id.txt").write_text("3,3\n")
    messages = [str(p) for p in verify_dataset("llcm", llcm_root, workers=2).problems]
    assert len(messages) == 2, messages
    assert "lacks idx/train_nir.txt" in messages[0]
    assert "id 3 is listed twice" in messages[1]


# --------------------------------------------------------------------------------- synthetic


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_synthetic_llcm_tree(tmp_path: Path) -> None:
    kwargs = {"num_ids": 6, "seed": 1, "size": (32, 16), "images_per_camera": (1, 3)}
    root = write_synthetic(tmp_path / "a", "llcm", **kwargs)
    report = verify_dataset("llcm", root, workers=2)
    assert report.ok, [str(p) for p in report.problems]
    train = LLCM.train_records(root)
    assert {r.modality for r in train} == {"rgb", "ir"}
    assert sorted({r.label for r in train}) == list(range(len({r.label for r in train})))
    line = (root / "idx" / "test_id.txt").read_text().strip()
    written = [int(t) for t in line.split(",")]
    assert written != sorted(written)  # seed 1 writes "6,2": the readers must sort
    ids = parse_test_ids(root / "idx" / "test_id.txt")
    assert ids == sorted(written)
    for direction in DIRECTIONS:
        for trial in (0, 9):
            query, gallery = _split(root, trial, direction)
            assert rows(query) == ref_split(root, trial, direction)[0]
            assert rows(gallery) == ref_split(root, trial, direction)[1]
            assert query and gallery and {r.pid for r in query + gallery} <= set(ids)
    assert report.decoded == len(train) + len(LLCM.test_records(root))
    again = _files(write_synthetic(tmp_path / "b", "llcm", **kwargs))
    first = _files(root)
    assert list(again) == list(first)
    assert again == first and sum(k.endswith(".jpg") for k in first) > 20
