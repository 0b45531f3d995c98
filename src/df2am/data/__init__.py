"""Datasets, protocols, sampling and loading (see docs/architecture.md, "df2am.data").

The training pipeline::

    from df2am.data import build_train_loader, build_test_loader
    loader = build_train_loader(records, root, cfg.data, cfg.sampler, seed=0, cache_dir="cache")

The readers and protocols::

    from df2am.data import test_split, train_records
    train = train_records("sysu", "/data/SYSU-MM01")                  # list[ImageRecord]
    query, gallery = test_split("sysu", "/data/SYSU-MM01", mode="all", trial=0)

``datasets`` (one object per dataset: SYSU-MM01, RegDB, LLCM), ``synthetic`` (the built-in
dataset) and ``verify`` hold the details.
"""

from df2am.data.cache import load_images
from df2am.data.loader import (
    TestLoader,
    TrainBatch,
    TrainLoader,
    build_test_loader,
    build_train_loader,
)
from df2am.data.protocol import test_split, train_records
from df2am.data.records import ImageRecord
from df2am.data.sampler import CrossModalityIdentitySampler
from df2am.data.transforms import TestTransform, TrainTransform
from df2am.data.validation import split_validation

__all__ = [
    "ImageRecord",
    "test_split",
    "train_records",
    "CrossModalityIdentitySampler",
    "TrainTransform",
    "TestTransform",
    "load_images",
    "TrainBatch",
    "TrainLoader",
    "TestLoader",
    "build_train_loader",
    "build_test_loader",
    "split_validation",
]
