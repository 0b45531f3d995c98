"""Deprecated: ``df2am.engine.atomic`` moved to :mod:`df2am.atomic`; this name goes in the next
release.

Importing it warns (``DeprecationWarning``) and forwards every name to its new module
(:mod:`df2am.engine.moved`).
"""

from df2am.engine.moved import moved

moved(__name__, "df2am.atomic")
