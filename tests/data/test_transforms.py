"""Batched transforms: shapes, hand-checked normalisation, flip, pad+crop, channel aug, erasing."""

from __future__ import annotations

import pytest
import torch

from df2am.config import DataConfig
from df2am.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TestTransform,
    TrainTransform,
    channel_mix,
    erase_rectangles,
    pad_crop_flip,
    resize_batch,
)


def _batch(b=4, h=16, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, h, w, 3), generator=g, dtype=torch.uint8)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_output_shape_dtype_layout():
    x = _batch()
    y = TrainTransform(16, 8, pad=2)(x, generator=_gen(), rgb=True)
    assert y.shape == (4, 3, 16, 8) and y.dtype == torch.float32
    assert y.is_contiguous(memory_format=torch.channels_last)
    z = TestTransform(16, 8)(x)
    assert z.shape == (4, 3, 16, 8) and z.dtype == torch.float32
    # Resizing to another size.
    assert TestTransform(8, 4)(x).shape == (4, 3, 8, 4)
    assert TrainTransform(8, 4, pad=1)(x, generator=_gen(), rgb=False).shape == (4, 3, 8, 4)


def test_normalisation_of_a_constant_image_by_hand():
    x = torch.full((1, 4, 2, 3), 0, dtype=torch.uint8)
    x[..., 0], x[..., 1], x[..., 2] = 255, 128, 0
    y = TestTransform(4, 2)(x)
    # (255/255 - 0.485)/0.229, (128/255 - 0.456)/0.224, (0 - 0.406)/0.225
    expected = [2.2489083, 0.2051821, -1.8044444]
    for c in range(3):
        torch.testing.assert_close(y[0, c], torch.full((4, 2), expected[c]), rtol=0, atol=1e-5)
    # Same constants, via the module's published mean/std.
    for c, v in enumerate((255, 128, 0)):
        assert abs(expected[c] - (v / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]) < 1e-6


def test_forced_flip_flips_and_zero_pad_is_identity():
    x = _batch()
    t = TrainTransform(16, 8, pad=0, flip_prob=1.0)
    y = t(x, generator=_gen(), rgb=False)
    ref = TestTransform(16, 8)(x)
    torch.testing.assert_close(y, ref.flip(-1))
    t0 = TrainTransform(16, 8, pad=0, flip_prob=0.0)
    torch.testing.assert_close(t0(x, generator=_gen(), rgb=True), ref)


def test_pad_crop_zero_offsets_is_a_known_shift():
    x = _batch(b=2, h=6, w=5)
    p = 2
    zeros = torch.zeros(2, dtype=torch.long)
    y = pad_crop_flip(x, p, zeros, zeros, torch.zeros(2, dtype=torch.bool))
    # Offset (0, 0) in the padded image = the image shifted down/right by p, zeros above/left.
    expected = torch.zeros_like(x)
    expected[:, p:, p:] = x[:, : 6 - p, : 5 - p]
    assert torch.equal(y, expected)
    # Offset (2p, 2p): shifted up/left.
    far = torch.full((2,), 2 * p, dtype=torch.long)
    y2 = pad_crop_flip(x, p, far, far, torch.zeros(2, dtype=torch.bool))
    expected2 = torch.zeros_like(x)
    expected2[:, : 6 - p, : 5 - p] = x[:, p:, p:]
    assert torch.equal(y2, expected2)
    # Centre offset (p, p) with a flip on sample 1 only.
    mid = torch.full((2,), p, dtype=torch.long)
    y3 = pad_crop_flip(x, p, mid, mid, torch.tensor([False, True]))
    assert torch.equal(y3[0], x[0]) and torch.equal(y3[1], x[1].flip(1))


