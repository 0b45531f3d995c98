"""Training and test loaders: cache → identity-balanced batches → batched augmentation.

::

    from df2am.data.loader import build_train_loader, build_test_loader
    train = build_train_loader(records, root, cfg.data, cfg.sampler, seed=cfg.train.seed,
                               cache_dir="runs/x/cache")
    for epoch in range(cfg.train.epochs):
        train.set_epoch(epoch)
        for batch in train:          # TrainBatch(rgb, ir, rgb_labels, ir_labels)
            out = model(batch.rgb, batch.ir)

    test = build_test_loader(query_records, root, cfg.data, batch_size=128, cache_dir=...)
    feats = torch.cat([model.extract(x, "rgb") for x in test])   # record order

How it works. Images are decoded once into the cache (:mod:`df2am.data.cache`). A
``torch.utils.data.DataLoader`` takes the :class:`CrossModalityIdentitySampler` as its batch
sampler; each element it hands to a worker is a whole batch (RGB indices, IR indices, and a seed),
and the dataset's ``__getitems__`` gathers those rows from the memory-mapped cache and augments
them in one vectorised call (:mod:`df2am.data.transforms`).

Reproducibility: the augmentation seed of every batch is derived from (seed, epoch, rank, batch
number) in the main process and travels with the indices, so a batch's pixels do not depend on
which worker made it — runs are reproducible for any ``num_workers`` (stronger than a per-worker
seed), and no global RNG is used.

Memory format: batches are float32 ``(B, 3, H, W)``; by default NCHW-contiguous. With
``channels_last=True`` they are returned in ``torch.channels_last`` layout instead (what the
augmentation produces natively, saving one copy per batch); the engine may also convert on device.
Pinned memory is used only when CUDA is available (``pin_memory=None``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from df2am.config import DataConfig, SamplerConfig
from df2am.data.cache import load_images
from df2am.data.records import ImageRecord
from df2am.data.sampler import CrossModalityIdentitySampler
from df2am.data.transforms import TestTransform, TrainTransform
from df2am.errors import DatasetError

__all__ = ["TrainBatch", "TrainLoader", "TestLoader", "build_train_loader", "build_test_loader"]

log = logging.getLogger(__name__)

_AUG_STREAM = 0xA06


class TrainBatch(NamedTuple):
    """One training batch: N*·M* RGB and N*·M* IR images, id-major in both halves (with
    ``data.rgb_exchange_copy`` the RGB half is 2·N*·M*: the images, then their CAJ copies)."""

    rgb: torch.Tensor  # (B, 3, H, W) float32, normalised
    ir: torch.Tensor  # (B, 3, H, W) float32, normalised
    rgb_labels: torch.Tensor  # (B,) int64
    ir_labels: torch.Tensor  # (B,) int64

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TrainBatch:
        return TrainBatch(*(t.to(device, non_blocking=non_blocking) for t in self))


class _ImageStore:
    """uint8 ``(N, H, W, 3)`` images: a cache file (re-opened lazily in each worker) or memory.

    A memmap must not be pickled into worker processes (pickling copies its data), so only the
    path travels; the in-memory case is kept as a shared-memory tensor, which torch's
    multiprocessing passes by handle.
    """

    def __init__(self, images: np.ndarray) -> None:
        if isinstance(images, np.memmap) and images.filename is not None:
            self.path: Path | None = Path(images.filename)
            self._array: np.ndarray | None = images
            self._shared: torch.Tensor | None = None
        else:
            self.path = None
            self._array = None
            self._shared = torch.from_numpy(np.ascontiguousarray(images)).share_memory_()
        self.shape = tuple(images.shape)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.path is not None:
            state["_array"] = None
        return state

    def take(self, index: np.ndarray) -> torch.Tensor:
        if self._shared is not None:
            return self._shared[torch.from_numpy(np.asarray(index, dtype=np.int64))]
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        # Reading sorted rows keeps the memmap access sequential; then restore the batch order.
        index = np.asarray(index, dtype=np.int64)
        order = np.argsort(index, kind="stable")
        rows = np.empty((len(index), *self.shape[1:]), dtype=np.uint8)
        rows[order] = self._array[index[order]]
        return torch.from_numpy(rows)


def _pass_through(batch: Any) -> Any:
    # The dataset already returns a whole batch; no collation needed (module-level: picklable).
    return batch


class _TrainDataset(Dataset):
    def __init__(
        self,
        rgb: _ImageStore,
        ir: _ImageStore,
        rgb_labels: np.ndarray,
        ir_labels: np.ndarray,
        transform: TrainTransform,
        channels_last: bool,
    ) -> None:
        self.rgb, self.ir = rgb, ir
        self.rgb_labels = torch.from_numpy(rgb_labels)
        self.ir_labels = torch.from_numpy(ir_labels)
        self.transform = transform
        self.channels_last = channels_last

    def __len__(self) -> int:
        return self.rgb.shape[0]

    def __getitem__(self, item: Any) -> TrainBatch:
        return self.__getitems__(item)

    def __getitems__(self, item: tuple[np.ndarray, np.ndarray, int]) -> TrainBatch:
        rgb_idx, ir_idx, seed = item
        g = torch.Generator().manual_seed(int(seed))
        rgb = self.transform(self.rgb.take(rgb_idx), generator=g, rgb=True)
        ir = self.transform(self.ir.take(ir_idx), generator=g, rgb=False)
        if not self.channels_last:
            rgb, ir = rgb.contiguous(), ir.contiguous()
        rgb_labels = self.rgb_labels[torch.from_numpy(np.asarray(rgb_idx, dtype=np.int64))]
        # CAJ's joint batch (data.rgb_exchange_copy): the transform returns the RGB images
        # twice, [originals; exchanged copies], so their labels come twice too.
        rgb_labels = rgb_labels.repeat(rgb.shape[0] // max(len(rgb_labels), 1))
        return TrainBatch(
            rgb,
            ir,
            rgb_labels,
            self.ir_labels[torch.from_numpy(np.asarray(ir_idx, dtype=np.int64))],
        )


class _SeededBatches:
    """The sampler's batches, each with its augmentation seed from (seed, epoch, rank, step)."""

    def __init__(self, sampler: CrossModalityIdentitySampler) -> None:
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        s = self.sampler
        seeds = np.random.SeedSequence([s.seed, s.epoch, s.rank, _AUG_STREAM]).generate_state(
            len(s), dtype=np.uint64
        )
        for (rgb_idx, ir_idx), seed in zip(s, seeds, strict=True):
            # torch.Generator.manual_seed takes up to 64 bits; keep it non-negative for clarity.
            yield rgb_idx, ir_idx, int(seed) & 0x7FFF_FFFF_FFFF_FFFF


