"""Batched image transforms of the training recipe (method.md; paper §4.1).

The transforms work on whole batches of **uint8 HWC** images, shape ``(B, H, W, 3)`` (the layout
of the decoded-image cache), with per-sample random parameters drawn from an explicit
``torch.Generator`` and applied by batched indexing, so that a couple of CPU workers keep ahead
of a training step. They return float32 ``(B, 3, H, W)`` tensors that are a channel-permuted view
of HWC data, i.e. in ``torch.channels_last`` memory format (call ``.contiguous()`` for NCHW)::

    import torch
    from df2am.data.transforms import TrainTransform, TestTransform
    t = TrainTransform(256, 128, pad=10, flip_prob=0.5)
    g = torch.Generator().manual_seed(0)
    x = t(images_uint8_bhwc, generator=g, rgb=True)   # (B, 3, 256, 128) float32, normalised

Training transform, in order:

1. resize to (H, W) when the input has another size (bilinear, antialiased; the cache normally
   stores images at (H, W) already, then this is skipped);
2. zero padding by ``pad`` pixels on every side and a random (H, W) crop — offsets uniform in
   ``0..2·pad`` — fused with a horizontal flip of probability ``flip_prob`` into one gather;
3. optional channel augmentation (``channel_aug``, RGB images only): after CAJ's
   channel-exchangeable augmentation (Ye et al., ICCV 2021, ``ChannelExchange`` /
   ``ChannelAdapGray``). What we implement: each RGB image is kept unchanged with probability
   1 − ``channel_aug_prob`` (default 1/2); otherwise it becomes one of four single-channel
   images repeated over 3 channels, chosen uniformly: its R, its G, its B channel, or its
   luminance 0.2989·R + 0.587·G + 0.114·B.
   Differences from CAJ: CAJ doubles the RGB batch (original + augmented copy) — we keep the
   batch layout of the sampler and mix instead; and we exchange channels *before* ImageNet
   normalisation, so the result is a real gray image normalised like any image (IR images are
   gray too), where CAJ copies already-normalised channel values;
4. ImageNet normalisation (mean 0.485/0.456/0.406, std 0.229/0.224/0.225 on [0, 1] values);
5. optional random erasing (Zhong et al. 2020) with probability ``random_erasing``: area
   fraction U(0.02, 0.33), aspect ratio log-uniform in (0.3, 3.3), up to 10 tries per image to
   fit (as torchvision's ``RandomErasing``), filled with 0 after normalisation (= the ImageNet
   mean colour).

CAJ's augmentations (Ye et al., "Channel Augmented Joint Learning for Visible-Infrared
Recognition", ICCV 2021; github.com/mangye16/Cross-Modal-Re-ID-baseline, ``ICCV21_CAJ``:
``data_loader.py``, ``ChannelAug.py``), each a switch of :class:`~df2am.config.DataConfig`,
applied after step 4 in CAJ's order (erasing, then the channel operations, on the normalised
values):

* ``erasing_mode="caj"`` (with ``random_erasing`` = its probability, 0.5 in CAJ) replaces
  step 5 by CAJ's ``ChannelRandomErasing``: area fraction U(0.02, 0.4), aspect ratio *uniform*
  in (0.3, 1/0.3), up to 100 tries for a rectangle strictly smaller than the image, filled
  channel by channel with 0.4914, 0.4822, 0.4465 (CAJ's constants, written into the
  normalised image).
* ``rgb_exchange_copy``: CAJ's joint batch. Every RGB image is augmented twice with
  independent crop, flip and erasing draws; the second copy then gets ``ChannelExchange``
  (``gray=2``): one of its R, G, B channels, uniformly, copied to all three. The call returns
  2B rows, ``[originals; exchanged copies]`` (the loader repeats the labels to match), so a
  batch of N* ids × M* holds N*·M* RGB, N*·M* exchanged and N*·M* IR images, as CAJ's.
* ``ir_channel_gray``: CAJ's ``ChannelAdapGray`` on IR images: R, G or B copied to all
  channels (1/4 each), else (1/4) the luminance 0.2989·R + 0.587·G + 0.114·B or the image
  unchanged, half and half.

The channel operations reuse :func:`channel_mix` (one 3×3 matrix per sample). Where this
departs from CAJ: the random draws come from the batch's ``torch.Generator`` (per-sample,
vectorised) instead of Python's ``random`` per image; and ``channel_aug`` above (exchange
*before* normalisation, mixed into the batch) is df2am's own variant, which cannot be combined
with ``rgb_exchange_copy``.

Test transform: resize (if needed) + normalisation; nothing random.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from df2am.config import DataConfig

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TrainTransform",
    "TestTransform",
    "resize_batch",
    "pad_crop_flip",
    "channel_mix",
    "normalize",
    "erase_rectangles",
    "exchange_choice",
    "ir_gray_choice",
    "CAJ_ERASING_FILL",
    "tone_remap",
    "random_tone_curves",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Luminance weights (ITU-R 601, as CAJ's gray branch).
_GRAY = (0.2989, 0.587, 0.114)

#: CAJ's ChannelRandomErasing: area fraction, aspect-ratio range (uniform), tries, and the
#: per-channel fill written into the normalised image.
CAJ_ERASING_AREA = (0.02, 0.4)
CAJ_ERASING_RATIO = (0.3, 1 / 0.3)
CAJ_ERASING_TRIES = 100
CAJ_ERASING_FILL = (0.4914, 0.4822, 0.4465)


def _check_batch(images: torch.Tensor) -> None:
    if images.dim() != 4 or images.shape[-1] != 3 or images.dtype != torch.uint8:
        raise ValueError(
            f"expected a uint8 (B, H, W, 3) batch, got {tuple(images.shape)} {images.dtype}"
        )


def resize_batch(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear, antialiased resize of a uint8 ``(B, H, W, 3)`` batch; a no-op at the size."""
    _check_batch(images)
    if images.shape[1:3] == (height, width):
        return images
    x = images.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def pad_crop_flip(
    images: torch.Tensor,
    pad: int,
    offset_y: torch.Tensor,
    offset_x: torch.Tensor,
    flip: torch.Tensor,
) -> torch.Tensor:
    """Zero-pad by ``pad``, crop (H, W) at per-sample offsets, flip the selected samples.

    ``offset_y``/``offset_x`` (B,) are top-left corners in the padded image (0..2·pad), ``flip``
    a (B,) bool mask. Output pixel (i, j) of sample b is padded[b, oy + i, ox + j'] with
    j' = W-1-j when flipped, else j — crop and flip in one gather (no per-sample loop).
    """
    _check_batch(images)
    B, H, W, C = images.shape
    padded = F.pad(images, (0, 0, pad, pad, pad, pad)) if pad > 0 else images
    Hp, Wp = H + 2 * pad, W + 2 * pad
    cols = torch.arange(W)
    cols = torch.where(flip[:, None], W - 1 - cols, cols) + offset_x[:, None]  # (B, W)
    rows = torch.arange(H)[None, :] + offset_y[:, None]  # (B, H)
    flat = (torch.arange(B)[:, None, None] * Hp + rows[:, :, None]) * Wp + cols[:, None, :]
    out = padded.reshape(B * Hp * Wp, C).index_select(0, flat.reshape(-1))
    return out.reshape(B, H, W, C)


