"""CAJ's augmentations as batched transforms: channel exchange on a second copy of every RGB
image, ChannelAdapGray on IR images, CAJ's channel random erasing — hand-computed pixel values,
the choice frequencies, CAJ's order (erase, then exchange) and the loader's joint batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from df2am.config import DataConfig, SamplerConfig
from df2am.data.loader import build_train_loader
from df2am.data.records import ImageRecord
from df2am.data.transforms import (
    CAJ_ERASING_FILL,
    TrainTransform,
    erase_rectangles,
    exchange_choice,
    ir_gray_choice,
)

# The pixel (255, 0, 128) after ImageNet normalisation, by hand:
#   R (255/255 - 0.485)/0.229 = 2.2489083, G (0 - 0.456)/0.224 = -2.0357143,
#   B (128/255 - 0.406)/0.225 = 0.4264924
R, G, B = 2.2489083, -2.0357143, 0.4264924
# CAJ's gray of the normalised pixel: 0.2989 R + 0.587 G + 0.114 B
GRAY = 0.2989 * R + 0.587 * G + 0.114 * B  # = 0.6721991 - 1.1949643 + 0.0486201 = -0.4741451


def _constant(n: int, h: int = 8, w: int = 4) -> torch.Tensor:
    x = torch.zeros(n, h, w, 3, dtype=torch.uint8)
    x[..., 0], x[..., 1], x[..., 2] = 255, 0, 128
    return x


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _pixels(y: torch.Tensor) -> torch.Tensor:
    """(n, 3) colour of each image of a batch of constant images."""
    flat = y.permute(0, 2, 3, 1).reshape(y.shape[0], -1, 3)
    assert torch.allclose(flat, flat[:, :1], atol=1e-6), "images are not constant"
    return flat[:, 0]


def test_exchange_copy_doubles_the_rgb_rows_by_hand() -> None:
    t = TrainTransform(8, 4, pad=0, flip_prob=0.0, rgb_exchange_copy=True)
    y = t(_constant(300), generator=_gen(), rgb=True)
    assert y.shape == (600, 3, 8, 4) and y.is_contiguous(memory_format=torch.channels_last)
    px = _pixels(y)
    torch.testing.assert_close(px[:300], torch.tensor([R, G, B]).expand(300, 3))
    copies = px[300:]
    # Each copy: one of its channels on all three (ChannelExchange(gray=2): never the gray).
    assert torch.allclose(copies, copies[:, :1].expand(-1, 3))
    values = copies[:, 0]
    which = torch.stack([(values - v).abs() < 1e-5 for v in (R, G, B)], dim=1)
    assert bool(which.any(dim=1).all())
    freq = which.float().mean(dim=0)
    assert bool(((freq - 1 / 3).abs() < 0.1).all()), freq
    # IR batches are not doubled.
    assert t(_constant(3), generator=_gen(), rgb=False).shape[0] == 3


def test_ir_channel_gray_by_hand() -> None:
    t = TrainTransform(8, 4, pad=0, flip_prob=0.0, ir_channel_gray=True)
    px = _pixels(t(_constant(4000), generator=_gen(1), rgb=False))
    expected = {
        "R": torch.tensor([R, R, R]), "G": torch.tensor([G, G, G]),
        "B": torch.tensor([B, B, B]), "gray": torch.tensor([GRAY] * 3),
        "kept": torch.tensor([R, G, B]),
    }
    shares = {k: float(((px - v).abs() < 1e-5).all(dim=1).float().mean())
              for k, v in expected.items()}
    assert sum(shares.values()) == pytest.approx(1.0)
    for k, share in shares.items():
        want = 0.125 if k in ("gray", "kept") else 0.25
        assert abs(share - want) < 0.03, (k, share)
    assert abs(GRAY + 0.4741451) < 1e-6
    # RGB batches are untouched by it.
    rgb = _pixels(t(_constant(5), generator=_gen(), rgb=True))
    torch.testing.assert_close(rgb, torch.tensor([R, G, B]).expand(5, 3))


def test_choice_codes() -> None:
    ex = exchange_choice(3000, _gen(2))
    assert set(ex.tolist()) == {1, 2, 3}
    ir = ir_gray_choice(8000, _gen(3))
    counts = torch.bincount(ir, minlength=5).float() / 8000
    torch.testing.assert_close(counts, torch.tensor([0.125, 0.25, 0.25, 0.25, 0.125]),
                               atol=0.02, rtol=0)


def test_per_channel_fill_by_hand() -> None:
    x = torch.zeros(2, 4, 3, 3)
    apply = torch.tensor([True, False])
    one = torch.ones(2, dtype=torch.long)
    erase_rectangles(x, apply, one, one * 0, one * 2, one, value=(0.5, -1.0, 2.0))
    assert x[0, 1:3, 0].tolist() == [[0.5, -1.0, 2.0]] * 2
    assert float(x[0].abs().sum()) == pytest.approx(2 * 3.5)  # nothing else
    assert float(x[1].abs().sum()) == 0.0
    erase_rectangles(x, ~apply, one * 0, one * 0, one, one)  # a scalar still works
    assert x[1, 0, 0].tolist() == [0.0, 0.0, 0.0]


def test_caj_erasing_fills_caj_constants_on_a_rectangle_of_caj_size() -> None:
    h, w = 48, 24
    t = TrainTransform(h, w, pad=0, flip_prob=0.0, random_erasing=1.0, erasing_mode="caj")
    y = t(_constant(200, h, w), generator=_gen(4), rgb=False).permute(0, 2, 3, 1)
    fill = torch.tensor(CAJ_ERASING_FILL)
    erased = ((y - fill).abs() < 1e-6).all(dim=-1)  # (n, h, w)
    kept = ((y - torch.tensor([R, G, B])).abs() < 1e-5).all(dim=-1)
    assert bool((erased | kept).all())  # every pixel is the image or CAJ's fill
    rows, cols = erased.any(dim=2).sum(dim=1), erased.any(dim=1).sum(dim=1)
    area = erased.sum(dim=(1, 2))
    assert bool((area == rows * cols).all())  # one rectangle
    assert bool((rows < h).all() and (cols < w).all())  # strictly smaller than the image
    frac = area.float() / (h * w)
    # Area 0.02..0.4 of the image (up to rounding of the sides); almost all images erased.
    assert float(frac[area > 0].min()) > 0.01 and float(frac.max()) < 0.45
    assert float((area > 0).float().mean()) > 0.9
    assert float(frac[area > 0].mean()) > 0.15  # CAJ's range (mean ≈ 0.21), not tiny


def test_caj_order_erases_before_the_exchange() -> None:
    """An erased rectangle of an exchanged copy holds one of CAJ's fill values everywhere."""
    t = TrainTransform(48, 24, pad=0, flip_prob=0.0, random_erasing=1.0, erasing_mode="caj",
                       rgb_exchange_copy=True)
    y = t(_constant(50, 48, 24), generator=_gen(5), rgb=True).permute(0, 2, 3, 1)[50:]
    assert torch.allclose(y, y[..., :1].expand_as(y))  # exchanged: equal channels
    values = {round(v, 4) for v in y[..., 0].flatten().tolist()}
    assert values <= {round(v, 4) for v in (R, G, B, *CAJ_ERASING_FILL)}
    assert values & {round(v, 4) for v in CAJ_ERASING_FILL}


