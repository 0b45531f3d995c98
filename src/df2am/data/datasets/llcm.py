"""LLCM (Zhang & Wang, CVPR 2023) read from its released layout (protocols.md, "LLCM").

The dataset root holds::

    idx/train_vis.txt, idx/train_nir.txt     lines "<relative path> <label>", labels 0-based,
                                             the same labels in both modalities
    idx/test_id.txt                          one line of comma-separated test ids (any order)
    test_vis/cam1 … cam9/<pid:04d>/*.jpg     visible test images
    test_nir/cam{1,2,4…9}/<pid:04d>/*.jpg    near-infrared test images (there is no NIR cam 3)

Usage::

    from df2am.data.datasets.llcm import LLCM

    train = LLCM.train_records("/data/LLCM")                  # 713 ids, vis + nir
    opts = LLCM.resolve_options(direction="i2v")             # the reference default
    query, gallery = LLCM.test_split("/data/LLCM", 0, opts)   # all NIR vs sampled VIS

Test ids and cameras come from the folder names we open (``test_nir/cam4/0012/`` → camera 4,
id 12), never from character offsets into the whole path (the reference's
``path.split('cam')[1][0]`` breaks when the root itself contains "cam"). Camera numbers are
shared by the two modalities (each LLCM camera films visible by day and NIR at night), which is
why the metric rule ("llcm") drops gallery images of the query's id *and* camera.

Lists follow the reference code (DEEN folder of ZYK100/LLCM, ``process_query_llcm`` /
``process_gallery_llcm``): test ids sorted (the reference sorts the ``%04d`` strings — the same
order for ids below 10,000), cameras in list order, files sorted by name. A gallery draws one
``random.choice`` per existing (id, camera) folder, in that order, from Python's ``random``
seeded with the trial (0..9), so galleries equal the reference's image for image. As for
SYSU-MM01, only image files are listed (the reference lists every file; the same on the release).

Directions (``eval.direction``):

* ``i2v`` — every NIR test image against the sampled visible gallery (the reference default,
  ``test_mode = [1, 2]``);
* ``v2i`` — every visible test image against a sampled NIR gallery: what "VIS→IR" promises;
* ``v2i_transposed`` — what the reference's VIS→IR mode computes (ZYK100/LLCM issue #35): it
  builds the visible query and a sampled NIR gallery, then evaluates the *transposed* distance
  matrix, so the sampled NIR images are the probes and every visible test image the gallery.
  Published "V→I" LLCM numbers use this form; the split returned here is already transposed
  (query = sampled NIR, gallery = all visible).

Training lines carry no camera: training records get camera 0 (cameras are not used in
training). Their ``pid`` is the label.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Hashable
from pathlib import Path

from df2am.data.datasets.base import (
    CountRow,
    Dataset,
    Problem,
    TestOptions,
    VerifyReport,
    list_image_names,
    paired_label_problems,
    parse_list_file,
)
from df2am.data.records import ImageRecord, Modality
from df2am.errors import ConfigError, DatasetError

logger = logging.getLogger(__name__)

TRIALS = range(10)
#: modality → (test folder, cameras in the reference's list order).
TEST_DIRS: dict[Modality, tuple[str, tuple[int, ...]]] = {
    "rgb": ("test_vis", (1, 2, 3, 4, 5, 6, 7, 8, 9)),
    "ir": ("test_nir", (1, 2, 4, 5, 6, 7, 8, 9)),
}
TRAIN_FILES: dict[Modality, str] = {"rgb": "idx/train_vis.txt", "ir": "idx/train_nir.txt"}
TEST_ID_FILE = "idx/test_id.txt"
DIRECTIONS: tuple[str, ...] = ("i2v", "v2i", "v2i_transposed")
#: Counts of the release (protocols.md), reported as notes when a copy differs.
RELEASE_COUNTS = {"ids": 1064, "train ids": 713, "images": 46767}


def parse_test_ids(path: Path) -> list[int]:
    """The ids of ``idx/test_id.txt`` (one line of comma-separated integers), sorted.

    Raises :class:`DatasetError` naming the file and line when it is missing, empty, has more
    than one non-blank line, or holds a token that is not a positive integer or is repeated.
    """
    if not path.is_file():
        raise DatasetError(f"missing {path}: expected one line of comma-separated test ids "
                           "(LLCM idx/test_id.txt)")
    lines = [(n, line) for n, line in
             enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
             if line.strip()]
    if not lines:
        raise DatasetError(f"{path} is empty: expected one line of comma-separated test ids")
    if len(lines) > 1:
        raise DatasetError(f"malformed {path}, line {lines[1][0]}: expected one line of "
                           f"comma-separated test ids, found {len(lines)} non-blank lines")
    number, line = lines[0]
    ids: list[int] = []
    for token in (t.strip() for t in line.split(",")):
        if not (token.isascii() and token.isdigit()) or int(token) <= 0:
            raise DatasetError(f"malformed {path}, line {number}: {token!r} is not a positive "
                               "integer id (expected e.g. 3,1,2)")
        if int(token) in ids:
            raise DatasetError(f"malformed {path}, line {number}: id {int(token)} is listed "
                               "twice")
        ids.append(int(token))
    return sorted(ids)


def id_line(path: Path) -> int:
    """The line number of the ids in ``idx/test_id.txt`` (its first non-blank line)."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return next((n for n, line in enumerate(lines, 1) if line.strip()), 1)


