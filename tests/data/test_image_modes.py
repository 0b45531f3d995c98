"""Every PIL mode decodes to the documented 8-bit RGB (``df2am.data.images``), by content, and
odd file names work or fail with a plain, printable message."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from df2am.data import cache as cache_mod
from df2am.data.images import ImageDecodeError, decode_rgb, display_path, extension_mismatch
from df2am.data.records import ImageRecord
from df2am.data.verify import _check_image, decode_error
from df2am.errors import DatasetError


def decode(path: Path) -> np.ndarray:
    """Through the cache's decoder (what training and test loaders use), at native size."""
    with Image.open(path) as im:
        w, h = im.size
    return cache_mod.decode_resize(path, (h, w))


def gray(values) -> np.ndarray:
    v = np.asarray(values, dtype=np.uint8)
    return np.repeat(v[..., None], 3, axis=-1)


# ------------------------------------------------------------------------------ 16-bit gray


def test_pil_convert_clips_16_bit(tmp_path: Path) -> None:
    """The reason for our rule: PIL's own conversion clips 16-bit values at 255."""
    im = Image.fromarray(np.array([[256, 65535]], dtype=np.uint16))
    assert im.mode == "I;16"
    assert np.asarray(im.convert("L")).tolist() == [[255, 255]]


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_i16_scaled_by_dtype_range(tmp_path: Path, ext: str) -> None:
    values = np.array([[0, 1, 255, 256, 511, 32768, 65280, 65535]], dtype=np.uint16)
    path = tmp_path / f"a{ext}"
    Image.fromarray(values).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I;16") or im.mode == "I"
    assert decode(path).tolist() == gray([[0, 0, 0, 1, 1, 128, 255, 255]]).tolist()


def test_i16_big_endian(tmp_path: Path) -> None:
    values = np.array([[256, 65535, 4096]], dtype=">u2")
    im = Image.frombytes("I;16B", (3, 1), values.tobytes())
    path = tmp_path / "b.tif"
    im.save(path)
    assert decode(path).tolist() == gray([[1, 255, 16]]).tolist()


def test_mode_i_treated_as_16_bit(tmp_path: Path) -> None:
    values = np.array([[-5, 0, 256, 65535, 100000]], dtype=np.int32)
    path = tmp_path / "i.tif"
    Image.fromarray(values, "I").save(path)
    with Image.open(path) as im:
        assert im.mode == "I"
    assert decode(path).tolist() == gray([[0, 0, 1, 255, 255]]).tolist()


def test_float_clipped_to_unit_range(tmp_path: Path) -> None:
    values = np.array([[-1.0, 0.0, 0.5, 1.0, 2.0, np.nan]], dtype=np.float32)
    path = tmp_path / "f.tif"
    Image.fromarray(values, "F").save(path)
    assert decode(path).tolist() == gray([[0, 0, 128, 255, 255, 0]]).tolist()


# ------------------------------------------------------------------------- palette, 1-bit, L


def _palette_image() -> Image.Image:
    im = Image.new("P", (3, 1))
    im.putpalette([10, 20, 30, 200, 100, 50, 0, 255, 0] + [0, 0, 0] * 253)
    im.putdata([0, 1, 2])
    return im


