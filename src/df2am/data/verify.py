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
from pathlib import Path

from df2am.data.datasets import get_dataset
from df2am.data.datasets.base import CountRow, Problem, VerifyReport

logger = logging.getLogger(__name__)

__all__ = ["CountRow", "Problem", "VerifyReport", "decode_error", "verify_dataset"]


def verify_dataset(dataset: str, root: str | Path, *, workers: int | None = None) -> VerifyReport:
    """Check ``root`` as ``dataset`` (a name of :data:`df2am.data.datasets.DATASETS`) and
    decode every image the dataset's checks list."""
    report, images = get_dataset(dataset).verify(Path(root))
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
