"""Helpers that write tiny SYSU-MM01 / RegDB trees in ``tmp_path`` for the reader tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image


def _tiny_image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(8, 4, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def write_sysu_tree(
    root: Path,
    images: dict[int, dict[int, int]],
    *,
    train: Iterable[int],
    val: Iterable[int],
    test: Iterable[int],
    names: Callable[[int], list[str]] | None = None,
) -> Path:
    """Write ``cam<c>/<pid:04d>/<nnnn>.jpg`` for ``images[pid][cam]`` images, and ``exp/``.

    All six camera folders and ``exp/`` exist even when empty, like the release. ``names(n)``
    overrides the file names (default ``0001.jpg`` … ``<n:04d>.jpg``).
    """
    for cam in range(1, 7):
        (root / f"cam{cam}").mkdir(parents=True, exist_ok=True)
    seed = 0
    for pid, per_cam in images.items():
        for cam, count in per_cam.items():
            folder = root / f"cam{cam}" / f"{pid:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            for name in names(count) if names else [f"{k:04d}.jpg" for k in range(1, count + 1)]:
                seed += 1
                _tiny_image(folder / name, seed)
    (root / "exp").mkdir(exist_ok=True)
    for split, ids in (("train", train), ("val", val), ("test", test)):
        (root / "exp" / f"{split}_id.txt").write_text(",".join(str(i) for i in ids) + "\n")
    return root


def write_regdb_tree(root: Path, num_ids: int = 4, per_id: int = 2) -> Path:
    """Write a RegDB-like tree: ``num_ids`` ids × ``per_id`` images per modality, 10 trials.

    Trial t puts ids ``perm_t[: num_ids // 2]`` in train and the rest in test, where
    ``perm_t`` rotates the ids by t; labels are contiguous from 0 in idx-file order.
    Returns the root; the split of each trial is given by :func:`regdb_split`.
    """
    seed = 1000
    for pid in range(1, num_ids + 1):
        for folder, letter in (("Visible", "v"), ("Thermal", "t")):
            for k in range(per_id):
                seed += 1
                _tiny_image(
                    root / folder / str(pid) / f"female_back_{letter}_{k:05d}_{pid}.bmp", seed
                )
    (root / "idx").mkdir(parents=True, exist_ok=True)
    for trial in range(1, 11):
        train, test = regdb_split(num_ids, trial)
        for split, ids in (("train", train), ("test", test)):
            for modality, folder, letter in (
                ("visible", "Visible", "v"),
                ("thermal", "Thermal", "t"),
            ):
                lines = [
                    f"{folder}/{pid}/female_back_{letter}_{k:05d}_{pid}.bmp {label}"
                    for label, pid in enumerate(ids)
                    for k in range(per_id)
                ]
                (root / "idx" / f"{split}_{modality}_{trial}.txt").write_text(
                    "\n".join(lines) + "\n"
                )
    return root


def regdb_split(num_ids: int, trial: int) -> tuple[list[int], list[int]]:
    ids = list(range(1, num_ids + 1))
    shift = trial % num_ids
    rotated = ids[shift:] + ids[:shift]
    half = num_ids // 2
    return rotated[:half], rotated[half:]


def write_rand_perm_cam(path: Path, cells: list[list[np.ndarray]]) -> Path:
    """Write the official split file's structure: a (6,1) cell of (N,1) cells of (10, n)
    matrices (``cells[camera][pid - 1]``), as ``scipy.io.savemat`` stores MATLAB cells."""
    top = np.empty((6, 1), dtype=object)
    for c, entries in enumerate(cells):
        cell = np.empty((len(entries), 1), dtype=object)
        for i, matrix in enumerate(entries):
            cell[i, 0] = matrix
        top[c, 0] = cell
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"rand_perm_cam": top})
    return path


def fixed_perm_cells(counts: dict[int, dict[int, int]], num_persons: int,
                     descending: bool) -> list[list[np.ndarray]]:
    """Cells whose 10 rows are all 1..n (or n..1) for the image counts ``counts[pid][cam]``."""
    def row(n: int) -> np.ndarray:
        r = np.arange(n, 0, -1) if descending else np.arange(1, n + 1)
        return np.tile(r.astype(np.uint8), (10, 1)).reshape(10, n)

    return [[row(counts.get(pid, {}).get(cam, 0)) for pid in range(1, num_persons + 1)]
            for cam in range(1, 7)]


@pytest.fixture
def sysu_root(tmp_path: Path) -> Path:
    """A small SYSU tree: train ids 1, 2 (+ val 4), test ids 3, 5, 7 with gaps per camera.

    Test id 3 has no cam2 and no cam6 folder; test id 7 has no cam1/cam2 (only outdoor RGB).
    """
    images = {
        1: {1: 2, 3: 2, 4: 1},
        2: {2: 3, 6: 2},
        4: {5: 1, 3: 1},
        3: {1: 4, 3: 3, 4: 2, 5: 3},
        5: {1: 3, 2: 5, 3: 2, 4: 1, 5: 2, 6: 4},
        7: {3: 1, 4: 3, 5: 2, 6: 2},
    }
    return write_sysu_tree(tmp_path / "SYSU-MM01", images, train=[2, 1], val=[4], test=[5, 3, 7])


@pytest.fixture
def regdb_root(tmp_path: Path) -> Path:
    return write_regdb_tree(tmp_path / "RegDB", num_ids=4, per_id=2)


@pytest.fixture
def make_sysu_tree() -> Callable[..., Path]:
    """:func:`write_sysu_tree` as a fixture (conftest modules are not importable by name)."""
    return write_sysu_tree


@pytest.fixture
def make_regdb_tree() -> Callable[..., Path]:
    """:func:`write_regdb_tree` as a fixture."""
    return write_regdb_tree


@pytest.fixture
def save_rand_perm_cam() -> Callable[..., Path]:
    """:func:`write_rand_perm_cam` as a fixture."""
    return write_rand_perm_cam


@pytest.fixture
def perm_cells() -> Callable[..., list[list[np.ndarray]]]:
    """:func:`fixed_perm_cells` as a fixture."""
    return fixed_perm_cells
