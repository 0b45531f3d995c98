"""Image cache and train/test loaders on a tiny tree of JPEGs written in tmp_path."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

import df2am.data.cache as cache_mod
from df2am.config import DataConfig, SamplerConfig
from df2am.data.cache import cache_path, load_images
from df2am.data.loader import TrainBatch, build_test_loader, build_train_loader
from df2am.data.records import ImageRecord
from df2am.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from df2am.errors import DatasetError

H, W = 16, 8


def _write_tree(root, num_ids=4, rgb_per=5, ir_per=3, size=(20, 10)):
    """Small JPEGs; each image is a flat colour encoding (label, modality) so we can check it."""
    records = []
    for label in range(num_ids):
        pid = 100 + label
        for mod, n in (("rgb", rgb_per), ("ir", ir_per)):
            for k in range(n):
                rel = f"{mod}/{pid:04d}/{k:03d}.jpg"
                path = root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                value = 40 + 40 * label
                colour = (value, value, value) if mod == "ir" else (value, 255 - value, 30 + k)
                Image.new("RGB", (size[1], size[0]), colour).save(path, quality=95)
                cam = 3 if mod == "ir" else 1
                records.append(ImageRecord(rel, pid, cam, mod, label))
    return records


def _cfg(**kw):
    base = dict(height=H, width=W, pad=2, num_workers=0)
    base.update(kw)
    return DataConfig(**base)


@pytest.fixture()
def tree(tmp_path):
    root = tmp_path / "data"
    return root, _write_tree(root)


# ----------------------------------------------------------------------------- cache


def test_cache_built_once_then_memmapped(tree, tmp_path, monkeypatch):
    root, records = tree
    calls = []
    real = cache_mod.decode_resize

    def counting(path, size):
        calls.append(path)
        return real(path, size)

    monkeypatch.setattr(cache_mod, "decode_resize", counting)
    a = load_images(records, root, (H, W), tmp_path / "cache")
    assert len(calls) == len(records)
    assert a.shape == (len(records), H, W, 3) and a.dtype == np.uint8
    b = load_images(records, root, (H, W), tmp_path / "cache")
    assert len(calls) == len(records)  # second call: no decoding
    assert isinstance(b, np.memmap)
    np.testing.assert_array_equal(a, b)
    # Exactly one cache file, no temp leftovers.
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".npy"]
    # A flat gray JPEG decodes to (about) its value; IR stored as 3 equal channels.
    ir0 = next(i for i, r in enumerate(records) if r.modality == "ir" and r.label == 1)
    assert abs(int(b[ir0].mean()) - 80) <= 2
    assert (b[ir0, ..., 0] == b[ir0, ..., 1]).all()
    # Another size is another cache file.
    load_images(records, root, (8, 4), tmp_path / "cache")
    assert len(calls) == 2 * len(records)


def test_cache_invalidated_when_a_file_changes(tree, tmp_path):
    root, records = tree
    first = cache_path(records, root, (H, W), tmp_path / "c")
    load_images(records, root, (H, W), tmp_path / "c")
    target = root / records[0].path
    Image.new("RGB", (10, 20), (250, 0, 0)).save(target)
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    second = cache_path(records, root, (H, W), tmp_path / "c")
    assert second != first
    img = load_images(records, root, (H, W), tmp_path / "c")
    assert second.exists()
    assert img[0, ..., 0].mean() > 200 and img[0, ..., 1].mean() < 40


def test_corrupt_and_missing_images_name_the_file(tree, tmp_path):
    root, records = tree
    bad = root / records[2].path
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(DatasetError, match=str(bad)):
        load_images(records, root, (H, W), tmp_path / "c")
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "c").iterdir())
    with pytest.raises(DatasetError, match=str(bad)):
        load_images(records, root, (H, W), "none")
    # A truncated JPEG (first half of a valid file) is an error as well.
    good = (root / records[4].path).read_bytes()
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(DatasetError, match=str(bad)):
        load_images(records, root, (H, W), "none")
    gone = root / records[3].path
    gone.unlink()
    with pytest.raises(DatasetError, match="not found.*" + records[3].path):
        load_images(records, root, (H, W), tmp_path / "c")


def test_no_disk_cache(tree, tmp_path):
    root, records = tree
    a = load_images(records, root, (H, W), "none")
    assert not isinstance(a, np.memmap)
    np.testing.assert_array_equal(a, load_images(records, root, (H, W), tmp_path / "c"))


# ----------------------------------------------------------------------------- loaders


def _collect(loader, epoch):
    loader.set_epoch(epoch)
    return list(loader)


def _assert_same(batches_a, batches_b):
    assert len(batches_a) == len(batches_b)
    for a, b in zip(batches_a, batches_b, strict=True):
        for ta, tb in zip(a, b, strict=True):
            assert torch.equal(ta, tb)


def test_train_loader_batches(tree, tmp_path):
    root, records = tree
    loader = build_train_loader(
        records, root, _cfg(), SamplerConfig(num_ids=2, num_per_modality=3),
        seed=0, cache_dir=tmp_path / "c",
    )  # fmt: skip
    # 20 RGB, 12 IR images: ceil(20 / (2*3)) = 4 batches.
    assert len(loader) == 4
    assert loader.num_classes == 4
    batches = _collect(loader, 0)
    assert len(batches) == 4
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    for b in batches:
        assert isinstance(b, TrainBatch)
        assert b.rgb.shape == b.ir.shape == (6, 3, H, W)
        assert b.rgb.dtype == torch.float32 and b.rgb.is_contiguous()
        assert b.rgb_labels.dtype == torch.long and b.rgb_labels.shape == (6,)
        assert torch.equal(b.rgb_labels, b.ir_labels)
        assert len(set(b.rgb_labels.tolist())) == 2
        # The pixels are those of the labelled id: IR centre pixel value 40 + 40*label.
        ir_px = (b.ir * std + mean)[:, 0, H // 2, W // 2] * 255
        torch.testing.assert_close(ir_px, 40.0 + 40.0 * b.ir_labels.float(), atol=4.0, rtol=0)


def test_train_loader_deterministic_any_workers(tree, tmp_path):
    root, records = tree
    scfg = SamplerConfig(num_ids=2, num_per_modality=2)
    kw = dict(seed=3, cache_dir=tmp_path / "c")
    cfg = _cfg(random_erasing=0.5, channel_aug=True)
    l0 = build_train_loader(records, root, cfg, scfg, **kw)
    l0b = build_train_loader(records, root, cfg, scfg, **kw)
    l2 = build_train_loader(records, root, _cfg(random_erasing=0.5, channel_aug=True,
                                                num_workers=2), scfg, **kw)  # fmt: skip
    e1 = _collect(l0, 1)
    _assert_same(e1, _collect(l0b, 1))
    _assert_same(e1, _collect(l2, 1))  # same pixels with 2 workers
    _assert_same(_collect(l2, 2), _collect(l0, 2))  # persistent workers follow set_epoch
    e2 = _collect(l0, 2)
    assert not torch.equal(e1[0].rgb, e2[0].rgb)
    other = build_train_loader(records, root, cfg, scfg, seed=4, cache_dir=tmp_path / "c")
    assert not torch.equal(e1[0].rgb, _collect(other, 1)[0].rgb)


def test_train_loader_channels_last_and_distributed(tree, tmp_path):
    root, records = tree
    scfg = SamplerConfig(num_ids=2, num_per_modality=2)
    loaders = [
        build_train_loader(
            records,
            root,
            _cfg(),
            scfg,
            seed=0,
            rank=r,
            world_size=2,
            cache_dir="none",
            channels_last=True,
        )  # fmt: skip
        for r in range(2)
    ]
    steps = zip(*(_collect(ld, 0) for ld in loaders), strict=True)
    for b0, b1 in steps:
        assert b0.rgb.is_contiguous(memory_format=torch.channels_last)
        assert not set(b0.rgb_labels.tolist()) & set(b1.rgb_labels.tolist())


def test_train_loader_rejects_unlabelled_records(tree, tmp_path):
    root, records = tree
    bad = [*records[:-1], ImageRecord(records[-1].path, 1, 3, "ir", -1)]
    with pytest.raises(DatasetError, match="no training label"):
        build_train_loader(bad, root, _cfg(), SamplerConfig(2, 2), seed=0, cache_dir="none")


@pytest.mark.parametrize("workers", [0, 2])
def test_test_loader_record_order(tree, tmp_path, workers):
    root, records = tree
    loader = build_test_loader(records, root, _cfg(num_workers=workers), batch_size=5,
                               cache_dir=tmp_path / "c")  # fmt: skip
    batches = list(loader)
    assert len(loader) == len(batches) == 7  # 32 images in batches of 5
    assert [b.shape[0] for b in batches] == [5] * 6 + [2]
    x = torch.cat(batches)
    raw = torch.from_numpy(np.array(load_images(records, root, (H, W), tmp_path / "c")))
    expected = raw.permute(0, 3, 1, 2).float() / 255 - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    expected = expected / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(x, expected, atol=1e-5, rtol=1e-5)
    again = torch.cat(list(loader))
    assert torch.equal(x, again)
