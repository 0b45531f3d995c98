"""The validation split of a training set: the last ``train.val_ids`` identities held out.

::

    from df2am.data.validation import split_validation

    train, val_query, val_gallery = split_validation(records, val_ids=20)

The trainer selects its reported model on this split (``train.val_ids > 0``); the test set is
never used for that.
"""

from __future__ import annotations

from df2am.data.records import ImageRecord
from df2am.errors import ConfigError

__all__ = ["split_validation"]


def split_validation(
    records: list[ImageRecord], val_ids: int
) -> tuple[list[ImageRecord], list[ImageRecord], list[ImageRecord]]:
    """Carve the last ``val_ids`` training identities (highest labels) out of ``records``.

    Returns ``(train, val_query, val_gallery)``: the remaining training records (labels stay
    0..N-val_ids-1, still contiguous), the IR images of the held-out ids as queries and their
    RGB images as the gallery (the SYSU-MM01 / RegDB v2t-like cross-modality direction).
    """
    labels = sorted({r.label for r in records})
    if val_ids <= 0:
        return records, [], []
    if val_ids >= len(labels):
        raise ConfigError(
            f"train.val_ids={val_ids} must be smaller than the number of training ids "
            f"({len(labels)})"
        )
    cut = labels[-val_ids]
    train = [r for r in records if r.label < cut]
    held = [r for r in records if r.label >= cut]
    query = [r for r in held if r.modality == "ir"]
    gallery = [r for r in held if r.modality == "rgb"]
    if not query or not gallery:
        raise ConfigError(
            f"train.val_ids={val_ids}: the held-out ids need images of both modalities"
        )
    return train, query, gallery
