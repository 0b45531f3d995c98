"""One training process per run directory: the lock file ``RUN/.lock``.

::

    from df2am.train.runlock import run_lock

    with run_lock(run_dir):          # RunLockedError if another live process holds it
        ...                          # train; the lock is removed on exit, also on errors

The lock file is created atomically (``O_CREAT | O_EXCL``) and holds one JSON line
``{"pid", "host", "started"}`` of its owner. A second process finds it and

* refuses with :class:`RunLockedError` naming the owner (pid, host, start time) when the owner is
  alive — on this host ``os.kill(pid, 0)`` says so; a lock of another host (a shared file
  system) is always taken as live, as it cannot be checked from here;
* otherwise (the owner's pid is gone: a killed run) reports the stale lock with a warning and
  replaces it.

A lock file that is empty or unparsable is a writer caught between create and write when it is
younger than :data:`FRESH_SECONDS` (refused), else debris of a crash (replaced).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from df2am.errors import Df2amError

__all__ = ["LOCK_NAME", "RunLockedError", "acquire", "release", "run_lock", "read_lock"]

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"
#: An unreadable lock younger than this is taken as being written right now.
FRESH_SECONDS = 10.0


class RunLockedError(Df2amError):
    """Another live process is training in the run directory."""


def read_lock(path: Path) -> dict[str, Any] | None:
    """The owner recorded in a lock file, or None when it is empty/garbled/gone."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("pid"), int):
        return None
    return doc


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError:
        return False
    # A zombie (exited, not yet reaped) is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            if fh.read().rsplit(")", 1)[-1].split()[0] == "Z":
                return False
    except (OSError, IndexError):
        pass
    return True


def _describe(owner: dict[str, Any]) -> str:
    started = owner.get("started")
    when = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
            if isinstance(started, (int, float)) else "an unknown time")
    return f"pid {owner['pid']} on host {owner.get('host', '?')}, started {when}"


def _create(path: Path) -> bool:
    """Create the lock file exclusively with our owner line; False if it exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    doc = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    try:
        os.write(fd, (json.dumps(doc) + "\n").encode("utf-8"))
    finally:
        os.close(fd)
    return True


def acquire(run_dir: str | os.PathLike[str]) -> Path:
    """Take ``run_dir/.lock`` (creating ``run_dir``); the lock file's path.

    Raises:
        RunLockedError: a live process (or one on another host) holds the lock.
        Df2amError: the lock cannot be created (permissions, read-only file system, ...).
    """
    run_dir = Path(run_dir)
    path = run_dir / LOCK_NAME
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if _create(path):
                return path
            owner = read_lock(path)
            if owner is None:
                try:
                    age = time.time() - path.stat().st_mtime
                except FileNotFoundError:
                    continue  # released meanwhile: try again
                if age < FRESH_SECONDS:
                    raise RunLockedError(
                        f"{run_dir} is being started by another process (lock file {path} "
                        "was just created); wait for it or choose another --out"
                    )
                logger.warning("%s: replacing an unreadable lock file (%.0f s old)", path, age)
            elif owner.get("host") != socket.gethostname() or _pid_alive(int(owner["pid"])):
                raise RunLockedError(
                    f"{run_dir} is in use by another training process ({_describe(owner)}); "
                    f"wait for it to end, or delete {path} if that process is gone"
                )
            else:
                logger.warning(
                    "%s: stale lock of a process that is gone (%s); replacing it",
                    path, _describe(owner),
                )
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    except OSError as exc:
        raise Df2amError(
            f"cannot lock run directory {run_dir}: {exc.strerror or exc} "
            f"({errno.errorcode.get(exc.errno or 0, 'error')}) at {exc.filename or path}"
        ) from None
    raise RunLockedError(f"{run_dir}: could not take the lock {path} (another process keeps "
                    "re-creating it)")


def release(path: Path) -> None:
    """Remove a lock taken by :func:`acquire` (only if it is still ours)."""
    owner = read_lock(path)
    if owner is not None and owner.get("pid") != os.getpid():
        logger.warning("%s: lock now owned by %s; leaving it", path, _describe(owner))
        return
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """:func:`acquire` for the block, :func:`release` at its end (also on exceptions)."""
    path = acquire(run_dir)
    try:
        yield path
    finally:
        release(path)
