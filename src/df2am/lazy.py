"""Lazy re-exports for a room's ``__init__``: ``from df2am.assess import evaluate_model`` works,
but ``import df2am.assess`` imports nothing heavy (torch, torchvision) until a name is used.

Usage, at the end of a package's ``__init__.py``::

    _EXPORTS = {"evaluate_model": "df2am.assess.evaluator", ...}
    __all__ = sorted(_EXPORTS)
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, str]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` (PEP 562) of ``package``: a name of
    ``exports`` (name → module that defines it) is imported on first use and then cached in
    the package's namespace."""

    def get(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        vars(sys.modules[package])[name] = value
        return value

    def names() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return get, names
