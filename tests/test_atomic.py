"""``atomic_write`` / ``atomic_path``: all or nothing, no temporary file left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from df2am.atomic import atomic_path, atomic_write


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_bytes(b"old")
    atomic_write(path, lambda fh: fh.write(b"new"))
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_failing_writer_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_bytes(b"old")

    def half(fh) -> None:
        fh.write(b"ne")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "b.bin") as tmp:
        tmp.write_bytes(b"x")
        raise RuntimeError
    assert not (tmp_path / "b.bin").exists() and not tmp.exists()


def test_check_output_refuses_before_the_work(tmp_path: Path, monkeypatch) -> None:
    from df2am.atomic import check_output
    from df2am.errors import OutputPathError

    a_file = tmp_path / "f"
    a_file.write_text("x")
    assert check_output(tmp_path / "new" / "deeper" / "x.npy", what="--out").name == "x.npy"
    assert check_output(tmp_path / "runs" / "eval", what="--out", folder=True)
    cases = [
        (a_file / "x.npy", False, f"--out {a_file / 'x.npy'}: {a_file} is a file"),
        (a_file / "sub" / "x.npy", False, f"{a_file} is a file"),
        (tmp_path, False, f"--out {tmp_path}: an existing folder, but a file is needed"),
        (a_file, True, f"--out {a_file}: an existing file, but a folder is needed"),
    ]
    for path, folder, message in cases:
        with pytest.raises(OutputPathError) as info:
            check_output(path, what="--out", folder=folder)
        assert message in str(info.value)
    # Permissions: os.access, so the check also holds for root (which writes anywhere).
    monkeypatch.setattr("df2am.atomic.os.access", lambda path, mode: False)
    with pytest.raises(OutputPathError, match=f"the folder {tmp_path} is not writable"):
        check_output(tmp_path / "x.onnx", what="--onnx")