def person_dir(modality: Modality, cam: int, pid: int) -> str:
    """Relative folder of one (modality, camera, id), e.g. ``test_nir/cam4/0012``."""
    return f"{TEST_DIRS[modality][0]}/cam{cam}/{pid:04d}"


def _folders(root: Path, modality: Modality, ids: list[int]) -> list[tuple[int, int, list[str]]]:
    """``(pid, cam, sorted names)`` of every existing test folder of ``modality``, in the
    reference order (ids sorted, cameras in list order). An empty folder is an error: the
    reference's ``random.choice`` would crash on it."""
    out = []
    for pid in ids:
        for cam in TEST_DIRS[modality][1]:
            names = list_image_names(root / person_dir(modality, cam, pid))
            if names is None:
                continue
            if not names:
                raise DatasetError(f"folder {root / person_dir(modality, cam, pid)} holds no "
                                   "image: expected at least one (remove it or restore its "
                                   "images)")
            out.append((pid, cam, names))
    return out


def _record(modality: Modality, pid: int, cam: int, name: str) -> ImageRecord:
    return ImageRecord(f"{person_dir(modality, cam, pid)}/{name}", pid, cam, modality)


def missing_id_problems(root: Path, ids: list[int]) -> list[Problem]:
    """One problem per test id with no folder in any camera of either modality (the readers
    raise the first, ``data verify`` lists them all)."""
    path = root / TEST_ID_FILE
    return [Problem(str(path), f"line {id_line(path)}: id {pid} has no folder: expected "
                               f"test_vis/cam<N>/{pid:04d}/ or test_nir/cam<N>/{pid:04d}/")
            for pid in ids
            if not any((root / person_dir(m, c, pid)).is_dir()
                       for m, (_, cams) in TEST_DIRS.items() for c in cams)]


def _test_ids(root: Path) -> list[int]:
    """The test ids, each checked to have a folder in at least one camera."""
    ids = parse_test_ids(root / TEST_ID_FILE)
    problems = missing_id_problems(root, ids)
    if problems:
        raise DatasetError(str(problems[0]))
    return ids


def llcm_query(root: str | Path, modality: Modality) -> list[ImageRecord]:
    """Every test image of ``modality`` ("rgb" = visible, "ir" = NIR), in reference order."""
    root = LLCM.check_layout(root)
    return [_record(modality, pid, cam, name)
            for pid, cam, names in _folders(root, modality, _test_ids(root)) for name in names]


