"""One dispatch from (dataset, options) to training records and query/gallery lists.

The engine and ``df2am protocol`` both go through these functions (thin calls into the
dataset objects of :mod:`df2am.data.datasets`), so the lists a user prints are the lists we
evaluate on. Usage::

    from df2am.data.protocol import test_split, train_records, trial_numbers

    train = train_records("regdb", "/data/RegDB", trial=3)
    for t in trial_numbers("sysu"):                        # 0..9
        query, gallery = test_split("sysu", "/data/SYSU-MM01", mode="indoor", trial=t)
    query, gallery = test_split("regdb", "/data/RegDB", trial=3, direction="t2v")
    query, gallery = test_split("llcm", "/data/LLCM", trial=0, direction="v2i")

Trial numbering follows the reference code of each dataset and is validated, never shifted:
**SYSU-MM01 and LLCM trials are 0..9** (``random.seed(t)``) and **RegDB trials are 1..10**
(``idx/test_visible_<t>.txt``). A number outside the range is a
:class:`~df2am.errors.ConfigError` that names the valid range. Options a dataset does not have
(``mode``/``sampler``/``shots``/``split_file`` outside SYSU-MM01, ``direction`` for SYSU) are
ignored; ``None`` means the dataset's default.
"""

from __future__ import annotations

from pathlib import Path

from df2am.data.datasets import get_dataset
from df2am.data.records import ImageRecord


def trial_numbers(dataset: str) -> range:
    """The valid trial numbers: ``range(0, 10)`` for SYSU-MM01 and LLCM, ``range(1, 11)``
    for RegDB."""
    return get_dataset(dataset, "dataset").trials


def train_records(dataset: str, root: str | Path, *, trial: int = 1) -> list[ImageRecord]:
    """Training records with labels 0..N-1 (``trial`` picks the RegDB split; others ignore it)."""
    ds = get_dataset(dataset, "dataset")
    return ds.train_records(root, ds.check_trial(trial) if ds.trial_per_model else None)


def test_split(
    dataset: str,
    root: str | Path,
    *,
    mode: str | None = None,
    trial: int,
    sampler: str | None = None,
    shots: int | None = None,
    split_file: str | Path | None = None,
    direction: str | None = None,
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """``(query, gallery)`` of one evaluation trial, in protocols.md order.

    ``split_file`` ``None`` or ``""`` means ``<root>/exp/rand_perm_cam.mat`` (SYSU-MM01).
    See each dataset's module (:mod:`~df2am.data.datasets.sysu`,
    :mod:`~df2am.data.datasets.regdb`, :mod:`~df2am.data.datasets.llcm`) for the lists.
    """
    ds = get_dataset(dataset, "dataset")
    options = ds.resolve_options(mode=mode, sampler=sampler, shots=shots,
                                 split_file=None if split_file is None else str(split_file),
                                 direction=direction)
    return ds.test_split(root, ds.check_trial(trial), options)


# pytest would otherwise try to collect this function when a test module imports it.
test_split.__test__ = False  # type: ignore[attr-defined]
