"""Deprecated: ``df2am.engine.sweep.spec`` moved to :mod:`df2am.experiments.sweep.spec`; this name
goes in the next release.

Importing it warns (``DeprecationWarning``) and forwards every name to its new module
(:mod:`df2am.engine.moved`).
"""

from df2am.engine.moved import moved

moved(
    __name__,
    "df2am.experiments.sweep.spec",
    renamed={
        "_fmt_value": "df2am.experiments.sweep.spec:fmt_value",
    },
)