def test_defaults_draw_the_same_numbers_as_before() -> None:
    """The new switches, off, change nothing: same draws, same pixels (checked against the
    outputs of the code before they existed, recorded here as checksums)."""
    x = torch.randint(0, 256, (6, 16, 8, 3), dtype=torch.uint8, generator=_gen(6))
    plain = TrainTransform(16, 8, pad=2, random_erasing=0.5)(x, generator=_gen(7), rgb=True)
    aug = TrainTransform(16, 8, pad=2, channel_aug=True)(x, generator=_gen(7), rgb=True)
    assert float(plain.sum()) == pytest.approx(PLAIN_SUM, abs=1e-2)
    assert float(aug.sum()) == pytest.approx(AUG_SUM, abs=1e-2)


def test_loader_repeats_the_rgb_labels_for_the_copies(tmp_path) -> None:
    root = tmp_path / "data"
    records = []
    for label in range(3):
        for mod in ("rgb", "ir"):
            for k in range(3):
                rel = f"{mod}/{label}/{k}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((16, 8, 3), 40 * label + k, np.uint8)).save(root / rel)
                records.append(ImageRecord(rel, 100 + label, 1 if mod == "rgb" else 3, mod,
                                           label))
    cfg = DataConfig(height=16, width=8, pad=0, num_workers=0, rgb_exchange_copy=True,
                     ir_channel_gray=True)
    loader = build_train_loader(records, root, cfg, SamplerConfig(num_ids=2, num_per_modality=2),
                                seed=0, cache_dir="none")
    batch = next(iter(loader))
    assert batch.rgb.shape == (8, 3, 16, 8) and batch.ir.shape == (4, 3, 16, 8)
    assert batch.rgb_labels.tolist() == batch.rgb_labels[:4].tolist() * 2
    assert batch.ir_labels.shape == (4,)


# Checksums of the transform before the CAJ switches were added (commit 4b7d8cf).
PLAIN_SUM = -366.10906982421875
AUG_SUM = -355.6342468261719