def llcm_gallery(root: str | Path, modality: Modality, trial: int) -> list[ImageRecord]:
    """One image per existing (id, camera) folder of ``modality``, drawn as the reference
    does for ``trial``: ``random.seed(trial)``, then ``random.choice(sorted files)``."""
    trial = LLCM.check_trial(trial)
    root = LLCM.check_layout(root)
    rng = random.Random(trial)  # the same stream as the reference's global random.seed(t)
    return [_record(modality, pid, cam, rng.choice(names))
            for pid, cam, names in _folders(root, modality, _test_ids(root))]


def read_llcm_train(root: str | Path) -> list[ImageRecord]:
    """Training images: ``idx/train_vis.txt`` then ``idx/train_nir.txt``, file order.

    Labels are the file's; each list's labels must be contiguous from 0 and the two lists
    must have the same labels. Every listed image must exist under ``root``.
    """
    root = LLCM.check_layout(root)
    records: dict[Modality, list[ImageRecord]] = {}
    for modality, rel in TRAIN_FILES.items():
        path = root / rel
        records[modality] = []
        for line_rel, label in parse_list_file(path, f"LLCM {rel}"):
            if not (root / line_rel).is_file():
                raise DatasetError(f"{path} lists {line_rel}, but {root / line_rel} does not "
                                   "exist: expected paths relative to the LLCM root")
            records[modality].append(ImageRecord(line_rel, label, 0, modality, label))
    problems = paired_label_problems(
        root / TRAIN_FILES["rgb"], {r.label for r in records["rgb"]},
        root / TRAIN_FILES["ir"], {r.label for r in records["ir"]})
    if problems:
        raise DatasetError(str(problems[0]))
    logger.info("LLCM train: %d ids, %d visible + %d NIR images",
                len({r.label for r in records["rgb"]}), len(records["rgb"]), len(records["ir"]))
    return records["rgb"] + records["ir"]


def layout_problems(root: Path) -> list[Problem]:
    """Problems of the top-level layout: ``idx/`` with its three files, ``test_vis/``,
    ``test_nir/``."""
    if not root.is_dir():
        return [Problem(str(root), "is not a directory: expected the unzipped LLCM folder that "
                                   "holds idx/, test_vis/ and test_nir/")]
    problems = []
    missing = [d for d in ("idx", "test_vis", "test_nir") if not (root / d).is_dir()]
    if missing:
        problems.append(Problem(str(root), f"lacks {', '.join(d + '/' for d in missing)}: "
                                           "expected idx/, test_vis/cam1..9/ and test_nir/"))
    for rel in (*TRAIN_FILES.values(), TEST_ID_FILE):
        if (root / "idx").is_dir() and not (root / rel).is_file():
            problems.append(Problem(str(root), f"lacks {rel}: expected the idx files of the "
                                               "LLCM release"))
    return problems


# ------------------------------------------------------------------------------ verification


def _verify(root: Path) -> tuple[VerifyReport, list[Path]]:
    report = VerifyReport("llcm", root)
    report.problems.extend(layout_problems(root))
    if not root.is_dir():
        return report, []
    images: list[Path] = []
    labels: dict[Modality, set[int]] = {}
    for modality, rel in TRAIN_FILES.items():
        try:
            entries = parse_list_file(root / rel, f"LLCM {rel}")
        except DatasetError as exc:
            if (root / rel).is_file():  # a missing file is already a layout problem
                report.add(root / rel, str(exc))
            continue
        for line_rel, _ in entries:
            if (root / line_rel).is_file():
                images.append(root / line_rel)
            else:
                report.add(root / line_rel, f"listed in {rel} but missing: expected the image "
                                            "at this path relative to the LLCM root")
        labels[modality] = {label for _, label in entries}
        report.rows.append(CountRow("train", "all", modality, len(labels[modality]),
                                    len(entries)))
    if len(labels) == 2:
        report.problems.extend(paired_label_problems(
            root / TRAIN_FILES["rgb"], labels["rgb"], root / TRAIN_FILES["ir"], labels["ir"]))
    try:
        ids = parse_test_ids(root / TEST_ID_FILE)
    except DatasetError as exc:
        if (root / TEST_ID_FILE).is_file():
            report.add(root / TEST_ID_FILE, str(exc))
        ids = []
    _verify_test(report, root, ids, images)
    total = len(images)
    if len(labels) == 2 and ids:
        got = {"ids": len(labels["rgb"]) + len(ids), "train ids": len(labels["rgb"]),
               "images": total}
        report.notes += [f"{k}: {got[k]:,} (the release has {v:,})"
                         for k, v in RELEASE_COUNTS.items() if got[k] != v]
    return report, images


