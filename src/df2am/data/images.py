"""The one place image files are decoded: any PIL-readable file to faithful 8-bit RGB.

Training and test loaders (through :mod:`df2am.data.cache`), ``df2am data verify`` and the
feature API all decode through :func:`decode_rgb`, so a file that verifies is a file that trains,
with the same pixels::

    from df2am.data.images import decode_rgb
    arr = decode_rgb(path, (256, 128))   # (256, 128, 3) uint8, or None size for native size

The format is read from the file's *content* (PIL's magic-byte sniffing), never from its
extension: a PNG named ``.jpg`` decodes as the PNG it is (``data verify`` notes the mismatch,
see :func:`extension_mismatch`). The file is read completely (``Image.load()``), so a truncated
file is an error, not a grey stripe. Every failure is an :class:`ImageDecodeError` (a
:class:`~df2am.errors.DatasetError`) naming the file.

Mode rules (:func:`to_rgb`), each exact and documented because PIL's defaults are not all
faithful:

========================  ==========================================================================
``RGB``                   unchanged
``L``                     gray value replicated to R, G, B
``1``                     0 → 0, 1 → 255, replicated
``P`` (palette)           each index → its palette colour; with transparency (``tRNS`` or an
                          RGBA palette) as ``RGBA`` below
``RGBA``, ``LA``, ``PA``  composited on **black**: ``c' = round(c·a/255)`` (fully transparent →
                          0). Black is the value the training crop pads with (zero padding), so
                          transparent areas look like padding instead of whatever colour happens
                          to be stored under alpha 0 (PIL's ``convert("RGB")`` just drops alpha)
``RGBa``, ``La``          premultiplied alpha: the stored colour already is the composite on black
``RGBX``                  padding byte dropped
``CMYK``                  PIL's naive conversion ``R = round((255 − C)(255 − K)/255)`` (likewise
                          G from M, B from Y); any ICC profile is ignored, so colours are *not*
                          ICC-accurate (Adobe-inverted CMYK JPEGs are un-inverted by PIL)
``YCbCr``                 PIL's ITU-R BT.601 conversion
``I;16``, ``I;16B``, …    16-bit gray scaled by its dtype range, ``v >> 8`` (65535 → 255,
                          256 → 1, 255 → 0); PIL's ``convert("L")`` instead *clips* at 255
``I`` (32-bit int)        treated as 16-bit (how PIL has opened 16-bit PNGs): clipped to
                          0..65535, then ``>> 8``
``F`` (32-bit float)      taken as intensity in [0, 1]: clipped, ``round(v·255)``; NaN → 0
other (``LAB``, ``HSV``)  an error naming the mode
========================  ==========================================================================

Odd geometry (:func:`check_geometry`): an image smaller than :data:`MIN_SIDE` pixels on a side,
or more than :data:`MAX_ASPECT` times longer on one side than on the other, is legal but cannot
hold a person crop worth embedding (a 1×1 icon, a 2000×5 strip). Where a user hands images to a
trained model (``df2am extract``, ``search``, the Python API, the web upload) it gets a warning
naming the file, or an :class:`ImageShapeError` under ``strict`` (``--strict-images``); dataset
loaders do not check (a dataset's images are what they are).

Only the first frame of a multi-frame file (GIF, multi-page TIFF) is used. EXIF orientation is not
applied (pixels as stored, as before). Paths may hold any characters, including bytes that are not
UTF-8 (Python's surrogate escapes); messages show them with :func:`display_path`, which is always
encodable.
"""

from __future__ import annotations

import io
import logging
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from df2am.errors import DatasetError

__all__ = [
    "ImageDecodeError",
    "ImageShapeError",
    "MAX_ASPECT",
    "MIN_SIDE",
    "check_geometry",
    "decode_bytes",
    "decode_rgb",
    "display_path",
    "extension_mismatch",
    "open_rgb",
    "printable",
    "to_rgb",
]

log = logging.getLogger(__name__)

