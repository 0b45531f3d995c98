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