def channel_mix(images: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
    """Channel augmentation on a float ``(B, H, W, 3)`` batch (values 0..255, or normalised
    values: the operation is linear, CAJ applies it after normalisation).

    ``choice`` (B,) in 0..4: 0 keep, 1 R, 2 G, 3 B (that channel on all three), 4 luminance.
    Done as one batched 3×3 colour matrix per sample.
    """
    mats = torch.zeros(5, 3, 3)
    mats[0] = torch.eye(3)
    for k in range(3):
        mats[k + 1, :, k] = 1.0
    mats[4, :, :] = torch.tensor(_GRAY)
    m = mats[choice]  # (B, out, in)
    return torch.einsum("bhwi,boi->bhwo", images, m)


def random_tone_curves(batch: int, knots: int, g: torch.Generator) -> torch.Tensor:
    """``batch`` random tone curves as 256-entry lookup tables (float, values 0..255).

    Each curve is piecewise linear through ``knots`` equally spaced points of the 0..255 input
    range whose output levels are drawn uniformly in [0, 255] independently: the curve may
    rise, fall or fold, so it keeps where intensity *changes* (edges, pattern geometry) and
    scrambles which region is brighter than which.
    """
    levels = torch.rand(batch, knots, generator=g) * 255.0
    pos = torch.linspace(0, knots - 1, 256)  # input level → position on the knot axis
    lo = pos.floor().long().clamp_(max=knots - 2)
    frac = pos - lo
    return levels[:, lo] * (1 - frac) + levels[:, lo + 1] * frac  # (B, 256)


def tone_remap(images: torch.Tensor, apply: torch.Tensor, curves: torch.Tensor) -> torch.Tensor:
    """Replace the selected images of a float ``(B, H, W, 3)`` batch (values 0..255) by their
    luminance passed through their own tone curve (``curves`` (B, 256)), on all 3 channels."""
    gray = torch.einsum("bhwi,i->bhw", images, torch.tensor(_GRAY))
    idx = gray.round().clamp_(0, 255).long()
    B, H, W = idx.shape
    mapped = torch.gather(curves, 1, idx.reshape(B, H * W)).reshape(B, H, W)
    out = torch.where(apply[:, None, None, None], mapped[..., None].expand(B, H, W, 3), images)
    return out


def normalize(images: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation of 0..255 values in HWC layout; returns float32 ``(B, H, W, 3)``."""
    std = torch.tensor(IMAGENET_STD)
    scale = 1.0 / (255.0 * std)
    shift = -torch.tensor(IMAGENET_MEAN) / std
    x = images.float() if images.dtype != torch.float32 else images
    return torch.addcmul(shift, x, scale)


def erase_rectangles(
    images: torch.Tensor,
    apply: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    height: torch.Tensor,
    width: torch.Tensor,
    value: float | Sequence[float] = 0.0,
) -> torch.Tensor:
    """Fill one rectangle per selected sample of a ``(B, H, W, C)`` batch (in place) with
    ``value``: one number, or one per channel (CAJ's fill)."""
    _, H, W, _ = images.shape
    r = torch.arange(H)[None, :]
    c = torch.arange(W)[None, :]
    in_rows = (r >= top[:, None]) & (r < (top + height)[:, None])  # (B, H)
    in_cols = (c >= left[:, None]) & (c < (left + width)[:, None])  # (B, W)
    mask = in_rows[:, :, None] & in_cols[:, None, :] & apply[:, None, None]
    if isinstance(value, (int, float)):
        return images.masked_fill_(mask[..., None], value)
    fill = torch.tensor(value, dtype=images.dtype)
    return images.copy_(torch.where(mask[..., None], fill, images))


def _sample_erasing(
    batch: int,
    H: int,
    W: int,
    prob: float,
    g: torch.Generator,
    tries: int = 10,
    *,
    area_range: tuple[float, float] = (0.02, 0.33),
    ratio_range: tuple[float, float] = (0.3, 3.3),
    log_ratio: bool = True,
    nonempty: bool = True,
) -> tuple[torch.Tensor, ...]:
    """Random-erasing rectangles vectorised over (batch, tries): torchvision's rule by default
    (log-uniform aspect ratio, non-empty rectangles); CAJ's with ``area_range=(0.02, 0.4)``,
    a uniform ratio in (0.3, 1/0.3) (``log_ratio=False``), 100 tries, ``nonempty=False``."""
    area = H * W
    lo, hi = area_range
    target = area * (lo + (hi - lo) * torch.rand(batch, tries, generator=g))
    r_lo, r_hi = ratio_range
    if log_ratio:
        u = torch.rand(batch, tries, generator=g)
        ratio = torch.exp(math.log(r_lo) + (math.log(r_hi) - math.log(r_lo)) * u)
    else:
        ratio = r_lo + (r_hi - r_lo) * torch.rand(batch, tries, generator=g)
    h = torch.sqrt(target * ratio).round().long()
    w = torch.sqrt(target / ratio).round().long()
    ok = (h < H) & (w < W)
    if nonempty:
        ok &= (h > 0) & (w > 0)
    # The first try that fits, as torchvision's loop would take it.
    first = torch.argmax(ok.int(), dim=1)
    fits = ok.any(dim=1)
    rows = torch.arange(batch)
    h, w = h[rows, first], w[rows, first]
    top = (torch.rand(batch, generator=g) * (H - h + 1).float()).long()
    left = (torch.rand(batch, generator=g) * (W - w + 1).float()).long()
    apply = (torch.rand(batch, generator=g) < prob) & fits
    return apply, top, left, h, w


def exchange_choice(batch: int, g: torch.Generator) -> torch.Tensor:
    """CAJ's ``ChannelExchange(gray=2)`` as :func:`channel_mix` codes: 1, 2 or 3 (R, G, B on
    all channels), uniformly (its ``randint(0, 2)`` never reaches the gray branch)."""
    return torch.randint(1, 4, (batch,), generator=g)


def ir_gray_choice(batch: int, g: torch.Generator) -> torch.Tensor:
    """CAJ's ``ChannelAdapGray(probability=0.5)`` as :func:`channel_mix` codes: 1, 2, 3
    (R, G, B on all channels) with 1/4 each, else 4 (luminance) or 0 (unchanged), 1/8 each."""
    idx = torch.randint(0, 4, (batch,), generator=g)
    gray = torch.rand(batch, generator=g) <= 0.5
    return torch.where(idx < 3, idx + 1, torch.where(gray, 4, 0))


def _to_nchw(x: torch.Tensor) -> torch.Tensor:
    # A permuted view of HWC data: (B, 3, H, W) with channels_last strides, no copy.
    return x.permute(0, 3, 1, 2)


class TrainTransform:
    """Training augmentation of a uint8 ``(B, H, W, 3)`` batch; see the module docstring."""

    def __init__(
        self,
        height: int,
        width: int,
        pad: int = 10,
        flip_prob: float = 0.5,
        random_erasing: float = 0.0,
        channel_aug: bool = False,
        channel_aug_prob: float = 0.5,
        erasing_mode: str = "torchvision",
        rgb_exchange_copy: bool = False,
        ir_channel_gray: bool = False,
        tone_aug_prob: float = 0.0,
        tone_knots: int = 4,
    ) -> None:
        self.height, self.width = int(height), int(width)
        self.pad = int(pad)
        self.flip_prob = float(flip_prob)
        self.random_erasing = float(random_erasing)
        self.channel_aug = bool(channel_aug)
        if not 0.0 <= channel_aug_prob <= 1.0:
            raise ValueError(f"channel_aug_prob must be in [0, 1], got {channel_aug_prob}")
        self.channel_aug_prob = float(channel_aug_prob)
        if erasing_mode not in ("torchvision", "caj"):
            raise ValueError(f"erasing_mode must be 'torchvision' or 'caj', got {erasing_mode!r}")
        if rgb_exchange_copy and channel_aug:
            raise ValueError("rgb_exchange_copy and channel_aug cannot be combined")
        self.erasing_mode = erasing_mode
        self.rgb_exchange_copy = bool(rgb_exchange_copy)
        self.ir_channel_gray = bool(ir_channel_gray)
        if not 0.0 <= tone_aug_prob <= 1.0:
            raise ValueError(f"tone_aug_prob must be in [0, 1], got {tone_aug_prob}")
        self.tone_aug_prob = float(tone_aug_prob)
        self.tone_knots = int(tone_knots)

    @classmethod
    def from_config(cls, cfg: DataConfig) -> TrainTransform:
        return cls(
            cfg.height,
            cfg.width,
            cfg.pad,
            cfg.flip_prob,
            cfg.random_erasing,
            cfg.channel_aug,
            cfg.channel_aug_prob,
            cfg.erasing_mode,
            cfg.rgb_exchange_copy,
            cfg.ir_channel_gray,
            cfg.tone_aug_prob,
            cfg.tone_knots,
        )

    def __call__(
        self, images: torch.Tensor, *, generator: torch.Generator, rgb: bool
    ) -> torch.Tensor:
        """Augment one batch; ``rgb`` enables the (RGB-only) channel augmentation.

        Returns B rows, or 2B (``[originals; exchanged copies]``) for an RGB batch with
        ``rgb_exchange_copy``.
        """
        g = generator
        x = resize_batch(images, self.height, self.width)
        copies = self.rgb_exchange_copy and rgb
        if copies:
            x = torch.cat([x, x])  # independent crop/flip/erasing draws for the two copies
        B = x.shape[0]
        oy = torch.randint(0, 2 * self.pad + 1, (B,), generator=g)
        ox = torch.randint(0, 2 * self.pad + 1, (B,), generator=g)
        flip = torch.rand(B, generator=g) < self.flip_prob
        x = pad_crop_flip(x, self.pad, oy, ox, flip)
        if self.channel_aug and rgb:
            # "< 1 - p" (not ">= p") keeps the draws of the default p = 0.5 as before.
            keep = torch.rand(B, generator=g) < 1.0 - self.channel_aug_prob
            choice = torch.randint(1, 5, (B,), generator=g).masked_fill_(keep, 0)
            x = channel_mix(x.float(), choice)
        if self.tone_aug_prob > 0:
            apply = torch.rand(B, generator=g) < self.tone_aug_prob
            curves = random_tone_curves(B, self.tone_knots, g)
            x = tone_remap(x.float(), apply, curves)
        x = normalize(x)
        if self.random_erasing > 0 and self.erasing_mode == "caj":
            apply, top, left, h, w = _sample_erasing(
                B, self.height, self.width, self.random_erasing, g, CAJ_ERASING_TRIES,
                area_range=CAJ_ERASING_AREA, ratio_range=CAJ_ERASING_RATIO, log_ratio=False,
                nonempty=False,
            )
            erase_rectangles(x, apply, top, left, h, w, CAJ_ERASING_FILL)
        elif self.random_erasing > 0:
            apply, top, left, h, w = _sample_erasing(
                B, self.height, self.width, self.random_erasing, g
            )
            erase_rectangles(x, apply, top, left, h, w)
        # CAJ's channel operations, on the normalised (and erased) values.
        if copies:
            half = B // 2
            x[half:] = channel_mix(x[half:], exchange_choice(half, g))
        elif self.ir_channel_gray and not rgb:
            x = channel_mix(x, ir_gray_choice(B, g))
        return _to_nchw(x)


class TestTransform:
    """Resize (if needed) + ImageNet normalisation; deterministic."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = int(height), int(width)

    @classmethod
    def from_config(cls, cfg: DataConfig) -> TestTransform:
        return cls(cfg.height, cfg.width)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return _to_nchw(normalize(resize_batch(images, self.height, self.width)))
