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

Every image of the listed ids is decoded exactly as training decodes it
(:func:`df2am.data.images.open_rgb`: format by content, full ``load()`` so truncated files are
rejected, every mode converted to 8-bit RGB or rejected naming the mode) on a small thread pool:
PIL releases the GIL while decoding. A file whose content is not what its extension says (PNG
data in a ``.jpg``) decodes by content, so it is a *note* naming the file, not a problem.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from df2am.data.datasets import get_dataset
from df2am.data.datasets.base import CountRow, Problem, VerifyReport
from df2am.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["CountRow", "Problem", "VerifyReport", "decode_error", "verify_dataset"]


def verify_dataset(dataset: str, root: str | Path, *, workers: int | None = None) -> VerifyReport:
    """Check ``root`` as ``dataset`` (a name of :data:`df2am.data.datasets.DATASETS`) and
    decode every image the dataset's checks list."""
    report, images = get_dataset(dataset).verify(Path(root))
    _decode_all(report, images, workers)
    return report


def decode_error(path: Path) -> str | None:
    """``None`` if ``path`` decodes as training decodes it, else the reason it does not."""
    return _check_image(path)[0]


#: Extension mismatches named one by one in the notes; the rest are counted.
_MAX_NAMED_MISMATCHES = 20


def _check_image(path: Path) -> tuple[str | None, str | None]:
    """``(error, note)``: why ``path`` does not decode, and an extension-mismatch note."""
    from df2am.data.images import ImageDecodeError, extension_mismatch, open_rgb

    try:
        _, fmt = open_rgb(path)
    except ImageDecodeError as exc:
        return exc.reason, None
    return None, extension_mismatch(path, fmt)


def _decode_all(report: VerifyReport, images: Iterable[Path], workers: int | None) -> None:
    from PIL import ImageFile

    from df2am.data.images import display_path

    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone in this process told PIL to pad truncated files silently; say so rather
        # than report "no problems" for files we could not check.
        report.notes.append(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set in this process: truncated images "
            "are not detected"
        )
    paths = sorted(set(images))
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1 decoding threads, got {workers}")
    workers = workers or min(8, os.cpu_count() or 2)
    logger.info("decoding %d images with %d threads", len(paths), workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(_check_image, paths, chunksize=64))
    mismatches = []
    for path, (error, note) in zip(paths, results, strict=True):
        if error is not None:
            report.add(
                display_path(path),
                f"image does not decode ({error}): expected a complete image file",
            )
        elif note is not None:
            mismatches.append(note)
    for note in mismatches[:_MAX_NAMED_MISMATCHES]:
        report.notes.append(f"{note}: harmless for training, but check where the file came from")
    if len(mismatches) > _MAX_NAMED_MISMATCHES:
        report.notes.append(
            f"... and {len(mismatches) - _MAX_NAMED_MISMATCHES} more images whose content "
            "format differs from their extension"
        )
    report.decoded = len(paths) - sum(error is not None for error, _ in results)
