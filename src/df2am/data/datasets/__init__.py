"""The datasets df2am knows, one object each, found by name in :data:`DATASETS`.

::

    from df2am.data.datasets import DATASETS, get_dataset

    sorted(DATASETS)                                    # ['llcm', 'regdb', 'sysu']
    ds = get_dataset("regdb")
    ds.trials, ds.trial_per_model, ds.metric_rule       # range(1, 11), True, 'regdb'

Each dataset is one file of this package (a :class:`~df2am.data.datasets.base.Dataset`
subclass) and one entry below; see docs/architecture.md, "Adding a dataset".
"""

from __future__ import annotations

from df2am.data.datasets.base import Dataset, TestOptions
from df2am.data.datasets.llcm import LLCM
from df2am.data.datasets.regdb import REGDB
from df2am.data.datasets.sysu import SYSU
from df2am.errors import ConfigError

__all__ = ["DATASETS", "Dataset", "TestOptions", "dataset_names", "get_dataset"]

#: Name → dataset. The one list of datasets: config, CLI, trainer and evaluator ask it.
DATASETS: dict[str, Dataset] = {"sysu": SYSU, "regdb": REGDB, "llcm": LLCM}


def dataset_names() -> tuple[str, ...]:
    """The registered names, in registry order."""
    return tuple(DATASETS)


def get_dataset(name: str, key: str = "data.dataset") -> Dataset:
    """The dataset called ``name``; a :class:`ConfigError` naming ``key`` if there is none."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"{key}: expected one of {list(DATASETS)}, got {name!r}") from None
