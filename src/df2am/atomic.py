"""Write a file so that a reader (or a crash) never sees half of it.

::

    from df2am.atomic import atomic_write, atomic_path

    atomic_write(path, lambda fh: fh.write(data))          # a binary file handle
    with atomic_path(path) as tmp:                         # for writers that take a path
        faiss.write_index(index, str(tmp))

Both write a hidden temporary file beside ``path`` and ``os.replace`` it onto ``path`` (atomic on
POSIX within one file system); on an error the temporary file is removed and ``path`` keeps
its previous content. Every writer of df2am goes through here: checkpoints
(:func:`df2am.train.checkpoint.save_checkpoint`, with ``fsync=True``), ``results.json`` and
``metrics.json`` (:mod:`df2am.assess.results`), features and indexes.

``fsync=True`` also flushes the data to disk before the rename and fsyncs the directory after
it, so that the new content (not only the name) survives a power loss.

The temporary file is ``.<name>.tmp``; one left by a killed writer is replaced by the next
write (the trainer also removes them from a run directory when it starts:
:data:`TMP_GLOB`). Files get the user's normal permissions (``0666`` less the umask).

:func:`check_output` is the one check of an output path *before* the work that produces it
(``df2am extract --out``, ``export --onnx``, ``eval --out``, ``search --json``, ...): a file
where a folder is needed, a folder where a file is needed, or a parent that cannot be written
is an :class:`~df2am.errors.OutputPathError` naming the option and the path::

    check_output("out/gallery.npy", what="--out")          # a file to write
    check_output("runs/x/eval", what="--out", folder=True)  # a folder to create or fill
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from df2am.errors import OutputPathError

#: The pattern of the temporary files written here (for cleaning up after a crash).
TMP_GLOB = ".*.tmp"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, fsync: bool = False) -> Iterator[Path]:
    """A temporary path to write; moved onto ``path`` when the block ends without error
    (``fsync``: the file is fsync'ed before the rename, the directory after it)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    # A temp file a killed writer left would keep its mode; start from a new file, so the
    # result has the umask's permissions (open() → 0666 & ~umask).
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        yield tmp
        if fsync:
            _fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    if fsync:
        _fsync_dir(path.parent)


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any], *, fsync: bool = False
) -> None:
    """Call ``write`` with a binary file handle, then move the result onto ``path``."""
    with atomic_path(path, fsync=fsync) as tmp, open(tmp, "wb") as fh:
        write(fh)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """``path.write_text(text)`` (UTF-8), atomically."""
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def check_output(path: str | os.PathLike[str], *, what: str, folder: bool = False) -> Path:
    """Refuse an output path that cannot be written, before any work; return it as a Path.

    ``folder=False``: ``path`` is a file to (over)write: it must not be a folder, and its
    nearest existing ancestor must be a writable folder (parents are created later).
    ``folder=True``: ``path`` is a folder to create or write into: it must not be a file, and
    it (or its nearest existing ancestor) must be a writable folder.

    Raises:
        OutputPathError: naming ``what`` (the option, e.g. ``--out``) and the path.
    """
    p = Path(path)
    if p.exists():
        if folder and not p.is_dir():
            raise OutputPathError(f"{what} {p}: an existing file, but a folder is needed")
        if not folder and p.is_dir():
            raise OutputPathError(f"{what} {p}: an existing folder, but a file is needed")
    anc = p if folder and p.is_dir() else p.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise OutputPathError(
            f"{what} {p}: {anc} is a file, so the folder {p if folder else p.parent} cannot "
            "be created")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what} {p}: the folder {anc} is not writable")
    return p


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(dfd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dfd)
