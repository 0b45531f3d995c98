"""``verify_dataset`` and ``df2am data verify``: counts, and one clear problem per bad piece."""

from __future__ import annotations

from pathlib import Path

import pytest

from df2am.cli import main
from df2am.data.verify import CountRow, verify_dataset
from df2am.errors import ConfigError


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def messages(report) -> list[str]:
    return [str(p) for p in report.problems]


# -------------------------------------------------------------------------------- SYSU-MM01


def test_clean_sysu_tree(sysu_root: Path) -> None:
    report = verify_dataset("sysu", sysu_root, workers=2)
    assert report.ok, messages(report)
    rows = {(r.split, r.camera, r.modality): (r.ids, r.images) for r in report.rows}
    # conftest sysu_root: train ids 1, 2, 4; test ids 3, 5, 7.
    assert rows[("train", "cam1", "rgb")] == (1, 2)
    assert rows[("train", "cam3", "ir")] == (2, 3)
    assert rows[("train", "all", "rgb")] == (3, 7)
    assert rows[("train", "all", "ir")] == (3, 5)
    assert rows[("test", "cam2", "rgb")] == (1, 5)
    assert rows[("test", "all", "rgb")] == (3, 25)
    assert rows[("query", "cam3+cam6", "ir")] == (3, 12)
    assert report.decoded == 12 + 25 + 12
    assert any("full release has 395" in n for n in report.notes)


