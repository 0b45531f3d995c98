"""Exceptions the library raises for bad input.

Every error a user can cause (a wrong path, a typo in a config key, a corrupt file) is a
:class:`Df2amError` whose message names the file or key and what was expected. The command line
prints such errors as one plain line and exits non-zero; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import os
import re
import zipfile


class Df2amError(Exception):
    """Base class of every user-facing error raised by df2am."""


class ConfigError(Df2amError, ValueError):
    """A configuration file or override is invalid (unknown key, bad value, bad type)."""


class DatasetError(Df2amError):
    """A dataset folder, id file, split file or image is missing or malformed."""


class CheckpointError(Df2amError):
    """A checkpoint or weight file is missing, unreadable or does not match the model."""


class EvaluationError(Df2amError, ValueError):
    """Evaluation inputs are inconsistent (shapes, NaN distances, no valid query)."""


class OutputPathError(Df2amError):
    """An output path cannot be written: a file where a folder is needed (or the reverse), a
    parent folder that is a file or is not writable. Raised before the work starts."""


def unreadable_reason(path: str | os.PathLike[str], exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused ``path``, in one plain sentence — never
    torch's multi-line advice to load the file unsafely. Used by every reader of checkpoint
    files (:func:`df2am.train.checkpoint.load_checkpoint`, the AGW reference reader)::

        raise CheckpointError(f"{path}: not a df2am checkpoint: {unreadable_reason(path, exc)}")
    """
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not head:
        return "the file is empty (0 bytes)"
    needs_code = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    if needs_code:
        return (f"it holds a Python object ({needs_code.group(1)}) that only running code "
                "could rebuild, and df2am never runs code from a file (a checkpoint holds "
                "tensors and plain values)")
    if head.startswith(b"PK"):
        if zipfile.is_zipfile(os.fspath(path)):
            return "a zip archive that is not a PyTorch checkpoint (or is damaged inside)"
        return "a truncated or corrupt PyTorch file (its zip archive is incomplete)"
    if head[:1] == b"\x80":  # a pickle (protocol 2+)
        return "a Python pickle that is not a PyTorch checkpoint (or a truncated one)"
    return "not a PyTorch file (text or another format)"
