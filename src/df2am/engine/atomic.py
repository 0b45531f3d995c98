"""Write a file so that a reader (or a crash) never sees half of it.

::

    from df2am.engine.atomic import atomic_write, atomic_path

    atomic_write(path, lambda fh: fh.write(data))          # a binary file handle
    with atomic_path(path) as tmp:                         # for writers that take a path
        faiss.write_index(index, str(tmp))

Both write a hidden temporary file beside ``path`` and ``os.replace`` it onto ``path`` (atomic on
POSIX within one file system); on an error the temporary file is removed and ``path`` keeps
its previous content. (The engine's older writers — checkpoints, results.json — still carry
their own copies of this; issue 14 folds them in.)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path to write; moved onto ``path`` when the block ends without error."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write`` with a binary file handle, then move the result onto ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        write(fh)
