"""The deprecation shim's one tool: an old module name that forwards to where its names went.

``df2am.engine`` used to hold four jobs; they moved to ``df2am.train``,
``df2am.assess``, ``df2am.deploy`` and ``df2am.experiments`` (docs/architecture.md). For one
release every old module stays importable: importing it warns (``DeprecationWarning`` naming
the new place) and turns it into a :class:`MovedModule`, which reads each name from the module
that owns it now and sets it there. Each forwarded name is a property of the shim's own class,
so ``monkeypatch.setattr(old_module, name, value)`` changes what the moved code uses and its
undo restores the real value (pytest treats a data descriptor's old value as the value to put
back).
"""

from __future__ import annotations

import importlib
import sys
import warnings
from types import ModuleType
from typing import Any

__all__ = ["MovedModule", "moved", "warn_moved"]

#: The tail of every deprecation message.
GOES = "the old name goes in the next release"


def warn_moved(old: str, new: str, *, stacklevel: int = 3) -> None:
    """``DeprecationWarning("<old> moved to <new>; the old name goes in the next release")``."""
    warnings.warn(f"{old} moved to {new}; {GOES}", DeprecationWarning, stacklevel=stacklevel)


class MovedModule(ModuleType):
    """An old module whose names live in other modules now (``moved_to``, searched in order;
    ``moved_names`` maps an old name to ``(module, new name)`` where it was renamed)."""

    def owner(self, name: str) -> tuple[ModuleType, str] | None:
        """The module that holds ``name`` now and its name there; None if none does."""
        names: dict[str, tuple[ModuleType, str]] = self.__dict__["moved_names"]
        if name in names:
            return names[name]
        for module in self.__dict__["moved_to"]:
            if hasattr(module, name):
                return module, name
        return None

    def __getattr__(self, name: str) -> Any:
        if name == "__all__":
            return getattr(self.__dict__["moved_to"][0], "__all__", [])
        found = None if name.startswith("__") else self.owner(name)
        if found is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        return getattr(*found)

    def __dir__(self) -> list[str]:
        names = set(self.__dict__) | set(self.__dict__["moved_names"])
        for module in self.__dict__["moved_to"]:
            names |= {n for n in dir(module) if not n.startswith("__")}
        return sorted(names)


def _forwarding(name: str) -> property:
    """A property that reads, sets and deletes ``name`` in the module that owns it now."""

    def owner(shim: MovedModule) -> tuple[ModuleType, str]:
        found = shim.owner(name)
        if found is None:  # pragma: no cover - the property exists because an owner did
            raise AttributeError(f"module {shim.__name__!r} has no attribute {name!r}")
        return found

    def fget(shim: MovedModule) -> Any:
        return getattr(*owner(shim))

    def fset(shim: MovedModule, value: Any) -> None:
        module, attr = owner(shim)
        setattr(module, attr, value)

    def fdel(shim: MovedModule) -> None:
        delattr(*owner(shim))

    return property(fget, fset, fdel)


def moved(old: str, new: str, *also: str, renamed: dict[str, str] | None = None) -> None:
    """Make the module ``old`` (being imported) forward to ``new`` (then ``also``), warning once.

    ``renamed``: old name → ``"module:new_name"`` for names that changed on the way.
    """
    warn_moved(old, new, stacklevel=4)
    module = sys.modules[old]
    names: dict[str, tuple[ModuleType, str]] = {}
    for name, where in (renamed or {}).items():
        mod, _, attr = where.partition(":")
        names[name] = (importlib.import_module(mod), attr)
    targets = tuple(importlib.import_module(m) for m in (new, *also))
    # Submodules stay plain attributes of the shim (``df2am.engine.sweep.plan`` is the shim's).
    forwarded = set(names) | {
        n for t in targets for n, v in vars(t).items()
        if not n.startswith("__") and not isinstance(v, ModuleType)
    }
    cls = type(f"Moved[{old}]", (MovedModule,), {n: _forwarding(n) for n in sorted(forwarded)})
    module.__dict__.update(moved_to=targets, moved_names=names)
    module.__class__ = cls