class TrainLoader:
    """Iterable of :class:`TrainBatch`; call :meth:`set_epoch` before each epoch."""

    def __init__(
        self,
        loader: DataLoader,
        sampler: CrossModalityIdentitySampler,
        num_classes: int,
        rgb_copies: int = 1,
    ) -> None:
        self.loader = loader
        self.sampler = sampler
        #: Number of training identities (1 + the largest label).
        self.num_classes = num_classes
        #: Rows of a batch on this process: N*·M* IR and N*·M* RGB images, the RGB ones
        #: ``rgb_copies`` times (2 with CAJ's exchanged copies, ``data.rgb_exchange_copy``).
        self.images_per_batch = sampler.num_ids * sampler.num_per_modality * (1 + rgb_copies)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[TrainBatch]:
        return iter(self.loader)


def _split_by_modality(
    records: Sequence[ImageRecord],
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    rgb = [r for r in records if r.modality == "rgb"]
    ir = [r for r in records if r.modality == "ir"]
    if len(rgb) + len(ir) != len(records):
        bad = next(r for r in records if r.modality not in ("rgb", "ir"))
        raise DatasetError(
            f"record {bad.path}: modality must be 'rgb' or 'ir', got {bad.modality!r}"
        )
    for rec in records:
        if rec.label < 0:
            raise DatasetError(
                f"record {rec.path} has no training label (label={rec.label}); "
                "build_train_loader needs training records with labels 0..N-1"
            )
    return rgb, ir


def build_train_loader(
    records: Sequence[ImageRecord],
    root: str | Path,
    data_cfg: DataConfig,
    sampler_cfg: SamplerConfig,
    *,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    cache_dir: str | Path,
    channels_last: bool = False,
    pin_memory: bool | None = None,
) -> TrainLoader:
    """The training loader of method.md's recipe.

    Args:
        records: training records of both modalities (labels 0..N-1); split here by modality.
        root: dataset root the record paths are relative to.
        data_cfg: image size, augmentation switches, ``num_workers``.
        sampler_cfg: N* (``num_ids``) and M* (``num_per_modality``).
        seed: run seed; with the epoch it fixes sampling and augmentation.
        rank, world_size: distributed position (each rank gets its own disjoint ids per step).
        cache_dir: decoded-image cache folder or ``"none"`` (see :mod:`df2am.data.cache`).
        channels_last: return image batches in ``torch.channels_last`` layout.
        pin_memory: ``None`` = pin exactly when CUDA is available.
    """
    rgb_recs, ir_recs = _split_by_modality(records)
    rgb_labels = np.array([r.label for r in rgb_recs], dtype=np.int64)
    ir_labels = np.array([r.label for r in ir_recs], dtype=np.int64)
    sampler = CrossModalityIdentitySampler(
        rgb_labels,
        ir_labels,
        sampler_cfg.num_ids,
        sampler_cfg.num_per_modality,
        seed=seed,
        rank=rank,
        world_size=world_size,
    )
    size = (data_cfg.height, data_cfg.width)
    transform = TrainTransform.from_config(data_cfg)
    dataset = _TrainDataset(
        _ImageStore(load_images(rgb_recs, root, size, cache_dir)),
        _ImageStore(load_images(ir_recs, root, size, cache_dir)),
        rgb_labels,
        ir_labels,
        transform,
        channels_last,
    )
    workers = int(data_cfg.num_workers)
    loader = DataLoader(
        dataset,
        batch_sampler=_SeededBatches(sampler),
        num_workers=workers,
        collate_fn=_pass_through,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        persistent_workers=workers > 0,
    )
    num_classes = int(max(rgb_labels.max(initial=-1), ir_labels.max(initial=-1))) + 1
    log.info(
        "train loader: %d RGB + %d IR images, %d ids with both modalities, %d batches/epoch",
        len(rgb_recs),
        len(ir_recs),
        len(sampler.ids),
        len(sampler),
    )
    return TrainLoader(loader, sampler, num_classes, 2 if transform.rgb_exchange_copy else 1)


class _TestDataset(Dataset):
    def __init__(self, store: _ImageStore, transform: TestTransform, channels_last: bool) -> None:
        self.store, self.transform, self.channels_last = store, transform, channels_last

    def __len__(self) -> int:
        return self.store.shape[0]

    def __getitem__(self, item: Any) -> torch.Tensor:
        return self.__getitems__(item)

    def __getitems__(self, index: list[int]) -> torch.Tensor:
        x = self.transform(self.store.take(np.asarray(index, dtype=np.int64)))
        return x if self.channels_last else x.contiguous()


class TestLoader:
    """Normalised image batches ``(b, 3, H, W)`` in record order (the last one may be short)."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, loader: DataLoader, num_images: int) -> None:
        self.loader = loader
        self.num_images = num_images

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.loader)


def build_test_loader(
    records: Sequence[ImageRecord],
    root: str | Path,
    data_cfg: DataConfig,
    *,
    batch_size: int,
    cache_dir: str | Path,
    channels_last: bool = False,
    pin_memory: bool | None = None,
) -> TestLoader:
    """Test-time loader: resize + normalise, batches in record order (no shuffling)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images = load_images(records, root, (data_cfg.height, data_cfg.width), cache_dir)
    dataset = _TestDataset(_ImageStore(images), TestTransform.from_config(data_cfg), channels_last)
    n = len(records)
    batches = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    workers = min(int(data_cfg.num_workers), max(0, math.ceil(n / batch_size) - 1))
    loader = DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=_pass_through,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
    )
    return TestLoader(loader, n)
