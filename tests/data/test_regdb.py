"""RegDB reader: idx files per trial, training labels, v2t / t2v test lists (protocols.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from df2am.data.datasets.regdb import read_regdb_train, regdb_test
from df2am.errors import ConfigError, DatasetError


def idx_lines(root: Path, name: str) -> list[tuple[str, int]]:
    """Read an idx file independently of the reader."""
    out = []
    for line in (root / "idx" / name).read_text().splitlines():
        path, label = line.split(" ")
        out.append((path, int(label)))
    return out


@pytest.mark.parametrize("trial", [1, 4, 10])
def test_train_records(regdb_root: Path, trial: int) -> None:
    records = read_regdb_train(regdb_root, trial)
    vis = idx_lines(regdb_root, f"train_visible_{trial}.txt")
    th = idx_lines(regdb_root, f"train_thermal_{trial}.txt")
    expected = [(p, lab, lab, 1, "rgb") for p, lab in vis] + [
        (p, lab, lab, 2, "ir") for p, lab in th
    ]
    assert [(r.path, r.pid, r.label, r.cam, r.modality) for r in records] == expected
    # 4 ids split 2 / 2, 2 images per id and modality; labels contiguous from 0.
    assert len(records) == 8
    assert {r.label for r in records} == {0, 1}


def test_train_first_trial_content(regdb_root: Path) -> None:
    # Trial 1 rotates ids by one: train ids 2, 3 -> labels 0, 1 (see conftest.regdb_split).
    records = read_regdb_train(regdb_root, 1)
    assert records[0].path == "Visible/2/female_back_v_00000_2.bmp"
    assert records[2].path == "Visible/3/female_back_v_00000_3.bmp"
    assert records[4].path == "Thermal/2/female_back_t_00000_2.bmp"
    assert [r.label for r in records] == [0, 0, 1, 1, 0, 0, 1, 1]


@pytest.mark.parametrize("trial", [1, 7])
def test_directions(regdb_root: Path, trial: int) -> None:
    vis = idx_lines(regdb_root, f"test_visible_{trial}.txt")
    th = idx_lines(regdb_root, f"test_thermal_{trial}.txt")
    query, gallery = regdb_test(regdb_root, trial, "v2t")
    assert [(r.path, r.pid, r.cam, r.modality, r.label) for r in query] == [
        (p, lab, 1, "rgb", -1) for p, lab in vis
    ]
    assert [(r.path, r.pid, r.cam, r.modality, r.label) for r in gallery] == [
        (p, lab, 2, "ir", -1) for p, lab in th
    ]
    query2, gallery2 = regdb_test(regdb_root, trial, "t2v")
    assert query2 == gallery and gallery2 == query


def test_test_ids_disjoint_from_train(regdb_root: Path) -> None:
    train = {r.path.split("/")[1] for r in read_regdb_train(regdb_root, 3)}
    query, gallery = regdb_test(regdb_root, 3, "v2t")
    assert train.isdisjoint({r.path.split("/")[1] for r in query + gallery})


@pytest.mark.parametrize("trial", [0, 11, "1"])
def test_trial_numbering(regdb_root: Path, trial) -> None:
    with pytest.raises(ConfigError, match=r"1\.\.10"):
        regdb_test(regdb_root, trial, "v2t")


def test_bad_direction(regdb_root: Path) -> None:
    with pytest.raises(ConfigError, match="eval.direction"):
        regdb_test(regdb_root, 1, "visible")


def test_idx_line_pointing_to_missing_image(regdb_root: Path) -> None:
    (regdb_root / "Thermal" / "2" / "female_back_t_00001_2.bmp").unlink()
    with pytest.raises(DatasetError, match=r"train_thermal_1\.txt lists Thermal/2/female_back_t"):
        read_regdb_train(regdb_root, 1)


def test_malformed_idx_line(regdb_root: Path) -> None:
    path = regdb_root / "idx" / "test_visible_2.txt"
    path.write_text(path.read_text() + "Visible/1/x.bmp one\n")
    with pytest.raises(DatasetError, match=r"test_visible_2\.txt, line 5: .*integer label"):
        regdb_test(regdb_root, 2, "t2v")


def test_missing_idx_file(regdb_root: Path) -> None:
    (regdb_root / "idx" / "test_thermal_5.txt").unlink()
    with pytest.raises(DatasetError, match=r"missing idx file .*test_thermal_5\.txt"):
        regdb_test(regdb_root, 5, "v2t")


def test_non_contiguous_training_labels(regdb_root: Path) -> None:
    for modality in ("visible", "thermal"):
        path = regdb_root / "idx" / f"train_{modality}_1.txt"
        path.write_text(path.read_text().replace(" 1\n", " 2\n"))
    with pytest.raises(DatasetError, match=r"contiguous from 0, missing \[1\]"):
        read_regdb_train(regdb_root, 1)


def test_training_labels_must_match_between_modalities(regdb_root: Path) -> None:
    path = regdb_root / "idx" / "train_thermal_1.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(line for line in lines if not line.endswith(" 1")) + "\n")
    expected = r"only in train_visible_1\.txt \[1\], only in train_thermal_1\.txt \[\]"
    with pytest.raises(DatasetError, match=expected):
        read_regdb_train(regdb_root, 1)


def test_missing_layout_folder(regdb_root: Path) -> None:
    for path in sorted((regdb_root / "Thermal").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (regdb_root / "Thermal").rmdir()
    with pytest.raises(DatasetError, match=r"lacks Thermal/"):
        read_regdb_train(regdb_root, 1)
