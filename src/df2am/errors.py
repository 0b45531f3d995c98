"""Exceptions the library raises for bad input.

Every error a user can cause (a wrong path, a typo in a config key, a corrupt file) is a
:class:`Df2amError` whose message names the file or key and what was expected. The command line
prints such errors as one plain line and exits non-zero; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


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
