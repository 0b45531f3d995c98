"""Deprecated: ``df2am.engine.sweep`` moved to :mod:`df2am.experiments.sweep`; this name goes in
the next release.

Importing it warns (``DeprecationWarning``) and forwards every name to its new module
(:mod:`df2am.engine.moved`).
"""

from df2am.engine.moved import moved

moved(
    __name__,
    "df2am.experiments.sweep",
    renamed={
        "_model_key": "df2am.experiments.sweep.plan:model_key",
        "_read_saved": "df2am.experiments.sweep.plan:read_saved",
        "_fmt_value": "df2am.experiments.sweep.spec:fmt_value",
    },
)
