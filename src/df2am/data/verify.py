"""Check a downloaded dataset before training on it: layout, id files, counts, every image.

Usage::

    from df2am.data.verify import verify_dataset

    report = verify_dataset("sysu", "/data/SYSU-MM01")
    print(report.format())          # summary table, then notes and problems
    if not report.ok:
        for problem in report.problems:
            print(problem.path, problem.message)

Unlike the readers, which stop at the first problem, the verifier collects *every* problem
(missing folders or id files, malformed lines, ids listed without images, idx lines pointing
to missing files, images that do not decode) so a user can fix a copy in one pass. Each
:class:`Problem` names the file or folder and what was expected. ``df2am data verify`` prints
the report and exits 1 when there is any problem.

Every image of the listed ids is decoded with PIL (``Image.open(...).load()``, which rejects
truncated files) on a small thread pool: PIL releases the GIL while decoding.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from df2am.data import regdb, sysu
from df2am.errors import ConfigError, DatasetError

logger = logging.getLogger(__name__)

#: Counts of the full releases (protocols.md), reported as notes when a copy differs.
SYSU_RELEASE = {
    "train ids": 395,
    "train rgb": 22258,
    "train ir": 11909,
    "test ids": 96,
    "query": 3803,
}
REGDB_RELEASE = {"images per modality": 4120, "ids": 412}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset copy: the file or folder, and what was expected."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class CountRow:
    """One line of the summary table."""

    split: str
    camera: str
    modality: str
    ids: int
    images: int


@dataclass
class VerifyReport:
    """What :func:`verify_dataset` found. ``ok`` is true when there is no problem."""

    dataset: str
    root: Path
    rows: list[CountRow] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    decoded: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, path: str | Path, message: str) -> None:
        self.problems.append(Problem(str(path), message))

    def format(self) -> str:
        """The summary table, then notes, then every problem (one per line)."""
        header = ("split", "camera", "modality", "ids", "images")
        body = [(r.split, r.camera, r.modality, str(r.ids), str(r.images)) for r in self.rows]
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

        def line(cells: tuple[str, ...]) -> str:
            return "  ".join(
                c.rjust(w) if i >= 3 else c.ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()

        out = [f"{self.dataset} at {self.root}", line(header), line(tuple("-" * w for w in widths))]
        out += [line(row) for row in body]
        out.append(f"decoded images: {self.decoded}")
        out += [f"note: {n}" for n in self.notes]
        if self.problems:
            out.append(f"{len(self.problems)} problem(s):")
            out += [f"  {p}" for p in self.problems]
        else:
            out.append("no problems found")
        return "\n".join(out)


def verify_dataset(dataset: str, root: str | Path, *, workers: int | None = None) -> VerifyReport:
    """Check ``root`` as ``dataset`` (``"sysu"`` or ``"regdb"``) and decode every image."""
    root = Path(root)
    if dataset == "sysu":
        report, images = _verify_sysu(root)
    elif dataset == "regdb":
        report, images = _verify_regdb(root)
    else:
        raise ConfigError(f"dataset must be one of ['sysu', 'regdb'], got {dataset!r}")
    _decode_all(report, images, workers)
    return report


def decode_error(path: Path) -> str | None:
    """``None`` if PIL fully decodes ``path``, else the reason it does not."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ...
        return f"{type(exc).__name__}: {exc}"
    return None


