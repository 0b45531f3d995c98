"""RegDB read from its released layout and idx files (protocols.md, "RegDB").

The dataset root holds::

    Visible/<pid>/…_v_….bmp, Thermal/<pid>/…_t_….bmp
    idx/{train,test}_{visible,thermal}_<t>.txt    t = 1..10, lines "<relative path> <label>"

Usage::

    from df2am.data.regdb import read_regdb_train, regdb_test

    train = read_regdb_train("/data/RegDB", trial=1)            # 2 x 2,060 images, labels 0..205
    query, gallery = regdb_test("/data/RegDB", 1, "v2t")        # visible -> thermal

Trials are numbered **1..10** like the idx files. Cameras: visible 1, thermal 2. The ``pid``
of every record is the idx-file label (train and test labels both start at 0, so pids are
only comparable inside one split). Each trial is trained on ``train_*_t`` and tested on
``test_*_t``; mixing trials leaks training ids into the test set.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from df2am.data.records import ImageRecord, Modality
from df2am.errors import ConfigError, DatasetError

logger = logging.getLogger(__name__)

TRIALS = range(1, 11)
SPLITS: tuple[str, ...] = ("train", "test")
#: idx-file modality name -> (camera, record modality).
MODALITIES: dict[str, tuple[int, Modality]] = {"visible": (1, "rgb"), "thermal": (2, "ir")}
VISIBLE_CAM = 1
THERMAL_CAM = 2
DIRECTIONS: dict[str, tuple[str, str]] = {
    "v2t": ("visible", "thermal"),
    "t2v": ("thermal", "visible"),
}
LAYOUT_DIRS: tuple[str, ...] = ("Visible", "Thermal", "idx")


def idx_file(root: str | Path, split: str, modality: str, trial: int) -> Path:
    """``<root>/idx/<split>_<modality>_<trial>.txt``."""
    return Path(root) / "idx" / f"{split}_{modality}_{trial}.txt"


def check_trial(trial: int) -> int:
    """Validate a RegDB trial number (1..10, as in the idx file names)."""
    if isinstance(trial, bool) or not isinstance(trial, (int, np.integer)) or trial not in TRIALS:
        raise ConfigError(
            f"RegDB trials are numbered 1..10 (idx/train_visible_<t>.txt), got {trial!r}"
        )
    return int(trial)


def check_layout(root: str | Path) -> Path:
    """Check that ``root`` holds ``Visible/``, ``Thermal/`` and ``idx/``; return it."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"RegDB root {root} is not a directory: expected the unzipped folder that holds "
            "Visible/, Thermal/ and idx/"
        )
    missing = [d for d in LAYOUT_DIRS if not (root / d).is_dir()]
    if missing:
        raise DatasetError(
            f"RegDB root {root} lacks {', '.join(d + '/' for d in missing)}: expected "
            "Visible/, Thermal/ and idx/{train,test}_{visible,thermal}_<t>.txt"
        )
    return root


def parse_idx_file(path: Path) -> list[tuple[str, int]]:
    """Parse one idx file into ``(relative path, label)`` pairs, in file order.

    Each non-blank line is ``<relative path> <label>`` with an integer label >= 0. Raises
    :class:`DatasetError` naming the file and line when it is missing or malformed.
    """
    if not path.is_file():
        raise DatasetError(
            f"missing idx file {path}: expected lines '<relative path> <label>' "
            "(RegDB idx/{train,test}_{visible,thermal}_<t>.txt)"
        )
    entries: list[tuple[str, int]] = []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.strip().rsplit(maxsplit=1)
        label: int | None = None
        if len(parts) == 2:
            try:
                label = int(parts[1])
            except ValueError:
                label = None
        if label is None or label < 0:
            raise DatasetError(
                f"malformed idx file {path}, line {number}: {line.strip()!r}: expected "
                "'<relative path> <label>' with an integer label >= 0"
            )
        entries.append((parts[0], label))
    if not entries:
        raise DatasetError(f"idx file {path} is empty: expected lines '<relative path> <label>'")
    return entries


def read_idx(root: str | Path, split: str, modality: str, trial: int) -> list[ImageRecord]:
    """Records of one idx file; every listed image must exist under ``root``."""
    root = Path(root)
    path = idx_file(root, split, modality, trial)
    cam, record_modality = MODALITIES[modality]
    records = []
    for rel, label in parse_idx_file(path):
        if not (root / rel).is_file():
            raise DatasetError(
                f"idx file {path} lists {rel}, but {root / rel} does not exist: expected "
                "paths relative to the RegDB root (e.g. Visible/1/female_back_v_06000_1.bmp)"
            )
        records.append(
            ImageRecord(rel, label, cam, record_modality, label if split == "train" else -1)
        )
    return records


def read_regdb_train(root: str | Path, trial: int) -> list[ImageRecord]:
    """Training images of one trial: ``train_visible_<t>`` then ``train_thermal_<t>``.

    Labels are the idx-file labels; they must be contiguous from 0 and the same set in both
    modalities (the cross-modality sampler needs every label in both).
    """
    trial = check_trial(trial)
    root = check_layout(root)
    visible = read_idx(root, "train", "visible", trial)
    thermal = read_idx(root, "train", "thermal", trial)
    for modality, records in (("visible", visible), ("thermal", thermal)):
        labels = sorted({r.label for r in records})
        if labels != list(range(len(labels))):
            gaps = sorted(set(range(labels[-1] + 1)) - set(labels))[:10]
            raise DatasetError(
                f"idx file {idx_file(root, 'train', modality, trial)}: training labels must be "
                f"contiguous from 0, missing {gaps}"
            )
    only_v = sorted({r.label for r in visible} - {r.label for r in thermal})
    only_t = sorted({r.label for r in thermal} - {r.label for r in visible})
    if only_v or only_t:
        raise DatasetError(
            f"{idx_file(root, 'train', 'visible', trial)} and "
            f"{idx_file(root, 'train', 'thermal', trial)} disagree: labels only visible "
            f"{only_v[:10]}, only thermal {only_t[:10]}; expected the same labels in both"
        )
    logger.info(
        "RegDB trial %d train: %d ids, %d visible + %d thermal images",
        trial,
        len({r.label for r in visible}),
        len(visible),
        len(thermal),
    )
    return visible + thermal


def regdb_test(
    root: str | Path, trial: int, direction: str = "v2t"
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """``(query, gallery)`` of one trial: all test images of one modality vs the other.

    ``v2t``: query = ``test_visible_<t>`` (cam 1), gallery = ``test_thermal_<t>`` (cam 2);
    ``t2v`` swaps them. Records keep idx-file order; ``pid`` is the label; no camera filter.
    """
    if direction not in DIRECTIONS:
        raise ConfigError(f"eval.direction must be one of {list(DIRECTIONS)}, got {direction!r}")
    trial = check_trial(trial)
    root = check_layout(root)
    query_modality, gallery_modality = DIRECTIONS[direction]
    query = read_idx(root, "test", query_modality, trial)
    gallery = read_idx(root, "test", gallery_modality, trial)
    return query, gallery
