"""The data room's input checks (issue 22): image geometry and upload decoding (the one
decoder), protocol options a dataset does not have (one rule for config keys and arguments),
idx files with a byte-order mark, and the sampler's images per identity."""

from __future__ import annotations

import io
import logging
import re

import numpy as np
import pytest
from PIL import Image

from df2am.config import load_config
from df2am.data.datasets import get_dataset
from df2am.data.datasets.base import parse_list_file
from df2am.data.images import (
    ImageDecodeError,
    ImageShapeError,
    check_geometry,
    decode_bytes,
    decode_rgb,
)
from df2am.data.sampler import CrossModalityIdentitySampler
from df2am.errors import ConfigError


@pytest.mark.parametrize(("w", "h", "problem"), [
    (1, 1, "1x1 px is under 16 px on a side"),
    (2000, 5, "2000x5 px is under 16 px"),
    (20, 400, "20x400 px: its long side is 20 times its short side (more than 8:1)"),
])
def test_odd_geometry_warns_or_refuses(tmp_path, caplog, w, h, problem):
    path = tmp_path / "odd.png"
    Image.new("RGB", (w, h)).save(path)
    with caplog.at_level(logging.WARNING):
        assert decode_rgb(path, (32, 16), geometry="warn").shape == (32, 16, 3)
    assert f"image {path}: {problem}" in caplog.text
    with pytest.raises(ImageShapeError, match=re.escape(f"{path.name}: {problem}") + ".*strict"):
        decode_rgb(path, (32, 16), geometry="strict")
    caplog.clear()
    decode_rgb(path)  # dataset loaders do not check
    assert not caplog.text


def test_ordinary_geometry_is_silent(caplog):
    for w, h in ((64, 128), (16, 16), (16, 128), (300, 100)):
        assert check_geometry("x.jpg", w, h, strict=True) is None
    assert not caplog.text


def test_decode_bytes_names_the_upload():
    buf = io.BytesIO()
    Image.new("L", (20, 40), 7).save(buf, format="PNG")
    assert decode_bytes(buf.getvalue(), "q.png").mode == "RGB"
    for data, why in ((b"hello", "notes.txt: not an image file"),
                      (b"", "notes.txt: empty (0 bytes)"),
                      (buf.getvalue()[:60], "notes.txt: ")):
        with pytest.raises(ImageDecodeError) as info:
            decode_bytes(data, "notes.txt")
        assert why in str(info.value) and "BytesIO" not in str(info.value)


def test_protocol_options_one_rule_for_config_and_arguments(tmp_path):
    sysu, regdb = get_dataset("sysu"), get_dataset("regdb")
    with pytest.raises(ConfigError, match=r"--direction='v2t' does not apply to SYSU-MM01 "
                                          r"\(data\.dataset=sysu; its protocol options: --mode"):
        sysu.check_applicable({"direction": "v2t", "mode": None})
    with pytest.raises(ConfigError, match=r"--split-file='x' does not apply to RegDB"):
        regdb.check_applicable({"split_file": "x"})
    sysu.check_applicable({"mode": "indoor", "direction": None})  # its own option, or not given
    cfg = tmp_path / "c.yaml"
    cfg.write_text("eval:\n  direction: t2v\n")
    with pytest.raises(ConfigError, match=r"eval\.direction='t2v' does not apply to SYSU-MM01 "
                                          r".*leave eval\.direction at its default 'v2t'"):
        load_config(cfg)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"])
def test_an_empty_config_file_is_an_error(tmp_path, text):
    cfg = tmp_path / "empty.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=r"empty\.yaml: the config file is empty"):
        load_config(cfg)


def test_idx_file_with_a_byte_order_mark(tmp_path):
    idx = tmp_path / "train.txt"
    idx.write_bytes("\ufeffVisible/1.bmp 0\r\nThermal/1.bmp 0\r\n".encode())
    assert parse_list_file(idx, "x") == [("Visible/1.bmp", 0), ("Thermal/1.bmp", 0)]


def test_sampler_images_per_identity(caplog):
    rgb = np.repeat(np.arange(4), [3, 5, 2, 2])  # at most 5 RGB images per id
    ir = np.repeat(np.arange(4), 6)
    with pytest.raises(ConfigError, match=r"sampler\.num_per_modality=6 is larger than any "
                                          r"identity's RGB images \(the most one id has: 5; 12"):
        CrossModalityIdentitySampler(rgb, ir, num_ids=2, num_per_modality=6)
    with caplog.at_level(logging.WARNING):
        CrossModalityIdentitySampler(rgb, ir, num_ids=2, num_per_modality=4)
    assert "num_per_modality=4 exceeds the RGB images of 3 of 4 identities (median 2)" \
        in caplog.text
    caplog.clear()
    CrossModalityIdentitySampler(rgb, ir, num_ids=2, num_per_modality=2)
    assert not caplog.text