def test_palette_to_palette_colours(tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    _palette_image().save(path)
    assert decode(path).tolist() == [[[10, 20, 30], [200, 100, 50], [0, 255, 0]]]


def test_palette_with_transparent_index(tmp_path: Path) -> None:
    path = tmp_path / "pt.png"
    _palette_image().save(path, transparency=1)  # index 1 fully transparent
    with Image.open(path) as im:
        assert im.mode == "P" and "transparency" in im.info
    assert decode(path).tolist() == [[[10, 20, 30], [0, 0, 0], [0, 255, 0]]]


def test_palette_with_partial_alpha(tmp_path: Path) -> None:
    path = tmp_path / "pa.png"
    _palette_image().save(path, transparency=bytes([255, 128, 0]))
    # alpha 128: round(c * 128 / 255); alpha 0: black.
    assert decode(path).tolist() == [[[10, 20, 30], [100, 50, 25], [0, 0, 0]]]


def test_gif_palette(tmp_path: Path) -> None:
    path = tmp_path / "p.gif"
    _palette_image().save(path)
    assert decode(path).tolist() == [[[10, 20, 30], [200, 100, 50], [0, 255, 0]]]


def test_one_bit(tmp_path: Path) -> None:
    im = Image.new("1", (3, 1))
    im.putdata([0, 1, 0])
    path = tmp_path / "one.png"
    im.save(path)
    with Image.open(path) as reopened:
        assert reopened.mode == "1"
    assert decode(path).tolist() == gray([[0, 255, 0]]).tolist()


def test_gray_replicated(tmp_path: Path) -> None:
    path = tmp_path / "l.png"
    Image.fromarray(np.array([[0, 7, 200]], dtype=np.uint8), "L").save(path)
    assert decode(path).tolist() == gray([[0, 7, 200]]).tolist()


# ------------------------------------------------------------------------------------- alpha


def test_rgba_composited_on_black(tmp_path: Path) -> None:
    px = np.array([[[200, 100, 50, 255], [200, 100, 50, 128], [255, 255, 255, 0]]], np.uint8)
    path = tmp_path / "rgba.png"
    Image.fromarray(px, "RGBA").save(path)
    # PIL's convert("RGB") would give (255, 255, 255) for the fully transparent pixel.
    assert decode(path).tolist() == [[[200, 100, 50], [100, 50, 25], [0, 0, 0]]]


def test_la_composited_on_black(tmp_path: Path) -> None:
    px = np.array([[[200, 255], [200, 128], [255, 0]]], np.uint8)
    path = tmp_path / "la.png"
    Image.fromarray(px, "LA").save(path)
    assert decode(path).tolist() == gray([[200, 100, 0]]).tolist()


# -------------------------------------------------------------------------------------- CMYK

_CMYK = [(0, 0, 0, 0), (100, 50, 200, 30), (255, 0, 0, 0), (200, 100, 0, 100)]


def _cmyk_expected() -> list[list[int]]:
    # (255 - C) * (255 - K) / 255, rounded; likewise M -> G, Y -> B.
    return [[round((255 - v) * (255 - k) / 255) for v in (c, m, y)] for c, m, y, k in _CMYK]


def test_cmyk_tiff_exact(tmp_path: Path) -> None:
    im = Image.new("CMYK", (4, 1))
    im.putdata(_CMYK)
    path = tmp_path / "cmyk.tif"
    im.save(path)
    assert decode(path).tolist() == [_cmyk_expected()]


def test_cmyk_jpeg(tmp_path: Path) -> None:
    im = Image.new("CMYK", (32, 8), (100, 50, 200, 30))
    path = tmp_path / "cmyk.jpg"
    im.save(path, quality=100)
    with Image.open(path) as reopened:
        assert reopened.mode == "CMYK"
    arr = decode(path).astype(int)
    assert np.abs(arr - np.array(_cmyk_expected()[1])).max() <= 3  # lossy JPEG


# -------------------------------------------------------------- content vs extension, errors


def test_png_named_jpg_decodes_by_content_and_is_noted(tmp_path: Path) -> None:
    px = np.array([[[1, 2, 3], [250, 251, 252]]], np.uint8)
    path = tmp_path / "really_png.jpg"
    Image.fromarray(px, "RGB").save(path, format="PNG")
    assert decode(path).tolist() == px.tolist()  # lossless: it was read as the PNG it is
    error, note = _check_image(path)
    assert error is None
    assert note is not None and str(path) in note and "PNG" in note and ".jpg" in note
    assert decode_error(path) is None


def test_matching_extension_no_note(tmp_path: Path) -> None:
    path = tmp_path / "ok.jpeg"
    Image.new("RGB", (4, 4)).save(path)
    assert _check_image(path) == (None, None)
    assert extension_mismatch(tmp_path / "x.unknownext", "PNG") is None


def test_text_named_jpg_is_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image\n")
    with pytest.raises(DatasetError, match="not an image file") as info:
        cache_mod.decode_resize(path, (4, 4))
    assert str(path) in str(info.value)
    assert "not an image" in (decode_error(path) or "")


def test_truncated_png_is_error(tmp_path: Path) -> None:
    path = tmp_path / "t.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ImageDecodeError) as info:
        cache_mod.decode_resize(path, (64, 64))
    assert str(path) in str(info.value)


def test_missing_file_and_unsupported_mode(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="file not found"):
        cache_mod.decode_resize(tmp_path / "nope.jpg", (4, 4))
    path = tmp_path / "lab.tif"
    Image.new("LAB", (2, 2)).save(path)
    with pytest.raises(DatasetError, match="'LAB'") as info:
        cache_mod.decode_resize(path, (2, 2))
    assert str(path) in str(info.value)


def test_resize_after_conversion(tmp_path: Path) -> None:
    path = tmp_path / "big16.png"
    Image.fromarray(np.full((8, 4), 65535, np.uint16)).save(path)
    assert decode_rgb(path, (4, 2)).tolist() == gray(np.full((4, 2), 255)).tolist()


# ----------------------------------------------------------------------------- odd path names


def test_space_and_non_ascii_folder(tmp_path: Path) -> None:
    folder = tmp_path / "caméra 1 — 夜"
    folder.mkdir()
    path = folder / "personne ü.png"
    Image.fromarray(np.array([[9, 99]], np.uint8), "L").save(path)
    assert decode(path).tolist() == gray([[9, 99]]).tolist()
    # And through the cache (key hashing, stat) with the odd root.
    rec = ImageRecord(path="personne ü.png", pid=0, cam=0, modality="rgb")
    images = cache_mod.load_images([rec], folder, (1, 2), tmp_path / "cache", workers=1)
    assert images[0].tolist() == gray([[9, 99]]).tolist()


def _undecodable_name(tmp_path: Path) -> Path:
    name = os.fsdecode(b"bad\xff name")  # not UTF-8: a lone surrogate in the str
    try:
        (tmp_path / name).mkdir()
    except (OSError, UnicodeEncodeError):  # pragma: no cover - filesystems that refuse it
        pytest.skip("this filesystem refuses non-UTF-8 names")
    return tmp_path / name


def test_undecodable_byte_in_name_reads(tmp_path: Path) -> None:
    folder = _undecodable_name(tmp_path)
    path = folder / "x.png"
    Image.fromarray(np.array([[5, 6]], np.uint8), "L").save(path)
    assert decode(path).tolist() == gray([[5, 6]]).tolist()
    rec = ImageRecord(path=f"{folder.name}/x.png", pid=0, cam=0, modality="ir")
    images = cache_mod.load_images([rec], tmp_path, (1, 2), cache_mod.NO_CACHE, workers=1)
    assert images[0].tolist() == gray([[5, 6]]).tolist()
    key = cache_mod.cache_key([rec], tmp_path, (1, 2))
    assert len(key) == 40


def test_undecodable_byte_in_name_error_is_printable(tmp_path: Path) -> None:
    folder = _undecodable_name(tmp_path)
    path = folder / "broken.jpg"
    path.write_bytes(b"\x00\x01 not an image")
    with pytest.raises(DatasetError) as info:
        cache_mod.decode_resize(path, (4, 4))
    message = str(info.value)
    message.encode("utf-8")  # strict: would raise UnicodeEncodeError on a lone surrogate
    assert "bad\\xff name" in message and "broken.jpg" in message
    assert display_path(path).encode("utf-8")
    reason = decode_error(path)
    assert reason is not None and "not an image" in reason
    missing = ImageRecord(path=f"{folder.name}/gone.jpg", pid=3, cam=0, modality="rgb")
    with pytest.raises(DatasetError, match=r"not found.*bad\\xff name") as info2:
        cache_mod.load_images([missing], tmp_path, (4, 4), cache_mod.NO_CACHE)
    str(info2.value).encode("utf-8")