def _decode_all(report: VerifyReport, images: Iterable[Path], workers: int | None) -> None:
    from PIL import ImageFile

    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone in this process told PIL to pad truncated files silently; say so rather
        # than report "no problems" for files we could not check.
        report.notes.append(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set in this process: truncated images "
            "are not detected"
        )
    paths = sorted(set(images))
    workers = workers or min(8, os.cpu_count() or 2)
    logger.info("decoding %d images with %d threads", len(paths), workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        errors = list(pool.map(decode_error, paths, chunksize=64))
    for path, error in zip(paths, errors, strict=True):
        if error is not None:
            report.add(path, f"image does not decode ({error}): expected a complete image file")
    report.decoded = len(paths) - sum(e is not None for e in errors)


# --------------------------------------------------------------------------------- SYSU-MM01


def _verify_sysu(root: Path) -> tuple[VerifyReport, list[Path]]:
    report = VerifyReport("sysu", root)
    images: list[Path] = []
    if not root.is_dir():
        report.add(root, "not a directory: expected the SYSU-MM01 folder holding cam1 … cam6")
        return report, images
    cams = [c for c in sysu.CAMERAS if (root / f"cam{c}").is_dir()]
    for cam in sorted(set(sysu.CAMERAS) - set(cams)):
        report.add(root / f"cam{cam}", "missing camera folder: expected cam1 … cam6")
    ids: dict[str, list[int]] = {}
    for split, rel in sysu.ID_FILES.items():
        try:
            ids[split] = sorted(sysu.parse_id_file(root / rel))
        except DatasetError as exc:
            report.add(root / rel, str(exc))
    splits = {
        "train": sorted(set(ids.get("train", [])) | set(ids.get("val", []))),
        "test": ids.get("test", []),
    }
    leaked = sorted(set(splits["train"]) & set(splits["test"]))
    if leaked:
        report.add(
            root / sysu.ID_FILES["test"],
            f"ids {leaked[:20]} are also training ids: expected disjoint train/val and test ids",
        )

    for split, split_ids in splits.items():
        per_cam: dict[int, tuple[int, int]] = {}
        for cam in sysu.CAMERAS:
            n_ids = n_images = 0
            for pid in split_ids:
                names = sysu.list_images(root, cam, pid) if cam in cams else None
                if names is None:
                    continue
                if not names:
                    report.add(
                        root / sysu.person_dir(cam, pid),
                        "empty id folder: expected at least one image (the seeded gallery "
                        "sampler draws one per existing folder)",
                    )
                    continue
                n_ids += 1
                n_images += len(names)
                images.extend(root / sysu.person_dir(cam, pid) / n for n in names)
            per_cam[cam] = (n_ids, n_images)
            report.rows.append(CountRow(split, f"cam{cam}", sysu.modality_of(cam), n_ids, n_images))
        for modality, mod_cams in (("rgb", sysu.RGB_CAMERAS), ("ir", sysu.IR_CAMERAS)):
            n_ids = sum(
                any(_has_images(root, c, pid) for c in mod_cams if c in cams) for pid in split_ids
            )
            n_images = sum(per_cam[c][1] for c in mod_cams)
            report.rows.append(CountRow(split, "all", modality, n_ids, n_images))
        _check_sysu_ids(report, root, split, split_ids, cams)

    query = sum(r.images for r in report.rows if r.split == "test" and r.camera in ("cam3", "cam6"))
    query_ids = sum(
        any(_has_images(root, c, pid) for c in sysu.QUERY_CAMERAS if c in cams)
        for pid in splits["test"]
    )
    report.rows.append(CountRow("query", "cam3+cam6", "ir", query_ids, query))
    _sysu_release_notes(report, splits, query)
    _verify_official_split(report, root, splits["test"], cams)
    return report, images


def _has_images(root: Path, cam: int, pid: int) -> bool:
    return bool(sysu.list_images(root, cam, pid))


def _check_sysu_ids(
    report: VerifyReport, root: Path, split: str, split_ids: list[int], cams: list[int]
) -> None:
    id_files = "exp/train_id.txt or exp/val_id.txt" if split == "train" else "exp/test_id.txt"
    for pid in split_ids:
        have = {c for c in cams if _has_images(root, c, pid)}
        folders = ", ".join(sysu.person_dir(c, pid) for c in sysu.CAMERAS)
        if not have:
            report.add(
                root / sysu.ID_FILES["test" if split == "test" else "train"],
                f"id {pid} is listed in {id_files} but has no image: expected images in at "
                f"least one of {folders}",
            )
            continue
        if split == "train":
            for modality, mod_cams in (("RGB", sysu.RGB_CAMERAS), ("IR", sysu.IR_CAMERAS)):
                if not have & set(mod_cams):
                    report.add(
                        root / sysu.ID_FILES["train"],
                        f"training id {pid} has no {modality} image: expected one in "
                        + ", ".join(sysu.person_dir(c, pid) for c in mod_cams),
                    )
        else:
            if not have & set(sysu.QUERY_CAMERAS):
                report.notes.append(f"test id {pid} has no query (cam3/cam6) image")
            if not have & set(sysu.GALLERY_CAMERAS["all"]):
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
    for key, expected in SYSU_RELEASE.items():
        if got[key] != expected:
            report.notes.append(f"{key}: {got[key]} (the full release has {expected:,})")


def _verify_official_split(
    report: VerifyReport, root: Path, test_ids: list[int], cams: list[int]
) -> None:
    path = root / sysu.DEFAULT_SPLIT_FILE
    if not path.is_file():
        report.notes.append(
            f"no {sysu.DEFAULT_SPLIT_FILE}: only the seeded gallery sampler is available "
            "(or pass --split-file to df2am protocol)"
        )
        return
    try:
        split = sysu.load_official_split(path)
    except DatasetError as exc:
        report.add(path, str(exc))
        return
    for cam in sysu.GALLERY_CAMERAS["all"]:
        if cam not in cams:
            continue
        for pid in test_ids:
            matrix = split.permutation(cam, pid)
            where = f"rand_perm_cam{{{cam}}}{{{pid}}}"
            if matrix is None:
                if _has_images(root, cam, pid):
                    report.add(
                        path,
                        f"{where} is missing but {sysu.person_dir(cam, pid)} has "
                        "images: expected a 10 x n permutation",
                    )
                continue
            if matrix.shape[0] < len(sysu.TRIALS):
                report.add(path, f"{where} has {matrix.shape[0]} rows: expected 10 (trials 0..9)")
                continue
            missing = sorted(
                {int(k) for k in matrix[:, : max(sysu.SHOTS)].ravel()}
                - {
                    int(n.split(".")[0])
                    for n in (sysu.list_images(root, cam, pid) or [])
                    if n.split(".")[0].isdigit()
                }
            )
            if missing:
                report.add(
                    path,
                    f"{where} points to image numbers {missing[:10]} that do not exist in "
                    f"{sysu.person_dir(cam, pid)}: expected the split file of this dataset copy",
                )


# -------------------------------------------------------------------------------------- RegDB


def _verify_regdb(root: Path) -> tuple[VerifyReport, list[Path]]:
    report = VerifyReport("regdb", root)
    images: set[Path] = set()
    if not root.is_dir():
        report.add(
            root, "not a directory: expected the RegDB folder holding Visible/, Thermal/, idx/"
        )
        return report, []
    for folder in regdb.LAYOUT_DIRS:
        if not (root / folder).is_dir():
            report.add(root / folder, "missing folder: expected Visible/, Thermal/ and idx/")
    if not (root / "idx").is_dir():
        return report, []
    for trial in regdb.TRIALS:
        labels: dict[tuple[str, str], set[int]] = {}
        folders: dict[str, set[str]] = {"train": set(), "test": set()}
        for split in regdb.SPLITS:
            for modality, (cam, _) in regdb.MODALITIES.items():
                path = regdb.idx_file(root, split, modality, trial)
                try:
                    entries = regdb.parse_idx_file(path)
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
                regdb.idx_file(root, "test", "visible", trial),
                f"trial {trial}: folders {shared[:5]} appear in both train and test idx "
                "files: expected disjoint identities",
            )
    for folder, modality in (("Visible", "visible"), ("Thermal", "thermal")):
        if (root / folder).is_dir():
            on_disk = [
                p
                for p in (root / folder).rglob("*")
                if p.is_file() and p.suffix.lower() in sysu.IMAGE_SUFFIXES
            ]
            pids = {p.parent for p in on_disk}
            report.rows.append(CountRow("on disk", folder, modality, len(pids), len(on_disk)))
            if len(on_disk) != REGDB_RELEASE["images per modality"]:
                report.notes.append(
                    f"{folder}: {len(on_disk)} images (the full release has "
                    f"{REGDB_RELEASE['images per modality']:,})"
                )
    return report, sorted(images)


def _check_regdb_labels(
    report: VerifyReport, root: Path, trial: int, labels: dict[tuple[str, str], set[int]]
) -> None:
    for modality in regdb.MODALITIES:
        found = labels.get(("train", modality))
        if found is not None and sorted(found) != list(range(len(found))):
            report.add(
                regdb.idx_file(root, "train", modality, trial),
                "training labels are not contiguous from 0: missing "
                f"{sorted(set(range(max(found) + 1)) - found)[:10]}",
            )
    for split in regdb.SPLITS:
        vis, th = labels.get((split, "visible")), labels.get((split, "thermal"))
        if vis is not None and th is not None and vis != th:
            report.add(
                regdb.idx_file(root, split, "thermal", trial),
                f"labels differ from {regdb.idx_file(root, split, 'visible', trial).name}: "
                f"only visible {sorted(vis - th)[:10]}, only thermal {sorted(th - vis)[:10]};"
                " expected the same identities in both modalities",
            )
