"""Decoded-image cache: every image decoded once, resized to (H, W), stored as uint8.

One ``.npy`` file per (record list, size) holds an array ``(N, H, W, 3)`` uint8 in record order
(IR images are stored as 3 channels, the gray value repeated, as the network expects). Later runs
open it with ``np.load(mmap_mode="r")``, so JPEG decoding leaves the training loop entirely and
workers share the page cache::

    from df2am.data.cache import load_images
    images = load_images(records, root, (256, 128), cache_dir="runs/x/cache")
    images.shape     # (len(records), 256, 128, 3), a read-only memmap

The file name carries a key, a SHA-1 of (absolute root, relative paths, file sizes and mtimes,
H, W): a dataset that changes in any of these gets a new file instead of stale pixels. Files are
written to a temporary name and renamed into place, so a crash never leaves a half-written cache
and two processes building the same cache at once both end with a valid file (the last rename
wins; in distributed training let rank 0 build it first). Decoding runs in a thread pool (Pillow
releases the GIL while decoding and resizing) with a tqdm progress bar showing the ETA.
``cache_dir="none"`` decodes into memory without touching the disk.

Decoding itself (format by content, every PIL mode converted faithfully to 8-bit RGB, errors
naming the file) is :func:`df2am.data.images.decode_rgb`, shared with ``df2am data verify``.
Paths may hold any characters, including bytes that are not UTF-8.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from df2am.data.images import decode_rgb, display_path
from df2am.data.records import ImageRecord
from df2am.errors import DatasetError

__all__ = ["cache_key", "cache_path", "load_images", "decode_resize", "NO_CACHE"]

log = logging.getLogger(__name__)

#: The ``cache_dir`` value that disables the disk cache.
NO_CACHE = "none"
# v2: faithful mode conversion (16-bit, alpha, palette transparency) in df2am.data.images.
_VERSION = b"df2am-image-cache-v2"


def _stat(root: Path, records: Sequence[ImageRecord]) -> list[tuple[int, int]]:
    out = []
    for rec in records:
        p = root / rec.path
        try:
            st = p.stat()
        except FileNotFoundError:
            raise DatasetError(
                f"image file not found: {display_path(p)} (record pid={rec.pid})"
            ) from None
        out.append((st.st_size, st.st_mtime_ns))
    return out


def cache_key(records: Sequence[ImageRecord], root: str | Path, size: tuple[int, int]) -> str:
    """SHA-1 hex digest of (absolute root, paths, file sizes + mtimes, H, W)."""
    root = Path(root).resolve()
    h = hashlib.sha1(_VERSION)
    # surrogateescape: file names that are not valid UTF-8 hash as their raw bytes (valid names
    # hash exactly as with a plain .encode()).
    h.update(f"{root}\0{size[0]}x{size[1]}\0{len(records)}\0".encode("utf-8", "surrogateescape"))
    for rec, (nbytes, mtime) in zip(records, _stat(root, records), strict=True):
        h.update(f"{rec.path}\0{nbytes}\0{mtime}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def cache_path(
    records: Sequence[ImageRecord], root: str | Path, size: tuple[int, int], cache_dir: str | Path
) -> Path:
    """Where the cache of these records at this size lives."""
    key = cache_key(records, root, size)
    return Path(cache_dir) / f"images_{size[0]}x{size[1]}_{len(records)}_{key[:20]}.npy"


def decode_resize(path: Path, size: tuple[int, int], *, geometry: str | None = None) -> np.ndarray:
    """Decode one image file to RGB (gray repeated for IR), resize to (H, W), uint8 HWC.

    The format is read from the content, and every mode is converted faithfully (16-bit gray
    scaled, alpha composited on black, palettes applied; rules in :mod:`df2am.data.images`).

    Raises :class:`DatasetError` naming the file when it is missing or not a decodable image.
    """
    return decode_rgb(path, size, geometry=geometry)


def _decode_into(
    out: np.ndarray, root: Path, records: Sequence[ImageRecord], size: tuple[int, int], workers: int
) -> None:
    def work(i: int) -> None:
        # Looked up at call time so tests can count decodes by patching the module attribute.
        out[i] = decode_resize(root / records[i].path, size)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = pool.map(work, range(len(records)))
        for _ in tqdm(
            futures,
            total=len(records),
            desc=f"decoding {len(records)} images to {size[0]}x{size[1]}",
            unit="img",
            disable=len(records) < 256 or not sys.stderr.isatty(),  # no bars in log files
            leave=False,
        ):
            pass


def load_images(
    records: Sequence[ImageRecord],
    root: str | Path,
    size: tuple[int, int],
    cache_dir: str | Path,
    *,
    workers: int | None = None,
) -> np.ndarray:
    """All images of ``records`` as a uint8 array ``(N, H, W, 3)`` in record order.

    Args:
        records: the images; their paths are relative to ``root``.
        root: dataset root.
        size: (H, W).
        cache_dir: folder of the disk cache (created if missing), or ``"none"`` for memory only.
        workers: decoding threads (default: the CPU count).

    Returns:
        A read-only memmap of the cache file, or an in-memory array when ``cache_dir="none"``.
    """
    root = Path(root)
    size = (int(size[0]), int(size[1]))
    workers = workers or os.cpu_count() or 1
    if str(cache_dir) == NO_CACHE:
        _stat(root, records)  # name a missing file before decoding anything
        out = np.empty((len(records), *size, 3), dtype=np.uint8)
        _decode_into(out, root, records, size, workers)
        return out

    if str(cache_dir) == "":
        raise DatasetError("data.cache_dir is empty: give a folder or 'none' (no disk cache)")
    target = cache_path(records, root, size, cache_dir)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        log.info("building image cache %s (%d images)", display_path(target), len(records))
        try:
            arr = np.lib.format.open_memmap(
                tmp, mode="w+", dtype=np.uint8, shape=(len(records), *size, 3)
            )
            _decode_into(arr, root, records, size, workers)
            arr.flush()
            del arr
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    else:
        log.info("using image cache %s", display_path(target))
    try:
        images = np.load(target, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise DatasetError(
            f"image cache {display_path(target)} is unreadable ({exc}); delete it to rebuild"
        ) from None
    if images.shape != (len(records), *size, 3) or images.dtype != np.uint8:
        raise DatasetError(
            f"image cache {display_path(target)} holds {images.shape} {images.dtype}, expected "
            f"{(len(records), *size, 3)} uint8; delete it to rebuild"
        )
    return images
