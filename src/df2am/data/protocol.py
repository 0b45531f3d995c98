"""One dispatch from (dataset, options) to training records and query/gallery lists.

The engine and ``df2am protocol`` both go through these functions, so the lists a user
prints are the lists we evaluate on. Usage::

    from df2am.data.protocol import test_split, train_records, trial_numbers

    train = train_records("regdb", "/data/RegDB", trial=3)
    for t in trial_numbers("sysu"):                        # 0..9
        query, gallery = test_split("sysu", "/data/SYSU-MM01", mode="indoor", trial=t)
    query, gallery = test_split("regdb", "/data/RegDB", trial=3, direction="t2v")

Trial numbering follows the reference code of each dataset and is validated, never shifted:
**SYSU-MM01 trials are 0..9** (``random.seed(t)``, row t of ``rand_perm_cam``) and **RegDB
trials are 1..10** (``idx/test_visible_<t>.txt``). A number outside the range is a
:class:`~df2am.errors.ConfigError` that names the valid range. Options that do not apply to
a dataset (``mode``/``sampler``/``shots``/``split_file`` for RegDB, ``direction`` for SYSU)
are ignored.
"""

from __future__ import annotations

from pathlib import Path

from df2am.data import regdb, sysu
from df2am.data.records import ImageRecord
from df2am.errors import ConfigError

DATASETS: tuple[str, ...] = ("sysu", "regdb")


def _check_dataset(dataset: str) -> str:
    if dataset not in DATASETS:
        raise ConfigError(f"dataset must be one of {list(DATASETS)}, got {dataset!r}")
    return dataset


def trial_numbers(dataset: str) -> range:
    """The valid trial numbers: ``range(0, 10)`` for SYSU-MM01, ``range(1, 11)`` for RegDB."""
    return sysu.TRIALS if _check_dataset(dataset) == "sysu" else regdb.TRIALS


def train_records(dataset: str, root: str | Path, *, trial: int = 1) -> list[ImageRecord]:
    """Training records with labels 0..N-1 (``trial`` picks the RegDB split; SYSU ignores it)."""
    if _check_dataset(dataset) == "sysu":
        return sysu.read_sysu_train(root)
    return regdb.read_regdb_train(root, trial)


def test_split(
    dataset: str,
    root: str | Path,
    *,
    mode: str = "all",
    trial: int,
    sampler: str = "seeded",
    shots: int = 1,
    split_file: str | Path | None = None,
    direction: str = "v2t",
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """``(query, gallery)`` of one evaluation trial, in protocols.md order.

    SYSU-MM01: query = :func:`~df2am.data.sysu.sysu_query` (cam3 then cam6 of the test ids),
    gallery = :func:`~df2am.data.sysu.sysu_gallery` for ``mode``/``trial``/``sampler``/
    ``shots``; ``split_file`` ``None`` or ``""`` means ``<root>/exp/rand_perm_cam.mat``.
    RegDB: :func:`~df2am.data.regdb.regdb_test` for ``trial``/``direction``.
    """
    if _check_dataset(dataset) == "sysu":
        gallery = sysu.sysu_gallery(
            root, mode, trial, sampler=sampler, shots=shots, split_file=split_file or None
        )
        return sysu.sysu_query(root, mode), gallery
    return regdb.regdb_test(root, trial, direction)


# pytest would otherwise try to collect this function when a test module imports it.
test_split.__test__ = False  # type: ignore[attr-defined]
