"""SYSU-MM01 read straight from the released folder layout (protocols.md, "SYSU-MM01").

The dataset root is the folder that holds ``cam1`` … ``cam6`` and ``exp``::

    cam1 … cam6/<pid:04d>/<nnnn>.jpg
    exp/train_id.txt, exp/val_id.txt, exp/test_id.txt     comma-separated integer ids
    exp/rand_perm_cam.mat                                  optional: the authors' gallery split

Usage::

    from df2am.data.datasets.sysu import read_sysu_train, sysu_query, sysu_gallery

    train = read_sysu_train("/data/SYSU-MM01")          # labels 0..394, rgb + ir
    query = sysu_query("/data/SYSU-MM01", "all")        # 3,803 IR images of the 96 test ids
    gallery = sysu_gallery("/data/SYSU-MM01", "all", trial=0)            # 301 RGB images
    gallery10 = sysu_gallery(root, "indoor", 3, sampler="official", shots=10)

Every record's ``path`` is relative to the root with forward slashes
(``cam3/0006/0001.jpg``), so lists can be compared across machines and printed by
``df2am protocol``.

Trials are numbered **0..9** here, as in the reference scripts (``random.seed(trial)``) and as
the rows of ``rand_perm_cam``; RegDB trials are 1..10 (see :mod:`df2am.data.protocol`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from df2am.data.datasets.base import (
    CountRow,
    Dataset,
    Problem,
    TestOptions,
    VerifyReport,
    list_image_names,
)
from df2am.data.records import ImageRecord, Modality
from df2am.errors import ConfigError, DatasetError

logger = logging.getLogger(__name__)

CAMERAS: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
RGB_CAMERAS: tuple[int, ...] = (1, 2, 4, 5)
IR_CAMERAS: tuple[int, ...] = (3, 6)
#: Query cameras (both modes): every image of every test id in cam3, then cam6.
QUERY_CAMERAS: tuple[int, ...] = (3, 6)
#: Gallery cameras per search mode, in the order the samplers iterate them.
GALLERY_CAMERAS: dict[str, tuple[int, ...]] = {"all": (1, 2, 4, 5), "indoor": (1, 2)}
MODES: tuple[str, ...] = ("all", "indoor")
SAMPLERS: tuple[str, ...] = ("seeded", "official")
SHOTS: tuple[int, ...] = (1, 10)
#: SYSU-MM01 trials, 0-based like ``random.seed(t)`` and the rows of ``rand_perm_cam``.
TRIALS = range(10)
ID_FILES: dict[str, str] = {
    "train": "exp/train_id.txt",
    "val": "exp/val_id.txt",
    "test": "exp/test_id.txt",
}
#: Where the official split file is looked up when no path is given.
DEFAULT_SPLIT_FILE = "exp/rand_perm_cam.mat"


def modality_of(cam: int) -> Modality:
    """``"rgb"`` for cameras 1, 2, 4, 5 and ``"ir"`` for 3, 6."""
    if cam in RGB_CAMERAS:
        return "rgb"
    if cam in IR_CAMERAS:
        return "ir"
    raise ValueError(f"SYSU-MM01 has cameras 1..6, got {cam}")


def parse_id_file(path: Path) -> list[int]:
    """Parse one ``exp/*_id.txt`` file: integer ids separated by commas (and/or whitespace).

    Raises :class:`DatasetError` naming the file when it is missing, empty, holds a token
    that is not a positive integer, or lists an id twice.
    """
    if not path.is_file():
        raise DatasetError(
            f"missing id file {path}: expected a line of comma-separated integer ids "
            "as in the SYSU-MM01 release"
        )
    text = path.read_text(encoding="utf-8", errors="replace")
    tokens = [t for t in text.replace(",", " ").split() if t]
    if not tokens:
        raise DatasetError(f"id file {path} is empty: expected comma-separated integer ids")
    ids: list[int] = []
    seen: set[int] = set()
    for token in tokens:
        try:
            pid = int(token)
        except ValueError:
            raise DatasetError(
                f"malformed id file {path}: {token!r} is not an integer "
                "(expected comma-separated integer ids such as 1,2,4)"
            ) from None
        if pid <= 0:
            raise DatasetError(f"malformed id file {path}: id {pid} must be a positive integer")
        if pid in seen:
            raise DatasetError(f"malformed id file {path}: id {pid} is listed twice")
        seen.add(pid)
        ids.append(pid)
    return ids


def read_ids(root: str | Path, split: str) -> list[int]:
    """Ids of ``split`` (``"train"``, ``"val"`` or ``"test"``), ascending."""
    return sorted(parse_id_file(Path(root) / ID_FILES[split]))


def layout_problems(root: Path) -> list[Problem]:
    """Problems of the top-level layout (``cam1``..``cam6`` and ``exp/``), in check order."""
    if not root.is_dir():
        return [Problem(str(root), "is not a directory: expected the unzipped folder that "
                                   "holds cam1 … cam6 and exp/")]
    problems = []
    missing = [f"cam{c}" for c in CAMERAS if not (root / f"cam{c}").is_dir()]
    if missing:
        problems.append(Problem(str(root), f"lacks camera folder(s) {', '.join(missing)}: "
                                           "expected cam1 … cam6 (is --root the folder that "
                                           "holds cam1?)"))
    if not (root / "exp").is_dir():
        problems.append(Problem(str(root), "lacks exp/: expected exp/train_id.txt, "
                                           "exp/val_id.txt and exp/test_id.txt"))
    return problems


def check_layout(root: str | Path) -> Path:
    """Check that ``root`` looks like SYSU-MM01 (``cam1``..``cam6`` and ``exp/``); return it."""
    return SYSU.check_layout(root)


def person_dir(cam: int, pid: int) -> str:
    """Relative folder of one (camera, id) pair, e.g. ``cam3/0006``."""
    return f"cam{cam}/{pid:04d}"


def list_images(root: Path, cam: int, pid: int) -> list[str] | None:
    """Sorted image file names of one (camera, id) folder, or ``None`` if it does not exist."""
    return list_image_names(root / person_dir(cam, pid))


def _record(cam: int, pid: int, name: str, label: int = -1) -> ImageRecord:
    return ImageRecord(f"{person_dir(cam, pid)}/{name}", pid, cam, modality_of(cam), label)


def read_sysu_train(root: str | Path) -> list[ImageRecord]:
    """Training images: every image of every id in ``train_id`` ∪ ``val_id`` (protocols.md).

    Labels map the training ids to 0..N-1 in ascending id order (395 ids on the release).
    Records come ids ascending, cameras 1..6, files sorted by name; modality is ``rgb`` for
    cameras 1, 2, 4, 5 and ``ir`` for 3, 6. An id with no RGB or no IR image is an error:
    the cross-modality sampler needs both for every label.
    """
    root = check_layout(root)
    train = parse_id_file(root / ID_FILES["train"])
    val = parse_id_file(root / ID_FILES["val"])
    overlap = sorted(set(train) & set(val))
    if overlap:
        logger.warning("ids %s are in both train_id.txt and val_id.txt; using them once", overlap)
    ids = sorted(set(train) | set(val))
    records: list[ImageRecord] = []
    for label, pid in enumerate(ids):
        per_modality = {"rgb": 0, "ir": 0}
        for cam in CAMERAS:
            names = list_images(root, cam, pid) or []
            per_modality[modality_of(cam)] += len(names)
            records.extend(_record(cam, pid, name, label) for name in names)
        for modality, count in per_modality.items():
            if count == 0:
                cams = RGB_CAMERAS if modality == "rgb" else IR_CAMERAS
                raise DatasetError(
                    f"training id {pid} (listed in {ID_FILES['train']} or {ID_FILES['val']}) "
                    f"has no {modality.upper()} image under {root}: expected images in at "
                    f"least one of " + ", ".join(person_dir(c, pid) for c in cams)
                )
    logger.info(
        "SYSU-MM01 train: %d ids, %d rgb + %d ir images",
        len(ids),
        sum(r.modality == "rgb" for r in records),
        sum(r.modality == "ir" for r in records),
    )
    return records


def _check_mode(mode: str) -> tuple[int, ...]:
    if mode not in GALLERY_CAMERAS:
        raise ConfigError(f"eval.mode must be one of {list(MODES)}, got {mode!r}")
    return GALLERY_CAMERAS[mode]


def check_trial(trial: int) -> int:
    """Validate a SYSU-MM01 trial number (0..9)."""
    return SYSU.check_trial(trial)


def sysu_query(root: str | Path, mode: str = "all") -> list[ImageRecord]:
    """Query set: every image of every test id in cam3 and cam6 (3,803 on the release).

    Order (protocols.md): ids ascending, cam3 before cam6, files sorted by name. The query
    is the same for both modes and all trials; ``mode`` is validated only.
    """
    _check_mode(mode)
    root = check_layout(root)
    records: list[ImageRecord] = []
    for pid in read_ids(root, "test"):
        for cam in QUERY_CAMERAS:
            records.extend(_record(cam, pid, name) for name in list_images(root, cam, pid) or [])
    if not records:
        raise DatasetError(
            f"no query image under {root}: expected images in cam3/<id> or cam6/<id> for the "
            f"ids of {ID_FILES['test']}"
        )
    return records


def sysu_gallery(
    root: str | Path,
    mode: str,
    trial: int,
    sampler: str = "seeded",
    shots: int = 1,
    split_file: str | Path | None = None,
) -> list[ImageRecord]:
    """Gallery of one trial (protocols.md, "Gallery sampling").

    ``sampler="seeded"`` (AGW/DDAG code, what most papers report): ``random.Random(trial)``
    draws one ``choice`` from the sorted file list of each (id, camera) folder, ids ascending,
    cameras 1, 2, 4, 5 (``all``) or 1, 2 (``indoor``), skipping folders that do not exist.
    Single-shot only.

    ``sampler="official"`` (the authors' MATLAB evaluation): the first ``shots`` image numbers
    of row ``trial`` of ``rand_perm_cam{cam}{pid}`` from ``split_file`` (default
    ``<root>/exp/rand_perm_cam.mat``). The list is ordered like the authors'
    ``get_testing_set.m``, which concatenates per camera: cameras outer (1, 2, 4, 5), test ids
    ascending inside each camera, then the permutation order. Order only matters for
    tie-breaking in the (stable) ranking, and this one matches the reference.
    """
    cams = _check_mode(mode)
    trial = check_trial(trial)
    if sampler not in SAMPLERS:
        raise ConfigError(f"eval.sampler must be one of {list(SAMPLERS)}, got {sampler!r}")
    if shots not in SHOTS:
        raise ConfigError(f"eval.shots must be 1 (single-shot) or 10 (multi-shot), got {shots!r}")
    root = check_layout(root)
    test_ids = read_ids(root, "test")
    if sampler == "seeded":
        if shots != 1:
            raise ConfigError(
                "the seeded SYSU-MM01 sampler is single-shot only (eval.shots=1); "
                "multi-shot galleries need eval.sampler=official"
            )
        if split_file is not None and str(split_file) != "":
            raise ConfigError(
                f"--split-file / eval.split_file ({split_file}) is the official sampler's "
                "split, but the sampler is seeded (it draws its own galleries and would ignore "
                "the file): add --sampler official (eval.sampler=official), or leave it out"
            )
        return _seeded_gallery(root, test_ids, cams, trial)
    split = load_official_split(resolve_split_file(root, split_file))
    return _official_gallery(root, test_ids, cams, trial, shots, split)


def _seeded_gallery(
    root: Path, test_ids: Sequence[int], cams: Sequence[int], trial: int
) -> list[ImageRecord]:
    # random.Random(t) has the same stream as the reference's global random.seed(t).
    rng = random.Random(trial)
    records: list[ImageRecord] = []
    for pid in test_ids:
        for cam in cams:
            names = list_images(root, cam, pid)
            if names is None:
                continue
            if not names:
                # The reference would crash here (random.choice on an empty list).
                raise DatasetError(
                    f"folder {root / person_dir(cam, pid)} holds no image: expected at least "
                    "one .jpg (remove the empty folder or restore its images)"
                )
            records.append(_record(cam, pid, rng.choice(names)))
    return records


def resolve_split_file(root: str | Path, split_file: str | Path | None) -> Path:
    """Path of ``rand_perm_cam.mat``: ``split_file`` if given, else ``<root>/exp/``."""
    default = Path(root) / DEFAULT_SPLIT_FILE
    if split_file is None or str(split_file) == "":
        if not default.is_file():
            raise DatasetError(
                f"official SYSU-MM01 split file not found at {default}: place the authors' "
                "rand_perm_cam.mat there or give its path (--split-file / eval.split_file)"
            )
        return default
    path = Path(split_file)
    if not path.is_file():
        raise DatasetError(
            f"official SYSU-MM01 split file {path} does not exist "
            f"(the default lookup is {default}): expected the authors' rand_perm_cam.mat"
        )
    return path


class OfficialSplit:
    """The authors' ``rand_perm_cam.mat``: per camera, per person id a (10, n) permutation.

    ``rand_perm_cam`` is a 6×1 cell (one cell per camera); cell c holds one entry per person
    id 1..N (index ``pid - 1``); each entry is a 10 × n matrix whose row t is a permutation
    of the 1-based image numbers of that id in that camera, empty where it has none.
    """

    def __init__(self, path: Path, cells: list[list[np.ndarray]]) -> None:
        self.path = path
        self._cells = cells

    def permutation(self, cam: int, pid: int) -> np.ndarray | None:
        """The (10, n) matrix of ``pid`` in ``cam``, or ``None`` when the file has none."""
        cell = self._cells[cam - 1]
        if pid < 1 or pid > len(cell):
            return None
        entry = cell[pid - 1]
        return entry if entry.size else None

    def num_persons(self, cam: int) -> int:
        return len(self._cells[cam - 1])


def load_official_split(path: str | Path) -> OfficialSplit:
    """Load and check ``rand_perm_cam.mat`` (see :class:`OfficialSplit` for the structure)."""
    import scipy.io

    path = Path(path)
    expected = (
        "expected the SYSU-MM01 authors' rand_perm_cam.mat: variable rand_perm_cam, a 6x1 cell "
        "of per-person 10 x n permutation matrices"
    )
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises several types for non-MAT input
        raise DatasetError(f"cannot read split file {path} ({exc}): {expected}") from None
    if "rand_perm_cam" not in mat:
        names = sorted(k for k in mat if not k.startswith("__"))
        raise DatasetError(f"split file {path} has no variable rand_perm_cam ({names}): {expected}")
    top = np.asarray(mat["rand_perm_cam"])
    if top.dtype != object or top.size != len(CAMERAS):
        raise DatasetError(
            f"split file {path}: rand_perm_cam has shape {top.shape} and dtype {top.dtype}: "
            f"{expected}"
        )
    cells: list[list[np.ndarray]] = []
    for index, cell in enumerate(top.reshape(-1)):
        cell = np.asarray(cell)
        if cell.dtype != object:
            raise DatasetError(
                f"split file {path}: rand_perm_cam{{{index + 1}}} is a {cell.dtype} array, "
                f"not a cell of per-person matrices: {expected}"
            )
        entries = [_as_matrix(e, path, index + 1, i + 1) for i, e in enumerate(cell.reshape(-1))]
        cells.append(entries)
    return OfficialSplit(path, cells)


def _as_matrix(entry: Any, path: Path, cam: int, pid: int) -> np.ndarray:
    matrix = np.asarray(entry)
    if matrix.size == 0:
        return np.zeros((0, 0), dtype=np.int64)
    if matrix.ndim != 2 or matrix.dtype.kind not in "iuf":
        raise DatasetError(
            f"split file {path}: rand_perm_cam{{{cam}}}{{{pid}}} has shape {matrix.shape} "
            f"and dtype {matrix.dtype}: expected a 10 x n matrix of image numbers"
        )
    return matrix.astype(np.int64)


def _official_gallery(
    root: Path,
    test_ids: Sequence[int],
    cams: Sequence[int],
    trial: int,
    shots: int,
    split: OfficialSplit,
) -> list[ImageRecord]:
    records: list[ImageRecord] = []
    for cam in cams:
        for pid in test_ids:
            matrix = split.permutation(cam, pid)
            if matrix is None:
                # Same as the MATLAB reference: no entry = the id has no image in this camera.
                if list_images(root, cam, pid):
                    logger.warning(
                        "%s has images but %s has no entry for it; skipped as the reference does",
                        person_dir(cam, pid),
                        split.path,
                    )
                continue
            where = f"split file {split.path}, rand_perm_cam{{{cam}}}{{{pid}}}"
            if matrix.shape[0] <= trial:
                raise DatasetError(
                    f"{where} has {matrix.shape[0]} rows: expected 10 (one per trial 0..9)"
                )
            row = matrix[trial]
            if row.shape[0] < shots:
                raise DatasetError(
                    f"{where} lists {row.shape[0]} images: {shots}-shot needs at least {shots}"
                )
            for number in row[:shots].tolist():
                name = f"{int(number):04d}.jpg"
                if not (root / person_dir(cam, pid) / name).is_file():
                    raise DatasetError(
                        f"{where} row {trial} points to image {number}, but "
                        f"{root / person_dir(cam, pid) / name} does not exist: expected the "
                        "split file that belongs to this copy of SYSU-MM01"
                    )
                records.append(_record(cam, pid, name))
    return records


# ------------------------------------------------------------------------------ verification

#: Counts of the full release (protocols.md), reported as notes when a copy differs.
RELEASE_COUNTS = {
    "train ids": 395,
    "train rgb": 22258,
    "train ir": 11909,
    "test ids": 96,
    "query": 3803,
}


def _verify_sysu(root: Path) -> tuple[VerifyReport, list[Path]]:
    report = VerifyReport("sysu", root)
    images: list[Path] = []
    report.problems.extend(layout_problems(root))
    if not root.is_dir():
        return report, images
    cams = [c for c in CAMERAS if (root / f"cam{c}").is_dir()]
    ids: dict[str, list[int]] = {}
    for split, rel in ID_FILES.items():
        try:
            ids[split] = sorted(parse_id_file(root / rel))
        except DatasetError as exc:
            report.add(root / rel, str(exc))
    splits = {
        "train": sorted(set(ids.get("train", [])) | set(ids.get("val", []))),
        "test": ids.get("test", []),
    }
    leaked = sorted(set(splits["train"]) & set(splits["test"]))
    if leaked:
        report.add(
            root / ID_FILES["test"],
            f"ids {leaked[:20]} are also training ids: expected disjoint train/val and test ids",
        )

    for split, split_ids in splits.items():
        per_cam: dict[int, tuple[int, int]] = {}
        for cam in CAMERAS:
            n_ids = n_images = 0
            for pid in split_ids:
                names = list_images(root, cam, pid) if cam in cams else None
                if names is None:
                    continue
                if not names:
                    report.add(
                        root / person_dir(cam, pid),
                        "empty id folder: expected at least one image (the seeded gallery "
                        "sampler draws one per existing folder)",
                    )
                    continue
                n_ids += 1
                n_images += len(names)
                images.extend(root / person_dir(cam, pid) / n for n in names)
            per_cam[cam] = (n_ids, n_images)
            report.rows.append(CountRow(split, f"cam{cam}", modality_of(cam), n_ids, n_images))
        for modality, mod_cams in (("rgb", RGB_CAMERAS), ("ir", IR_CAMERAS)):
            n_ids = sum(
                any(_has_images(root, c, pid) for c in mod_cams if c in cams) for pid in split_ids
            )
            n_images = sum(per_cam[c][1] for c in mod_cams)
            report.rows.append(CountRow(split, "all", modality, n_ids, n_images))
        _check_sysu_ids(report, root, split, split_ids, cams)

    query = sum(r.images for r in report.rows if r.split == "test" and r.camera in ("cam3", "cam6"))
    query_ids = sum(
        any(_has_images(root, c, pid) for c in QUERY_CAMERAS if c in cams)
        for pid in splits["test"]
    )
    report.rows.append(CountRow("query", "cam3+cam6", "ir", query_ids, query))
    _sysu_release_notes(report, splits, query)
    _verify_official_split(report, root, splits["test"], cams)
    return report, images


def _has_images(root: Path, cam: int, pid: int) -> bool:
    return bool(list_images(root, cam, pid))


def _check_sysu_ids(
    report: VerifyReport, root: Path, split: str, split_ids: list[int], cams: list[int]
) -> None:
    id_files = "exp/train_id.txt or exp/val_id.txt" if split == "train" else "exp/test_id.txt"
    for pid in split_ids:
        have = {c for c in cams if _has_images(root, c, pid)}
        folders = ", ".join(person_dir(c, pid) for c in CAMERAS)
        if not have:
            report.add(
                root / ID_FILES["test" if split == "test" else "train"],
                f"id {pid} is listed in {id_files} but has no image: expected images in at "
                f"least one of {folders}",
            )
            continue
        if split == "train":
            for modality, mod_cams in (("RGB", RGB_CAMERAS), ("IR", IR_CAMERAS)):
                if not have & set(mod_cams):
                    report.add(
                        root / ID_FILES["train"],
                        f"training id {pid} has no {modality} image: expected one in "
                        + ", ".join(person_dir(c, pid) for c in mod_cams),
                    )
        else:
            if not have & set(QUERY_CAMERAS):
                report.notes.append(f"test id {pid} has no query (cam3/cam6) image")
            if not have & set(GALLERY_CAMERAS["all"]):
                report.notes.append(f"test id {pid} has no gallery (cam1/2/4/5) image")


def _sysu_release_notes(report: VerifyReport, splits: dict[str, list[int]], query: int) -> None:
    def images(modality: str) -> int:
        return sum(
            r.images
            for r in report.rows
            if (r.split, r.camera, r.modality) == ("train", "all", modality)
        )

    got = {
        "train ids": len(splits["train"]),
        "train rgb": images("rgb"),
        "train ir": images("ir"),
        "test ids": len(splits["test"]),
        "query": query,
    }
    for key, expected in RELEASE_COUNTS.items():
        if got[key] != expected:
            report.notes.append(f"{key}: {got[key]} (the full release has {expected:,})")


def _verify_official_split(
    report: VerifyReport, root: Path, test_ids: list[int], cams: list[int]
) -> None:
    path = root / DEFAULT_SPLIT_FILE
    if not path.is_file():
        report.notes.append(
            f"no {DEFAULT_SPLIT_FILE}: only the seeded gallery sampler is available "
            "(or pass --split-file to df2am protocol)"
        )
        return
    try:
        split = load_official_split(path)
    except DatasetError as exc:
        report.add(path, str(exc))
        return
    for cam in GALLERY_CAMERAS["all"]:
        if cam not in cams:
            continue
        for pid in test_ids:
            matrix = split.permutation(cam, pid)
            where = f"rand_perm_cam{{{cam}}}{{{pid}}}"
            if matrix is None:
                if _has_images(root, cam, pid):
                    report.add(
                        path,
                        f"{where} is missing but {person_dir(cam, pid)} has "
                        "images: expected a 10 x n permutation",
                    )
                continue
            if matrix.shape[0] < len(TRIALS):
                report.add(path, f"{where} has {matrix.shape[0]} rows: expected 10 (trials 0..9)")
                continue
            missing = sorted(
                {int(k) for k in matrix[:, : max(SHOTS)].ravel()}
                - {
                    int(n.split(".")[0])
                    for n in (list_images(root, cam, pid) or [])
                    if n.split(".")[0].isdigit()
                }
            )
            if missing:
                report.add(
                    path,
                    f"{where} points to image numbers {missing[:10]} that do not exist in "
                    f"{person_dir(cam, pid)}: expected the split file of this dataset copy",
                )


# ----------------------------------------------------------------------------- the dataset


class SysuMM01(Dataset):
    """SYSU-MM01: 6 cameras (RGB 1, 2, 4, 5; IR 3, 6), trials 0..9, one model for all."""

    name = "sysu"
    title = "SYSU-MM01"
    metric_rule = "sysu"
    trials = TRIALS
    trial_rule = "0..9 (random.seed(t) / row t of rand_perm_cam)"
    option_choices = {"mode": MODES, "sampler": SAMPLERS, "shots": SHOTS, "split_file": None}
    option_defaults = {"mode": "all", "sampler": "seeded", "shots": 1, "split_file": ""}
    layout_help = "folder that holds cam1 … cam6 and exp/"

    def describe(self, options: TestOptions, trials: list[int]) -> str:
        shots = "single-shot" if options.shots == 1 else f"{options.shots}-shot"
        return (
            f"SYSU-MM01 {options.mode}-search, {options.sampler} sampler, {shots}, "
            f"{len(trials)} trial{'s' if len(trials) != 1 else ''}"
        )

    def layout_problems(self, root: Path) -> list[Problem]:
        return layout_problems(Path(root))

    def train_records(self, root: str | Path, trial: int | None = None) -> list[ImageRecord]:
        return read_sysu_train(root)

    def test_split(
        self, root: str | Path, trial: int, options: TestOptions
    ) -> tuple[list[ImageRecord], list[ImageRecord]]:
        assert options.mode is not None and options.sampler is not None
        gallery = sysu_gallery(root, options.mode, trial, sampler=options.sampler,
                               shots=options.shots or 1, split_file=options.split_file or None)
        return sysu_query(root, options.mode), gallery

    def test_records(self, root: str | Path) -> list[ImageRecord]:
        """Every image of the test ids in all six cameras (ids ascending, cameras 1..6)."""
        root = check_layout(root)
        return [_record(cam, pid, name) for pid in read_ids(root, "test") for cam in CAMERAS
                for name in list_images(root, cam, pid) or []]

    def verify(self, root: Path) -> tuple[VerifyReport, list[Path]]:
        return _verify_sysu(Path(root))


SYSU = SysuMM01()
