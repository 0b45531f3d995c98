"""RegDB read from its released layout and idx files (protocols.md, "RegDB").

The dataset root holds::

    Visible/<pid>/…_v_….bmp, Thermal/<pid>/…_t_….bmp
    idx/{train,test}_{visible,thermal}_<t>.txt    t = 1..10, lines "<relative path> <label>"

Usage::

    from df2am.data.datasets.regdb import read_regdb_train, regdb_test

    train = read_regdb_train("/data/RegDB", trial=1)            # 2 x 2,060 images, labels 0..205
    query, gallery = regdb_test("/data/RegDB", 1, "v2t")        # visible -> thermal

Trials are numbered **1..10** like the idx files. Cameras: visible 1, thermal 2. The ``pid``
of every record is the idx-file label (train and test labels both start at 0, so pids are
only comparable inside one split). Each trial is trained on ``train_*_t`` and tested on
``test_*_t``; mixing trials leaks training ids into the test set.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from pathlib import Path

from df2am.data.datasets.base import (
    IMAGE_SUFFIXES,
    CountRow,
    Dataset,
    Problem,
    TestOptions,
    VerifyReport,
    paired_label_problems,
    parse_list_file,
)
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
    return REGDB.check_trial(trial)


def layout_problems(root: Path) -> list[Problem]:
    """Problems of the top-level layout (``Visible/``, ``Thermal/``, ``idx/``)."""
    if not root.is_dir():
        return [Problem(str(root), "is not a directory: expected the unzipped folder that "
                                   "holds Visible/, Thermal/ and idx/")]
    missing = [d for d in LAYOUT_DIRS if not (root / d).is_dir()]
    if not missing:
        return []
    return [Problem(str(root), f"lacks {', '.join(d + '/' for d in missing)}: expected "
                               "Visible/, Thermal/ and idx/{train,test}_{visible,thermal}_<t>.txt")]


def check_layout(root: str | Path) -> Path:
    """Check that ``root`` holds ``Visible/``, ``Thermal/`` and ``idx/``; return it."""
    return REGDB.check_layout(root)


def parse_idx_file(path: Path) -> list[tuple[str, int]]:
    """Parse one idx file into ``(relative path, label)`` pairs, in file order (see
    :func:`~df2am.data.datasets.base.parse_list_file`)."""
    return parse_list_file(path, "RegDB idx/{train,test}_{visible,thermal}_<t>.txt")


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
    problems = paired_label_problems(
        idx_file(root, "train", "visible", trial), {r.label for r in visible},
        idx_file(root, "train", "thermal", trial), {r.label for r in thermal})
    if problems:
        raise DatasetError(str(problems[0]))
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


# ------------------------------------------------------------------------------ verification

#: Counts of the full release (protocols.md), reported as notes when a copy differs.
RELEASE_COUNTS = {"images per modality": 4120, "ids": 412}


def _verify_regdb(root: Path) -> tuple[VerifyReport, list[Path]]:
    report = VerifyReport("regdb", root)
    images: set[Path] = set()
    report.problems.extend(layout_problems(root))
    if not root.is_dir():
        return report, []
    if not (root / "idx").is_dir():
        return report, []
    for trial in TRIALS:
        labels: dict[tuple[str, str], set[int]] = {}
        folders: dict[str, set[str]] = {"train": set(), "test": set()}
        for split in SPLITS:
            for modality, (cam, _) in MODALITIES.items():
                path = idx_file(root, split, modality, trial)
                try:
                    entries = parse_idx_file(path)
                except DatasetError as exc:
                    report.add(path, str(exc))
                    continue
                for rel, _label in entries:
                    if (root / rel).is_file():
                        images.add(root / rel)
                    else:
                        report.add(
                            root / rel,
                            f"listed in {path} but missing: expected the image "
                            "at this path relative to the RegDB root",
                        )
                    folders[split].add(str(Path(rel).parent))
                labels[(split, modality)] = {label for _, label in entries}
                report.rows.append(
                    CountRow(
                        f"trial {trial} {split}",
                        f"cam{cam}",
                        modality,
                        len(labels[(split, modality)]),
                        len(entries),
                    )
                )
        _check_regdb_labels(report, root, trial, labels)
        shared = sorted(folders["train"] & folders["test"])
        if shared:
            report.add(
                idx_file(root, "test", "visible", trial),
                f"trial {trial}: folders {shared[:5]} appear in both train and test idx "
                "files: expected disjoint identities",
            )
    for folder, modality in (("Visible", "visible"), ("Thermal", "thermal")):
        if (root / folder).is_dir():
            on_disk = [
                p
                for p in (root / folder).rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            ]
            pids = {p.parent for p in on_disk}
            report.rows.append(CountRow("on disk", folder, modality, len(pids), len(on_disk)))
            if len(on_disk) != RELEASE_COUNTS["images per modality"]:
                report.notes.append(
                    f"{folder}: {len(on_disk)} images (the full release has "
                    f"{RELEASE_COUNTS['images per modality']:,})"
                )
    return report, sorted(images)


def _check_regdb_labels(
    report: VerifyReport, root: Path, trial: int, labels: dict[tuple[str, str], set[int]]
) -> None:
    for modality in MODALITIES:
        found = labels.get(("train", modality))
        if found is not None and sorted(found) != list(range(len(found))):
            report.add(
                idx_file(root, "train", modality, trial),
                "training labels are not contiguous from 0: missing "
                f"{sorted(set(range(max(found) + 1)) - found)[:10]}",
            )
    for split in SPLITS:
        vis, th = labels.get((split, "visible")), labels.get((split, "thermal"))
        if vis is not None and th is not None and vis != th:
            report.add(
                idx_file(root, split, "thermal", trial),
                f"labels differ from {idx_file(root, split, 'visible', trial).name}: "
                f"only visible {sorted(vis - th)[:10]}, only thermal {sorted(th - vis)[:10]};"
                " expected the same identities in both modalities",
            )


# ----------------------------------------------------------------------------- the dataset


class RegDB(Dataset):
    """RegDB: one visible and one thermal camera, trials 1..10, one model per trial."""

    name = "regdb"
    title = "RegDB"
    metric_rule = "regdb"
    trials = TRIALS
    trial_rule = "1..10 (idx/train_visible_<t>.txt)"
    trial_per_model = True
    option_choices = {"direction": tuple(DIRECTIONS)}
    option_defaults = {"direction": "v2t"}
    direction_help = {"v2t": "visible query, thermal gallery",
                      "t2v": "thermal query, visible gallery"}
    layout_help = "folder that holds Visible/, Thermal/, idx/"
    identity_name = "person folder"

    def identity_key(self, record: ImageRecord) -> Hashable | None:
        # idx labels restart at 0 in each split: the person folder is what both share.
        return record.path.rsplit("/", 1)[0]

    def describe(self, options: TestOptions, trials: list[int]) -> str:
        arrow = "visible→thermal" if options.direction == "v2t" else "thermal→visible"
        return f"RegDB {arrow}, trial {trials[0]}"

    def layout_problems(self, root: Path) -> list[Problem]:
        return layout_problems(Path(root))

    def train_records(self, root: str | Path, trial: int | None = None) -> list[ImageRecord]:
        if trial is None:
            raise ConfigError("RegDB trains one model per trial: give the trial (1..10)")
        return read_regdb_train(root, trial)

    def test_split(
        self, root: str | Path, trial: int, options: TestOptions
    ) -> tuple[list[ImageRecord], list[ImageRecord]]:
        return regdb_test(root, trial, options.direction or "v2t")

    def verify(self, root: Path) -> tuple[VerifyReport, list[Path]]:
        return _verify_regdb(Path(root))


REGDB = RegDB()
