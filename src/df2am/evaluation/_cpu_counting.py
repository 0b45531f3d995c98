"""Deprecated name of :mod:`df2am.evaluation.cpu_counting` (renamed: a module another module
imports is not private). The alias is the same module object, so code that patches its
settings still reaches the real ones; it goes in the next release."""

import sys
import warnings

from df2am.evaluation import cpu_counting

warnings.warn(
    "df2am.evaluation._cpu_counting moved to df2am.evaluation.cpu_counting; the old name goes "
    "in the next release",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = cpu_counting