def test_per_sample_offsets_differ_and_stay_in_range():
    x = torch.full((64, 8, 8, 3), 200, dtype=torch.uint8)
    t = TrainTransform(8, 8, pad=3, flip_prob=0.0)
    y = t(x, generator=_gen(1), rgb=False)
    border = (y[:, 0] < 0).float()  # zero padding normalises to negative values
    zero_rows = border.all(dim=2).sum(dim=1)  # rows entirely padding, per sample
    zero_cols = border.all(dim=1).sum(dim=1)
    assert zero_rows.max() <= 3 and zero_cols.max() <= 3
    assert len(set(zip(zero_rows.tolist(), zero_cols.tolist(), strict=True))) > 3


def test_train_transform_reproducible_from_generator():
    x = _batch(b=8)
    t = TrainTransform(16, 8, pad=2, random_erasing=0.5, channel_aug=True)
    a = t(x, generator=_gen(3), rgb=True)
    b = t(x, generator=_gen(3), rgb=True)
    c = t(x, generator=_gen(4), rgb=True)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_test_transform_deterministic():
    x = _batch()
    t = TestTransform(16, 8)
    torch.manual_seed(0)
    a = t(x)
    torch.manual_seed(1)
    assert torch.equal(a, t(x))


def test_channel_mix_choices():
    x = torch.tensor([[[[10.0, 20.0, 30.0]]]]).repeat(5, 1, 1, 1)
    y = channel_mix(x, torch.arange(5))
    gray = 0.2989 * 10 + 0.587 * 20 + 0.114 * 30
    expected = torch.tensor(
        [[10, 20, 30], [10, 10, 10], [20, 20, 20], [30, 30, 30], [gray, gray, gray]]
    )
    torch.testing.assert_close(y[:, 0, 0], expected)


def test_channel_aug_only_for_rgb_and_yields_gray_or_original():
    x = _batch(b=64, seed=5)
    t = TrainTransform(16, 8, pad=0, flip_prob=0.0, channel_aug=True)
    ref = TestTransform(16, 8)(x)
    y = t(x, generator=_gen(2), rgb=True)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    unnorm = y * std + mean  # back to [0, 1]
    kept = [torch.allclose(y[i], ref[i]) for i in range(64)]
    single = [torch.allclose(unnorm[i, 0], unnorm[i, 1], atol=1e-5) for i in range(64)]
    assert all(k or s for k, s in zip(kept, single, strict=True))
    assert 10 < sum(kept) < 54  # about half kept
    # IR images are never channel-augmented.
    torch.testing.assert_close(t(x, generator=_gen(2), rgb=False), ref)


def test_erasing_fills_a_rectangle_with_zero():
    x = torch.ones(2, 6, 5, 3)
    erase_rectangles(
        x,
        torch.tensor([True, False]),
        torch.tensor([1, 1]),
        torch.tensor([2, 2]),
        torch.tensor([3, 3]),
        torch.tensor([2, 2]),
    )
    expected = torch.ones(2, 6, 5, 3)
    expected[0, 1:4, 2:4] = 0
    assert torch.equal(x, expected)
    t = TrainTransform(32, 16, pad=0, flip_prob=0.0, random_erasing=1.0)
    y = t(torch.full((16, 32, 16, 3), 255, dtype=torch.uint8), generator=_gen(), rgb=False)
    erased = (y == 0).all(dim=1).flatten(1).float().mean(dim=1)
    assert (erased > 0).float().mean() > 0.8  # probability 1 (a try may rarely fail to fit)
    assert erased.max() < 0.5


def test_resize_is_noop_at_size_and_from_config():
    x = _batch()
    assert resize_batch(x, 16, 8) is x
    cfg = DataConfig(height=16, width=8, pad=3, flip_prob=0.25, random_erasing=0.1)
    t = TrainTransform.from_config(cfg)
    assert (t.height, t.width, t.pad, t.flip_prob, t.random_erasing) == (16, 8, 3, 0.25, 0.1)