def _verify_test(report: VerifyReport, root: Path, ids: list[int], images: list[Path]) -> None:
    for modality, (folder, cams) in TEST_DIRS.items():
        for cam in cams:
            n_ids = n_images = 0
            for pid in ids:
                names = list_image_names(root / person_dir(modality, cam, pid))
                if names is None:
                    continue
                if not names:
                    report.add(root / person_dir(modality, cam, pid),
                               "empty id folder: expected at least one image (the gallery "
                               "sampler draws one per existing folder)")
                    continue
                n_ids, n_images = n_ids + 1, n_images + len(names)
                images.extend(root / person_dir(modality, cam, pid) / n for n in names)
            report.rows.append(CountRow("test", f"cam{cam}", modality, n_ids, n_images))
        on_disk = sorted(p.name for p in (root / folder).glob("cam*/*") if p.is_dir())
        strays = sorted({int(n) for n in on_disk if n.isdigit()} - set(ids))
        if strays:
            report.notes.append(f"{folder}: folders of ids not in {TEST_ID_FILE}: {strays[:10]}")
    report.problems.extend(missing_id_problems(root, ids))


# ----------------------------------------------------------------------------- the dataset


class Llcm(Dataset):
    """LLCM: 9 cameras filming visible and NIR, trials 0..9, one model for all trials."""

    name = "llcm"
    title = "LLCM"
    metric_rule = "llcm"
    trials = TRIALS
    trial_rule = "0..9 (random.seed(t) of the reference LLCM test code)"
    option_choices = {"direction": DIRECTIONS}
    option_defaults = {"direction": "i2v"}
    direction_help = {
        "i2v": "all NIR test images against a sampled visible gallery (reference default)",
        "v2i": "all visible test images against a sampled NIR gallery",
        "v2i_transposed": "the reference's VIS→IR: sampled NIR probes against all visible "
                          "images (published V→I numbers)",
    }
    layout_help = "folder that holds idx/, test_vis/ and test_nir/"

    def identity_key(self, record: ImageRecord) -> Hashable | None:
        # Training lines carry a label only (no id of the release's numbering) to compare.
        return None if record.label >= 0 else record.pid

    def describe(self, options: TestOptions, trials: list[int]) -> str:
        arrow = {"i2v": "infrared→visible", "v2i": "visible→infrared",
                 "v2i_transposed": "visible→infrared (reference's transposed form)"}
        n = len(trials)
        return f"LLCM {arrow[options.direction or 'i2v']}, {n} trial{'s' if n != 1 else ''}"

    def layout_problems(self, root: Path) -> list[Problem]:
        return layout_problems(Path(root))

    def train_records(self, root: str | Path, trial: int | None = None) -> list[ImageRecord]:
        return read_llcm_train(root)

    def test_split(
        self, root: str | Path, trial: int, options: TestOptions
    ) -> tuple[list[ImageRecord], list[ImageRecord]]:
        direction = options.direction or "i2v"
        if direction not in DIRECTIONS:  # options not from resolve_options (e.g. RegDB's)
            raise ConfigError(f"eval.direction: {self.title} expects one of {list(DIRECTIONS)}, "
                              f"got {direction!r}")
        if direction == "i2v":
            return llcm_query(root, "ir"), llcm_gallery(root, "rgb", trial)
        if direction == "v2i":
            return llcm_query(root, "rgb"), llcm_gallery(root, "ir", trial)
        return llcm_gallery(root, "ir", trial), llcm_query(root, "rgb")

    def test_records(self, root: str | Path) -> list[ImageRecord]:
        return llcm_query(root, "rgb") + llcm_query(root, "ir")

    def verify(self, root: Path) -> tuple[VerifyReport, list[Path]]:
        return _verify(Path(root))


LLCM = Llcm()
