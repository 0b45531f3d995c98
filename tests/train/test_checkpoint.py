"""Checkpoint format, atomic writes and RNG state (train.checkpoint)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from df2am.errors import CheckpointError
from df2am.train import checkpoint as ck


def _full(value: float) -> dict:
    return {
        "format_version": ck.FORMAT_VERSION,
        "model": {"w": torch.full((3, 2), value)},
        "num_classes": 5,
        "config": {"name": "x"},
        "epoch": 1,
        "optimizer": None,
        "scheduler": None,
        "sampler": {"seed": 0, "epoch": 1},
        "rng": ck.rng_state(),
        "scaler": None,
    }


def test_roundtrip_with_weights_only_load(tmp_path):
    path = ck.save_checkpoint(tmp_path / "sub" / "last.pt", _full(2.5))
    obj = ck.load_checkpoint(path)
    assert set(ck.REQUIRED_KEYS) <= set(obj)
    assert torch.equal(obj["model"]["w"], torch.full((3, 2), 2.5))
    assert obj["sampler"] == {"seed": 0, "epoch": 1}
    # Nothing but the target in the folder: the temp file was renamed, not copied.
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_crash_while_writing_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ck.save_checkpoint(path, _full(1.0))
    before = path.read_bytes()

    real_save = torch.save

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial data")  # half a zip header, then the "crash"
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    # A plain CheckpointError naming the file and the cause (the OSError is its __cause__).
    with pytest.raises(CheckpointError, match=r"last\.pt: disk full.*previous last\.pt"):
        ck.save_checkpoint(path, _full(9.0))
    monkeypatch.setattr(torch, "save", real_save)

    assert path.read_bytes() == before
    assert torch.equal(ck.load_checkpoint(path)["model"]["w"], torch.full((3, 2), 1.0))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # temp file removed


def test_missing_unreadable_and_incomplete_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*nope.pt"):
        ck.load_checkpoint(tmp_path / "nope.pt")

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt: not a df2am checkpoint: not a PyTorch"):
        ck.load_checkpoint(bad)

    partial = _full(0.0)
    del partial["optimizer"]
    ck.save_checkpoint(tmp_path / "p.pt", partial)
    with pytest.raises(CheckpointError, match=r"p\.pt: checkpoint lacks key 'optimizer'"):
        ck.load_checkpoint(tmp_path / "p.pt")
    # A model-only reader asks for fewer keys.
    assert ck.load_checkpoint(tmp_path / "p.pt", required=ck.MODEL_KEYS)["num_classes"] == 5

    future = _full(0.0)
    future["format_version"] = 99
    ck.save_checkpoint(tmp_path / "f.pt", future)
    with pytest.raises(CheckpointError, match="format_version 99"):
        ck.load_checkpoint(tmp_path / "f.pt")


def test_rng_state_survives_save_and_load(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.random()
    np.random.rand(5)
    torch.rand(5)
    ck.save_checkpoint(tmp_path / "r.pt", {"rng": ck.rng_state()})
    expected = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    # Scramble every generator, then restore from the file.
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    ck.set_rng_state(ck.load_checkpoint(tmp_path / "r.pt", required=["rng"])["rng"])
    got = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    assert got == expected


def test_not_a_checkpoint_is_one_plain_sentence(tmp_path):
    """Text, empty, truncated, a zip or a pickle of something else, a pickle needing code:
    one sentence naming the file, never torch's advice to load with weights_only=False."""
    import argparse
    import pickle
    import zipfile

    good = tmp_path / "good.pt"
    ck.save_checkpoint(good, _full(0.0))
    raw = good.read_bytes()
    (tmp_path / "text.pt").write_text("hello\n")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "trunc.pt").write_bytes(raw[: len(raw) // 2])
    with zipfile.ZipFile(tmp_path / "zip.pt", "w") as z:
        z.writestr("a.txt", "x")
    with open(tmp_path / "plain.pt", "wb") as fh:
        pickle.dump({"a": 1}, fh)
    torch.save({"config": argparse.Namespace(a=1)}, tmp_path / "code.pt")
    expected = {
        "text.pt": "not a PyTorch file (text or another format)",
        "empty.pt": "the file is empty (0 bytes)",
        "trunc.pt": "a truncated or corrupt PyTorch file",
        "zip.pt": "a zip archive that is not a PyTorch checkpoint",
        "plain.pt": "a Python pickle that is not a PyTorch checkpoint",
        "code.pt": "it holds a Python object (argparse.Namespace) that only running code",
    }
    for name, why in expected.items():
        with pytest.raises(CheckpointError) as info:
            ck.load_checkpoint(tmp_path / name)
        msg = str(info.value)
        assert msg == f"{tmp_path / name}: not a df2am checkpoint: " + msg.split(": ", 2)[2]
        assert why in msg and "weights_only" not in msg and "\n" not in msg
    with pytest.raises(CheckpointError, match="is a folder, not a checkpoint file"):
        ck.load_checkpoint(tmp_path)


def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path):
    obj = _full(0.0)
    name = next(k for k, v in obj["model"].items() if v.is_floating_point())
    obj["model"][name] = obj["model"][name].clone()
    obj["model"][name].view(-1)[0] = float("inf")
    ck.save_checkpoint(tmp_path / "inf.pt", obj)
    with pytest.raises(CheckpointError, match=rf"inf\.pt: weight '{name}' holds NaN or infinite"):
        ck.load_checkpoint(tmp_path / "inf.pt")