def test_channel_aug_prob_zero_keeps_all_one_replaces_all() -> None:
    from df2am.data.transforms import TrainTransform

    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (16, 8, 4, 3), dtype=torch.uint8, generator=g)
    plain = TrainTransform(8, 4, pad=0, flip_prob=0.0)(imgs, generator=torch.Generator(), rgb=True)
    for p, gray_rows in ((0.0, 0), (1.0, 16)):
        t = TrainTransform(8, 4, pad=0, flip_prob=0.0, channel_aug=True, channel_aug_prob=p)
        out = t(imgs, generator=torch.Generator().manual_seed(1), rgb=True)
        # A replaced image has one value on all three channels (before normalisation), i.e.
        # its normalised channels are an exact affine image of each other; a kept one equals
        # the un-augmented transform.
        kept = [(out[i] - plain[i]).abs().max().item() < 1e-5 for i in range(16)]
        assert kept.count(False) == gray_rows
    with pytest.raises(ValueError, match="channel_aug_prob"):
        TrainTransform(8, 4, channel_aug=True, channel_aug_prob=1.5)


# --- tone remapping (data.tone_aug_prob) ----------------------------------------------------


def test_tone_curves_are_piecewise_linear_through_their_knots() -> None:
    from df2am.data.transforms import random_tone_curves

    g = torch.Generator().manual_seed(3)
    curves = random_tone_curves(5, 4, g)
    levels = torch.rand(5, 4, generator=torch.Generator().manual_seed(3)) * 255.0
    assert curves.shape == (5, 256)
    # Knots at inputs 0, 85, 170, 255 (positions 0, 1, 2, 3 of 3 segments over 0..255).
    torch.testing.assert_close(curves[:, 0], levels[:, 0])
    torch.testing.assert_close(curves[:, 255], levels[:, 3])
    torch.testing.assert_close(curves[:, 85], levels[:, 1])
    # Half-way between knots 0 and 1 (input 42.5 is not an integer: check linearity on 0..85).
    t = torch.arange(86) / 85.0
    torch.testing.assert_close(curves[:, :86], levels[:, :1] * (1 - t) + levels[:, 1:2] * t)


def test_tone_remap_maps_luminance_through_each_images_curve() -> None:
    from df2am.data.transforms import tone_remap

    x = torch.tensor([[[[10.0, 20.0, 30.0], [200.0, 100.0, 0.0]]]]).repeat(2, 1, 1, 1)
    curves = torch.stack([255.0 - torch.arange(256.0), torch.arange(256.0) * 0.5])
    apply = torch.tensor([True, False])
    y = tone_remap(x, apply, curves)
    gray = [round(0.2989 * 10 + 0.587 * 20 + 0.114 * 30), round(0.2989 * 200 + 0.587 * 100)]
    # Image 0: gray levels 18 and 118 through the inverting curve, on all three channels.
    expected0 = torch.tensor([[255.0 - gray[0]] * 3, [255.0 - gray[1]] * 3])
    torch.testing.assert_close(y[0, 0], expected0)
    torch.testing.assert_close(y[1], x[1])  # not selected: unchanged


def test_tone_aug_probability_and_modalities() -> None:
    x = _batch(b=64, seed=7)
    plain = TrainTransform(16, 8, pad=0, flip_prob=0.0)
    t = TrainTransform(16, 8, pad=0, flip_prob=0.0, tone_aug_prob=0.5)
    for rgb in (True, False):  # both modalities are remapped
        ref = plain(x, generator=_gen(4), rgb=rgb)
        y = t(x, generator=_gen(4), rgb=rgb)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        unnorm = y * std + mean
        changed = [not torch.allclose(y[i], ref[i]) for i in range(64)]
        gray = [torch.allclose(unnorm[i, 0], unnorm[i, 2], atol=1e-5) for i in range(64)]
        assert all(g for c, g in zip(changed, gray, strict=True) if c)
        assert 14 < sum(changed) < 50
    # Off (the default) draws nothing: the stream and the output equal the plain transform's.
    torch.testing.assert_close(TrainTransform(16, 8, pad=0, flip_prob=0.0, tone_aug_prob=0.0)(
        x, generator=_gen(4), rgb=True), plain(x, generator=_gen(4), rgb=True))
    with pytest.raises(ValueError, match="tone_aug_prob"):
        TrainTransform(8, 4, tone_aug_prob=-0.1)