#: Smallest side (pixels) of an image given to a trained model without a warning.
MIN_SIDE = 16
#: Largest ratio of an image's long side to its short side without a warning (a person crop is
#: about 2:1; SYSU-MM01 and RegDB crops are at most ~4:1).
MAX_ASPECT = 8.0

# Formats PIL reports for content that is the same family as the extension's format.
_SAME_FORMAT = {"MPO": "JPEG"}  # a multi-picture JPEG is a JPEG


class ImageDecodeError(DatasetError):
    """An image file is missing, not an image, truncated or in a mode we do not convert."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = path
        self.reason = printable(reason)
        super().__init__(f"cannot decode image {display_path(path)}: {self.reason}")


class ImageShapeError(DatasetError):
    """An image too small or too elongated to embed, refused under ``strict``."""


def printable(text: str) -> str:
    """``text`` with lone surrogates (undecodable file-name bytes) as ``\\xNN`` escapes, so it
    always encodes to UTF-8 (printing it never raises ``UnicodeEncodeError``)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # surrogates that are not escaped bytes
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def display_path(path: str | os.PathLike[str]) -> str:
    """A path for messages: exactly ``str(path)`` unless it holds bytes that are not valid UTF-8,
    which are shown as ``\\xNN``."""
    return printable(os.fsdecode(path))


def extension_mismatch(path: str | os.PathLike[str], fmt: str | None) -> str | None:
    """``None`` when content format ``fmt`` (PIL's ``Image.format``) is what ``path``'s extension
    says, else a sentence naming both (e.g. PNG data in a ``.jpg`` file). Unknown extensions
    are not judged."""
    ext = os.path.splitext(os.fsdecode(path))[1].lower()
    expected = Image.registered_extensions().get(ext)
    if expected is None or fmt is None:
        return None
    got = _SAME_FORMAT.get(fmt, fmt)
    if got == _SAME_FORMAT.get(expected, expected):
        return None
    return f"{display_path(path)} holds {fmt} data but is named {ext} (decoded by content)"


def _composite_black(arr: np.ndarray) -> np.ndarray:
    """(H, W, C+1) uint8 colour + alpha → (H, W, C) composited on black, rounded."""
    color = arr[..., :-1].astype(np.uint32)
    alpha = arr[..., -1:].astype(np.uint32)
    return ((color * alpha + 127) // 255).astype(np.uint8)


def _gray3(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2)


def to_rgb(im: Image.Image) -> Image.Image:
    """A loaded PIL image as 8-bit ``RGB`` by the mode rules of this module's docstring.

    Raises:
        ValueError: the mode has no faithful rule (message names the mode).
    """
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("L", "1", "RGBX", "CMYK", "YCbCr"):
        return im.convert("RGB")
    if mode == "P":
        if "transparency" in im.info or (im.palette is not None and im.palette.mode == "RGBA"):
            return to_rgb(im.convert("RGBA"))
        return im.convert("RGB")
    if mode == "PA":
        return to_rgb(im.convert("RGBA"))
    if mode == "RGBA":
        return Image.fromarray(_composite_black(np.asarray(im)), "RGB")
    if mode == "LA":
        return Image.fromarray(_gray3(_composite_black(np.asarray(im))[..., 0]), "RGB")
    if mode == "RGBa":
        return Image.fromarray(np.ascontiguousarray(np.asarray(im)[..., :3]), "RGB")
    if mode == "La":
        return Image.fromarray(_gray3(np.asarray(im)[..., 0]), "RGB")
    if mode.startswith("I;16"):
        v = np.asarray(im).astype(np.uint32) >> 8
        return Image.fromarray(_gray3(v), "RGB")
    if mode == "I":
        v = np.clip(np.asarray(im).astype(np.int64), 0, 65535) >> 8
        return Image.fromarray(_gray3(v), "RGB")
    if mode == "F":
        f = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=1.0, neginf=0.0)
        return Image.fromarray(_gray3(np.rint(np.clip(f, 0.0, 1.0) * 255.0)), "RGB")
    raise ValueError(f"image mode {mode!r} has no faithful conversion to 8-bit RGB")