def test_cli_prints_table_and_exits_0(capsys, sysu_root: Path) -> None:
    assert main(["data", "verify", "--dataset", "sysu", "--root", str(sysu_root)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split() == ["split", "camera", "modality", "ids", "images"]
    assert "no problems found" in out


def test_truncated_jpeg(capsys, sysu_root: Path) -> None:
    bad = sysu_root / "cam3" / "0005" / "0002.jpg"
    truncate(bad)
    report = verify_dataset("sysu", sysu_root)
    assert [p.path for p in report.problems] == [str(bad)]
    assert "does not decode" in report.problems[0].message
    assert "expected a complete image" in report.problems[0].message
    assert report.decoded == 48
    assert main(["data", "verify", "--dataset", "sysu", "--root", str(sysu_root)]) == 1
    out = capsys.readouterr().out
    assert "1 problem(s):" in out and str(bad) in out


def test_missing_id_file(sysu_root: Path) -> None:
    (sysu_root / "exp" / "test_id.txt").unlink()
    report = verify_dataset("sysu", sysu_root)
    assert [p.path for p in report.problems] == [str(sysu_root / "exp" / "test_id.txt")]
    assert "missing id file" in report.problems[0].message
    assert "comma-separated integer ids" in report.problems[0].message


def test_malformed_id_file(sysu_root: Path) -> None:
    (sysu_root / "exp" / "val_id.txt").write_text("4;5\n")
    report = verify_dataset("sysu", sysu_root)
    assert len(report.problems) == 1
    assert "'4;5' is not an integer" in report.problems[0].message


def test_id_listed_without_images(sysu_root: Path) -> None:
    (sysu_root / "exp" / "train_id.txt").write_text("2,1,9\n")
    report = verify_dataset("sysu", sysu_root)
    assert len(report.problems) == 1, messages(report)
    problem = report.problems[0]
    assert problem.path == str(sysu_root / "exp" / "train_id.txt")
    assert "id 9 is listed in exp/train_id.txt or exp/val_id.txt but has no image" in str(problem)
    assert "cam1/0009" in problem.message


def test_training_id_without_one_modality(sysu_root: Path) -> None:
    for path in sorted((sysu_root / "cam6" / "0002").iterdir()):
        path.unlink()
    (sysu_root / "cam6" / "0002").rmdir()
    report = verify_dataset("sysu", sysu_root)
    assert messages(report) == [
        f"{sysu_root / 'exp' / 'train_id.txt'}: training id 2 has no IR image: expected one in "
        "cam3/0002, cam6/0002"
    ]


def test_missing_camera_and_empty_folder(sysu_root: Path) -> None:
    for path in sorted((sysu_root / "cam2").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (sysu_root / "cam2").rmdir()
    (sysu_root / "cam5" / "0003").rename(sysu_root / "cam5-0003")
    (sysu_root / "cam5" / "0003").mkdir()
    report = verify_dataset("sysu", sysu_root)
    paths = [p.path for p in report.problems]
    assert str(sysu_root / "cam5" / "0003") in paths
    # One layout problem at the root names every missing camera (the readers raise the same).
    assert any("lacks camera folder(s) cam2:" in m for m in messages(report))
    assert any("empty id folder" in m for m in messages(report))


def test_official_split_file_checked(sysu_root: Path, save_rand_perm_cam, perm_cells) -> None:
    counts = {3: {1: 4, 4: 2, 5: 3}, 5: {1: 3, 2: 5, 4: 1, 5: 2}, 7: {4: 3, 5: 2}}
    path = save_rand_perm_cam(
        sysu_root / "exp" / "rand_perm_cam.mat", perm_cells(counts, 7, descending=False)
    )
    assert verify_dataset("sysu", sysu_root).ok
    (sysu_root / "cam4" / "0007" / "0003.jpg").unlink()
    report = verify_dataset("sysu", sysu_root)
    assert messages(report) == [
        f"{path}: rand_perm_cam{{4}}{{7}} points to image numbers [3] that do not exist in "
        "cam4/0007: expected the split file of this dataset copy"
    ]


def test_root_missing(tmp_path: Path) -> None:
    report = verify_dataset("sysu", tmp_path / "nope")
    assert not report.ok and "not a directory" in report.problems[0].message
    with pytest.raises(ConfigError):
        verify_dataset("market1501", tmp_path)


# ------------------------------------------------------------------------------------ RegDB


def test_clean_regdb_tree(capsys, regdb_root: Path) -> None:
    report = verify_dataset("regdb", regdb_root)
    assert report.ok, messages(report)
    assert CountRow("trial 3 train", "cam1", "visible", 2, 4) in report.rows
    assert CountRow("trial 10 test", "cam2", "thermal", 2, 4) in report.rows
    assert CountRow("on disk", "Thermal", "thermal", 4, 8) in report.rows
    assert report.decoded == 16
    assert main(["data", "verify", "--dataset", "regdb", "--root", str(regdb_root)]) == 0


def test_regdb_missing_idx_file_and_missing_image(capsys, regdb_root: Path) -> None:
    (regdb_root / "idx" / "train_thermal_6.txt").unlink()
    gone = regdb_root / "Visible" / "3" / "female_back_v_00001_3.bmp"
    gone.unlink()
    report = verify_dataset("regdb", regdb_root)
    paths = [p.path for p in report.problems]
    assert str(regdb_root / "idx" / "train_thermal_6.txt") in paths
    # Id 3 is in train or test of every trial: one problem per idx line that lists it.
    missing = [p for p in report.problems if p.path == str(gone)]
    assert len(missing) == 10
    assert "listed in" in missing[0].message and "visible_" in missing[0].message
    assert main(["data", "verify", "--dataset", "regdb", "--root", str(regdb_root)]) == 1
    out = capsys.readouterr().out
    assert str(gone) in out and "train_thermal_6.txt" in out


def test_regdb_truncated_bmp_and_bad_labels(regdb_root: Path) -> None:
    bad = regdb_root / "Thermal" / "1" / "female_back_t_00000_1.bmp"
    truncate(bad)
    path = regdb_root / "idx" / "train_visible_2.txt"
    path.write_text(path.read_text().replace(" 1\n", " 3\n"))
    report = verify_dataset("regdb", regdb_root)
    assert str(bad) in [p.path for p in report.problems]
    problems = {p.message for p in report.problems if p.path == str(path)}
    assert problems == {"training labels are not contiguous from 0: missing [1, 2]"}
    differ = [p for p in report.problems if "labels differ" in p.message]
    assert [p.path for p in differ] == [str(regdb_root / "idx" / "train_thermal_2.txt")]


def test_synthetic_datasets_verify(tmp_path: Path) -> None:
    synthetic = pytest.importorskip("df2am.data.synthetic")
    if not hasattr(synthetic, "write_synthetic"):
        pytest.skip("df2am.data.synthetic.write_synthetic not available yet")
    for layout in ("sysu", "regdb"):
        root = synthetic.write_synthetic(
            tmp_path / layout, layout, num_ids=8, seed=1, size=(32, 16)
        )
        report = verify_dataset(layout, root)
        assert report.ok, messages(report)


# ---------------------------------------------------------------- image content and odd names


def test_png_named_jpg_is_a_note_not_a_problem(capsys, sysu_root: Path) -> None:
    from PIL import Image

    odd = sysu_root / "cam1" / "0003" / "0002.jpg"
    Image.new("RGBA", (4, 8), (10, 20, 30, 128)).save(odd, format="PNG")
    report = verify_dataset("sysu", sysu_root, workers=2)
    assert report.ok, messages(report)
    assert report.decoded == 49
    named = [n for n in report.notes if str(odd) in n]
    assert len(named) == 1 and "PNG" in named[0] and ".jpg" in named[0]
    assert main(["data", "verify", "--dataset", "sysu", "--root", str(sysu_root)]) == 0
    assert str(odd) in capsys.readouterr().out


def test_undecodable_mode_and_text_file_are_problems(sysu_root: Path) -> None:
    from PIL import Image

    lab = sysu_root / "cam1" / "0003" / "0001.jpg"
    Image.new("LAB", (4, 8)).save(lab, format="TIFF")
    text = sysu_root / "cam3" / "0005" / "0001.jpg"
    text.write_text("not an image\n")
    report = verify_dataset("sysu", sysu_root, workers=2)
    by_path = {p.path: p.message for p in report.problems}
    assert set(by_path) == {str(lab), str(text)}
    assert "'LAB'" in by_path[str(lab)]
    assert "not an image file" in by_path[str(text)]
    assert report.decoded == 47


def _non_utf8_sysu_root(tmp_path: Path, make_sysu_tree) -> Path:
    import os

    try:
        root = tmp_path / os.fsdecode(b"SYSU \xff caf\xc3\xa9")
        root.mkdir()
    except (OSError, UnicodeEncodeError):  # pragma: no cover - filesystems that refuse it
        pytest.skip("this filesystem refuses non-UTF-8 names")
    images = {1: {1: 1, 3: 1}, 2: {1: 1, 3: 1}, 4: {1: 1, 3: 1}}
    make_sysu_tree(root, images, train=[1], val=[4], test=[2])
    truncate(root / "cam3" / "0002" / "0001.jpg")
    return root


def test_non_utf8_root_image_problem_is_printable(tmp_path: Path, make_sysu_tree) -> None:
    root = _non_utf8_sysu_root(tmp_path, make_sysu_tree)
    report = verify_dataset("sysu", root, workers=1)
    assert len(report.problems) == 1, messages(report)
    problem = report.problems[0]
    assert "SYSU \\xff café" in problem.path and problem.path.endswith("0002/0001.jpg")
    str(problem).encode("utf-8")  # strict: no lone surrogate left in the problem


def test_non_utf8_root_cli_prints_plainly(capsys, tmp_path: Path, make_sysu_tree) -> None:
    root = _non_utf8_sysu_root(tmp_path, make_sysu_tree)
    verify_dataset("sysu", root, workers=1).format().encode("utf-8")
    assert main(["data", "verify", "--dataset", "sysu", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "SYSU \\xff café" in out and "0001.jpg" in out


def test_zero_workers_is_an_error(sysu_root: Path) -> None:
    from df2am.errors import ConfigError

    with pytest.raises(ConfigError, match="--workers must be >= 1"):
        verify_dataset("sysu", sysu_root, workers=0)
