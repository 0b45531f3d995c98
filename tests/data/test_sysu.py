"""SYSU-MM01 reader: training set, query, seeded and official gallery samplers (protocols.md)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from df2am.data.datasets.sysu import (
    load_official_split,
    read_sysu_train,
    sysu_gallery,
    sysu_query,
)
from df2am.data.records import ImageRecord
from df2am.errors import ConfigError, DatasetError


def paths(records: list[ImageRecord]) -> list[str]:
    return [r.path for r in records]


# --------------------------------------------------------------------------------- training


def test_train_labels_modalities_and_order(sysu_root: Path) -> None:
    records = read_sysu_train(sysu_root)
    # train_id = 2,1 and val_id = 4 -> ids 1, 2, 4 -> labels 0, 1, 2; cams 1..6, names sorted.
    expected = [
        ("cam1/0001/0001.jpg", 1, 1, "rgb", 0),
        ("cam1/0001/0002.jpg", 1, 1, "rgb", 0),
        ("cam3/0001/0001.jpg", 1, 3, "ir", 0),
        ("cam3/0001/0002.jpg", 1, 3, "ir", 0),
        ("cam4/0001/0001.jpg", 1, 4, "rgb", 0),
        ("cam2/0002/0001.jpg", 2, 2, "rgb", 1),
        ("cam2/0002/0002.jpg", 2, 2, "rgb", 1),
        ("cam2/0002/0003.jpg", 2, 2, "rgb", 1),
        ("cam6/0002/0001.jpg", 2, 6, "ir", 1),
        ("cam6/0002/0002.jpg", 2, 6, "ir", 1),
        ("cam3/0004/0001.jpg", 4, 3, "ir", 2),
        ("cam5/0004/0001.jpg", 4, 5, "rgb", 2),
    ]
    assert [(r.path, r.pid, r.cam, r.modality, r.label) for r in records] == expected


def test_train_id_without_ir_images_is_an_error(tmp_path: Path, make_sysu_tree) -> None:
    root = make_sysu_tree(
        tmp_path / "s", {1: {1: 1, 3: 1}, 2: {1: 2}}, train=[1, 2], val=[], test=[1]
    )
    (root / "exp" / "val_id.txt").write_text("1\n")
    with pytest.raises(DatasetError, match=r"training id 2 .*no IR image.*cam3/0002"):
        read_sysu_train(root)


def test_missing_val_id_file_names_the_file(sysu_root: Path) -> None:
    (sysu_root / "exp" / "val_id.txt").unlink()
    with pytest.raises(DatasetError, match=r"missing id file .*val_id\.txt"):
        read_sysu_train(sysu_root)


@pytest.mark.parametrize("content", ["1,2,x\n", "", "1,-3\n", "3,3\n"])
def test_malformed_id_file(sysu_root: Path, content: str) -> None:
    (sysu_root / "exp" / "test_id.txt").write_text(content)
    with pytest.raises(DatasetError, match=r"test_id\.txt"):
        sysu_query(sysu_root, "all")


def test_missing_camera_folder_for_the_whole_dataset(sysu_root: Path) -> None:
    for child in (sysu_root / "cam4").rglob("*.jpg"):
        child.unlink()
    for folder in sorted((sysu_root / "cam4").iterdir()):
        folder.rmdir()
    (sysu_root / "cam4").rmdir()
    with pytest.raises(DatasetError, match=r"lacks camera folder\(s\) cam4"):
        read_sysu_train(sysu_root)


def test_root_that_is_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a directory"):
        sysu_query(tmp_path / "nowhere", "all")


# ------------------------------------------------------------------------------------ query


def test_query_order_and_content(sysu_root: Path) -> None:
    # test ids 5,3,7 -> ascending 3, 5, 7; cam3 before cam6; id 3 has no cam6 folder.
    expected = (
        [f"cam3/0003/{k:04d}.jpg" for k in (1, 2, 3)]
        + [f"cam3/0005/{k:04d}.jpg" for k in (1, 2)]
        + [f"cam6/0005/{k:04d}.jpg" for k in (1, 2, 3, 4)]
        + ["cam3/0007/0001.jpg"]
        + [f"cam6/0007/{k:04d}.jpg" for k in (1, 2)]
    )
    for mode in ("all", "indoor"):
        query = sysu_query(sysu_root, mode)
        assert paths(query) == expected
        assert all(r.modality == "ir" and r.label == -1 for r in query)
        assert [(r.pid, r.cam) for r in query] == [
            (int(p.split("/")[1]), int(p[3])) for p in expected
        ]


def test_query_files_sorted_by_name(tmp_path: Path, make_sysu_tree) -> None:
    names = ["0010.jpg", "0002.jpg", "0001.jpg", "0100.jpg"]
    root = make_sysu_tree(
        tmp_path / "s", {1: {3: 4, 1: 4}}, train=[1], val=[], test=[1], names=lambda n: names
    )
    assert paths(sysu_query(root, "all")) == [f"cam3/0001/{n}" for n in sorted(names)]


# --------------------------------------------------------------------------- seeded gallery


def reference_seeded(root: Path, test_ids: list[int], mode: str, trial: int) -> list[str]:
    """The definition in protocols.md, written like the AGW/DDAG script (global RNG)."""
    state = random.getstate()
    try:
        random.seed(trial)
        cams = ["cam1", "cam2", "cam4", "cam5"] if mode == "all" else ["cam1", "cam2"]
        files = []
        for pid in sorted(f"{x:04d}" for x in test_ids):
            for cam in cams:
                folder = os.path.join(root, cam, pid)
                if os.path.isdir(folder):
                    new_files = sorted(folder + "/" + name for name in os.listdir(folder))
                    files.append(random.choice(new_files))
    finally:
        random.setstate(state)
    return [os.path.relpath(f, root).replace(os.sep, "/") for f in files]


@pytest.mark.parametrize("mode", ["all", "indoor"])
@pytest.mark.parametrize("trial", range(10))
def test_seeded_gallery_matches_definition(sysu_root: Path, mode: str, trial: int) -> None:
    gallery = sysu_gallery(sysu_root, mode, trial)
    assert paths(gallery) == reference_seeded(sysu_root, [5, 3, 7], mode, trial)
    assert all(r.modality == "rgb" and r.label == -1 for r in gallery)
    assert all(r.path.startswith(f"cam{r.cam}/{r.pid:04d}/") for r in gallery)


def test_seeded_gallery_skips_missing_folders_and_mode_cameras(sysu_root: Path) -> None:
    # (id, cam) pairs that exist: 3:{1,4,5}, 5:{1,2,4,5}, 7:{4,5}; indoor keeps cams 1, 2.
    all_pairs = [(3, 1), (3, 4), (3, 5), (5, 1), (5, 2), (5, 4), (5, 5), (7, 4), (7, 5)]
    assert [(r.pid, r.cam) for r in sysu_gallery(sysu_root, "all", 0)] == all_pairs
    assert [(r.pid, r.cam) for r in sysu_gallery(sysu_root, "indoor", 0)] == [
        (3, 1),
        (5, 1),
        (5, 2),
    ]


def test_seeded_galleries_differ_between_trials(sysu_root: Path) -> None:
    galleries = {tuple(paths(sysu_gallery(sysu_root, "all", t))) for t in range(10)}
    assert len(galleries) > 1


def test_seeded_is_single_shot_only(sysu_root: Path) -> None:
    with pytest.raises(ConfigError, match="single-shot"):
        sysu_gallery(sysu_root, "all", 0, shots=10)


@pytest.mark.parametrize("trial", [-1, 10, 1.5, True])
def test_trial_out_of_range(sysu_root: Path, trial) -> None:
    with pytest.raises(ConfigError, match=r"0\.\.9"):
        sysu_gallery(sysu_root, "all", trial)


def test_bad_mode_sampler_shots(sysu_root: Path) -> None:
    with pytest.raises(ConfigError, match="eval.mode"):
        sysu_gallery(sysu_root, "outdoor", 0)
    with pytest.raises(ConfigError, match="eval.sampler"):
        sysu_gallery(sysu_root, "all", 0, sampler="random")
    with pytest.raises(ConfigError, match="eval.shots"):
        sysu_gallery(sysu_root, "all", 0, sampler="official", shots=5)


def test_seeded_empty_folder_is_an_error(sysu_root: Path) -> None:
    (sysu_root / "cam2" / "0003").mkdir()
    with pytest.raises(DatasetError, match=r"cam2/0003 holds no image"):
        sysu_gallery(sysu_root, "all", 0)


# ------------------------------------------------------------------------- official gallery

# Test ids 2 and 9 with at least 10 images in every gallery folder they have; id 9 has no
# cam2 folder. Training id 1 is there so the tree is complete.
OFFICIAL_IMAGES = {
    1: {1: 2, 3: 2},
    2: {1: 12, 2: 10, 3: 2, 4: 11, 5: 10, 6: 1},
    9: {1: 10, 3: 1, 4: 13, 5: 10},
}


def make_permutations(num_persons: int, seed: int = 0) -> list[list[np.ndarray]]:
    """Per camera, per person 1..N: a (10, n) uint8 matrix of permutations of 1..n."""
    rng = np.random.default_rng(seed)
    cells = []
    for cam in range(1, 7):
        entries = []
        for pid in range(1, num_persons + 1):
            n = OFFICIAL_IMAGES.get(pid, {}).get(cam, 0)
            rows = [rng.permutation(n) + 1 for _ in range(10)]
            entries.append(np.array(rows, dtype=np.uint8).reshape(10, n))
        cells.append(entries)
    return cells


@pytest.fixture
def official_root(
    tmp_path: Path, make_sysu_tree, save_rand_perm_cam
) -> tuple[Path, list[list[np.ndarray]]]:
    root = make_sysu_tree(tmp_path / "SYSU", OFFICIAL_IMAGES, train=[1], val=[], test=[9, 2])
    cells = make_permutations(num_persons=10)
    save_rand_perm_cam(root / "exp" / "rand_perm_cam.mat", cells)
    return root, cells


def test_saved_split_has_the_real_structure(official_root) -> None:
    root, cells = official_root
    raw = scipy.io.loadmat(str(root / "exp" / "rand_perm_cam.mat"))["rand_perm_cam"]
    assert raw.shape == (6, 1) and raw.dtype == object
    assert raw[0, 0].shape == (10, 1) and raw[0, 0][1, 0].shape == (10, 12)
    split = load_official_split(root / "exp" / "rand_perm_cam.mat")
    assert split.num_persons(1) == 10
    np.testing.assert_array_equal(split.permutation(4, 9), cells[3][8])
    assert split.permutation(2, 9) is None  # empty entry: no cam2 images of id 9
    assert split.permutation(1, 11) is None  # beyond the file's persons


@pytest.mark.parametrize("shots", [1, 10])
@pytest.mark.parametrize("mode", ["all", "indoor"])
@pytest.mark.parametrize("trial", [0, 4, 9])
def test_official_gallery(official_root, shots: int, mode: str, trial: int) -> None:
    root, cells = official_root
    cams = [1, 2, 4, 5] if mode == "all" else [1, 2]
    # The authors' get_testing_set.m: cameras outer, test ids ascending, permutation order.
    expected = [
        f"cam{cam}/{pid:04d}/{int(k):04d}.jpg"
        for cam in cams
        for pid in (2, 9)
        if cells[cam - 1][pid - 1].size
        for k in cells[cam - 1][pid - 1][trial, :shots]
    ]
    gallery = sysu_gallery(root, mode, trial, sampler="official", shots=shots)
    assert paths(gallery) == expected
    # (id, cam) folders: id 2 in cams 1, 2, 4, 5 and id 9 in cams 1, 4, 5.
    assert len(gallery) == shots * (7 if mode == "all" else 3)
    assert all(r.path.startswith(f"cam{r.cam}/{r.pid:04d}/") for r in gallery)


def test_official_split_file_given_by_path(
    official_root, tmp_path: Path, save_rand_perm_cam
) -> None:
    root, cells = official_root
    other = make_permutations(num_persons=10, seed=7)
    elsewhere = save_rand_perm_cam(tmp_path / "elsewhere" / "split.mat", other)
    gallery = sysu_gallery(root, "all", 2, sampler="official", split_file=elsewhere)
    assert gallery[0].path == f"cam1/0002/{int(other[0][1][2, 0]):04d}.jpg"


def test_official_missing_split_file_names_lookup_paths(official_root, tmp_path: Path) -> None:
    root, _ = official_root
    (root / "exp" / "rand_perm_cam.mat").unlink()
    with pytest.raises(DatasetError, match=r"exp/rand_perm_cam\.mat.*--split-file"):
        sysu_gallery(root, "all", 0, sampler="official")
    missing = tmp_path / "nope.mat"
    with pytest.raises(DatasetError) as info:
        sysu_gallery(root, "all", 0, sampler="official", split_file=missing)
    assert str(missing) in str(info.value)
    assert str(root / "exp" / "rand_perm_cam.mat") in str(info.value)


def test_official_split_pointing_to_missing_image(official_root) -> None:
    root, cells = official_root
    first = int(cells[0][1][0, 0])
    (root / "cam1" / "0002" / f"{first:04d}.jpg").unlink()
    with pytest.raises(DatasetError, match=rf"points to image {first}.*cam1/0002/{first:04d}\.jpg"):
        sysu_gallery(root, "all", 0, sampler="official")


def test_official_split_with_wrong_structure(official_root) -> None:
    root, _ = official_root
    scipy.io.savemat(str(root / "exp" / "rand_perm_cam.mat"), {"perm": np.zeros((3, 3))})
    with pytest.raises(DatasetError, match="no variable rand_perm_cam"):
        sysu_gallery(root, "all", 0, sampler="official")
    (root / "exp" / "rand_perm_cam.mat").write_text("not a mat file")
    with pytest.raises(DatasetError, match="cannot read split file"):
        sysu_gallery(root, "all", 0, sampler="official")