def _decode(source: str | os.PathLike[str] | io.BytesIO, name: str | os.PathLike[str]
            ) -> tuple[Image.Image, str | None]:
    """Fully decode ``source`` (a path or bytes) to ``RGB``; errors name ``name``."""
    try:
        with Image.open(source) as im:
            fmt = im.format
            im.load()  # reads everything: a truncated file raises here
            rgb = to_rgb(im)
            if rgb is im:
                rgb = im.copy()  # detach from the closed file
    except FileNotFoundError:
        raise ImageDecodeError(name, "file not found") from None
    except IsADirectoryError:
        raise ImageDecodeError(name, "is a folder, not an image file") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(
            name, "not an image file (PIL recognises no image format in its content)"
        ) from None
    except DatasetError:
        raise
    except Exception as exc:  # PIL plugins raise OSError, SyntaxError, ValueError, EOFError, ...
        raise ImageDecodeError(name, f"{type(exc).__name__}: {exc}") from None
    return rgb, fmt


def open_rgb(path: str | os.PathLike[str]) -> tuple[Image.Image, str | None]:
    """Fully decode ``path`` (format sniffed from content) as an ``RGB`` PIL image.

    Returns:
        ``(image, format)``: the image at native size, and PIL's name of the content's format
        (``"JPEG"``, ``"PNG"``, …), for :func:`extension_mismatch`.

    Raises:
        ImageDecodeError: missing file, not an image, truncated/corrupt, unsupported mode.
    """
    return _decode(path, path)


def decode_bytes(data: bytes, name: str) -> Image.Image:
    """An image file's bytes (an upload) as an ``RGB`` PIL image at native size, by the same
    rules as :func:`decode_rgb`; errors name ``name`` (the upload's file name), never the
    in-memory buffer."""
    if not data:
        raise ImageDecodeError(name, "empty (0 bytes)")
    return _decode(io.BytesIO(data), name)[0]


def check_geometry(name: str | os.PathLike[str], width: int, height: int, *,
                   strict: bool = False) -> str | None:
    """``None`` for an image of ordinary geometry, else the warning (logged) naming ``name``.

    Odd: a side under :data:`MIN_SIDE` pixels, or a long/short side ratio above
    :data:`MAX_ASPECT`. Under ``strict`` an odd image is an :class:`ImageShapeError`.
    """
    short, long_ = sorted((int(width), int(height)))
    if short < MIN_SIDE:
        problem = f"{width}x{height} px is under {MIN_SIDE} px on a side"
    elif long_ / short > MAX_ASPECT:
        problem = (f"{width}x{height} px: its long side is {long_ / short:.0f} times its "
                   f"short side (more than {MAX_ASPECT:g}:1)")
    else:
        return None
    what = (f"image {display_path(name)}: {problem}; resized to the model's input it holds "
            "little of a person")
    if strict:
        raise ImageShapeError(f"{what} (refused under --strict-images)")
    log.warning("%s", what)
    return what


def decode_rgb(path: str | os.PathLike[str], size: tuple[int, int] | None = None, *,
               geometry: str | None = None) -> np.ndarray:
    """Decode ``path`` to a uint8 ``(H, W, 3)`` RGB array, bilinear-resized to ``size`` = (H, W)
    when given (after the 8-bit conversion).

    ``geometry``: ``None`` (no check), ``"warn"`` or ``"strict"``: :func:`check_geometry` of
    the native size before resizing.

    Raises:
        ImageDecodeError: (a :class:`~df2am.errors.DatasetError`) naming the file.
        ImageShapeError: an odd geometry with ``geometry="strict"``.
    """
    im, _ = open_rgb(path)
    if geometry is not None:
        check_geometry(path, *im.size, strict=geometry == "strict")
    if size is not None and im.size != (size[1], size[0]):
        im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.uint8)
