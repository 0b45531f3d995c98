"""``protocol.test_split`` / ``train_records`` dispatch and the ``df2am protocol`` / ``data synth``
commands."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from df2am.cli import main
from df2am.data.datasets import regdb, sysu
from df2am.data.protocol import test_split, train_records, trial_numbers
from df2am.errors import ConfigError


def run_json(capsys, argv: list[str]) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def as_dicts(records) -> list[dict]:
    return [{"path": r.path, "pid": r.pid, "cam": r.cam} for r in records]


# ---------------------------------------------------------------------------------- dispatch


def test_trial_numbers() -> None:
    assert list(trial_numbers("sysu")) == list(range(10))
    assert list(trial_numbers("regdb")) == list(range(1, 11))
    with pytest.raises(ConfigError, match="dataset: expected one of"):
        trial_numbers("market")


def test_test_split_dispatches_to_the_readers(sysu_root: Path, regdb_root: Path) -> None:
    query, gallery = test_split("sysu", sysu_root, mode="indoor", trial=3)
    assert query == sysu.sysu_query(sysu_root, "indoor")
    assert gallery == sysu.sysu_gallery(sysu_root, "indoor", 3)
    # The engine passes every eval option; the ones that do not apply are ignored.
    assert test_split("sysu", sysu_root, trial=3, direction="t2v", split_file="") == (
        sysu.sysu_query(sysu_root, "all"),
        sysu.sysu_gallery(sysu_root, "all", 3),
    )
    assert test_split("regdb", regdb_root, trial=2, direction="t2v", mode="indoor") == (
        regdb.regdb_test(regdb_root, 2, "t2v")
    )


def test_test_split_validates_trial_per_dataset(sysu_root: Path, regdb_root: Path) -> None:
    with pytest.raises(ConfigError, match=r"SYSU-MM01 trials are numbered 0\.\.9"):
        test_split("sysu", sysu_root, trial=10)
    with pytest.raises(ConfigError, match=r"RegDB trials are numbered 1\.\.10"):
        test_split("regdb", regdb_root, trial=0)


def test_train_records(sysu_root: Path, regdb_root: Path) -> None:
    assert train_records("sysu", sysu_root) == sysu.read_sysu_train(sysu_root)
    assert train_records("regdb", regdb_root, trial=4) == regdb.read_regdb_train(regdb_root, 4)


# ------------------------------------------------------------------------------ CLI protocol


def test_protocol_sysu_json(capsys, sysu_root: Path) -> None:
    out = run_json(
        capsys, ["protocol", "sysu", "--root", str(sysu_root), "--mode", "all", "--trial", "5"]
    )
    assert list(out) == ["query", "gallery"]
    # Query by hand (conftest: test ids 3, 5, 7; cam3 before cam6; id 3 has no cam6).
    assert [(q["pid"], q["cam"]) for q in out["query"]] == (
        [(3, 3)] * 3 + [(5, 3)] * 2 + [(5, 6)] * 4 + [(7, 3)] + [(7, 6)] * 2
    )
    assert out["query"][0] == {"path": "cam3/0003/0001.jpg", "pid": 3, "cam": 3}
    assert out["gallery"] == as_dicts(sysu.sysu_gallery(sysu_root, "all", 5))
    assert [(g["pid"], g["cam"]) for g in out["gallery"]] == [
        (3, 1), (3, 4), (3, 5), (5, 1), (5, 2), (5, 4), (5, 5), (7, 4), (7, 5)
    ]  # fmt: skip


def test_protocol_sysu_indoor_differs(capsys, sysu_root: Path) -> None:
    out = run_json(
        capsys, ["protocol", "sysu", "--root", str(sysu_root), "--mode", "indoor", "--trial", "0"]
    )
    assert [(g["pid"], g["cam"]) for g in out["gallery"]] == [(3, 1), (5, 1), (5, 2)]


def test_protocol_sysu_official_with_split_file(
    capsys, sysu_root: Path, tmp_path: Path, save_rand_perm_cam, perm_cells
) -> None:
    # Every (id, cam) folder of the fixture gets "the last image first" in every row.
    counts = {3: {1: 4, 4: 2, 5: 3}, 5: {1: 3, 2: 5, 4: 1, 5: 2}, 7: {4: 3, 5: 2}}
    split = save_rand_perm_cam(tmp_path / "perm.mat", perm_cells(counts, 7, descending=True))
    argv = ["protocol", "sysu", "--root", str(sysu_root), "--mode", "all", "--trial", "1"]
    out = run_json(capsys, [*argv, "--sampler", "official", "--split-file", str(split)])
    assert [g["path"] for g in out["gallery"]] == [
        "cam1/0003/0004.jpg",
        "cam1/0005/0003.jpg",
        "cam2/0005/0005.jpg",
        "cam4/0003/0002.jpg",
        "cam4/0005/0001.jpg",
        "cam4/0007/0003.jpg",
        "cam5/0003/0003.jpg",
        "cam5/0005/0002.jpg",
        "cam5/0007/0002.jpg",
    ]


def test_protocol_regdb_both_directions(capsys, regdb_root: Path) -> None:
    base = ["protocol", "regdb", "--root", str(regdb_root), "--trial", "1"]
    v2t = run_json(capsys, [*base, "--direction", "v2t"])
    t2v = run_json(capsys, [*base, "--direction", "t2v"])
    # Trial 1 of the fixture: test ids 4, 1 -> labels 0, 1; two images each.
    assert v2t["query"] == [
        {"path": f"Visible/{pid}/female_back_v_{k:05d}_{pid}.bmp", "pid": label, "cam": 1}
        for label, pid in enumerate([4, 1])
        for k in range(2)
    ]
    assert [g["path"].split("/")[0] for g in v2t["gallery"]] == ["Thermal"] * 4
    assert {g["cam"] for g in v2t["gallery"]} == {2}
    assert t2v == {"query": v2t["gallery"], "gallery": v2t["query"]}


def test_protocol_errors_are_one_line_and_exit_2(capsys, sysu_root: Path, tmp_path: Path) -> None:
    argv = ["protocol", "sysu", "--root", str(sysu_root), "--mode", "all", "--trial", "0"]
    assert main([*argv, "--sampler", "official"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "rand_perm_cam.mat" in err and err.count("\n") == 1
    assert main([*argv[:-1], "12"]) == 2
    assert "0..9" in capsys.readouterr().err
    assert main(["protocol", "regdb", "--root", str(tmp_path), "--trial", "1", "--direction",
                 "v2t"]) == 2  # fmt: skip
    assert "lacks Visible/" in capsys.readouterr().err


def test_protocol_rejects_bad_choices(capsys, sysu_root: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main(["protocol", "sysu", "--root", str(sysu_root), "--mode", "outdoor", "--trial", "0"])
    assert info.value.code == 2


# --------------------------------------------------------------------------------- data synth


def test_data_synth_wiring(monkeypatch, capsys, tmp_path: Path) -> None:
    calls = []

    def fake_write_synthetic(out, layout, **kwargs):
        calls.append((out, layout, kwargs))
        return Path(out)

    fake = types.ModuleType("df2am.data.synthetic")
    fake.write_synthetic = fake_write_synthetic  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "df2am.data.synthetic", fake)
    out = str(tmp_path / "synth")
    argv = ["data", "synth", "--layout", "regdb", "--out", out]
    assert main([*argv, "--ids", "6", "--seed", "3", "--size", "32x16", "--workers", "2"]) == 0
    assert calls[-1] == (out, "regdb", {"num_ids": 6, "seed": 3, "size": (32, 16), "workers": 2})
    assert main([*argv, "--split", "0.5,0.25"]) == 0
    assert calls[-1] == (out, "regdb", {"split": (0.5, 0.25), "workers": 1})
    assert main(argv) == 0
    assert calls[-1] == (out, "regdb", {"workers": 1})
    assert "wrote synthetic regdb dataset" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([*argv, "--size", "32by16"])


def test_data_synth_output_is_readable(capsys, tmp_path: Path) -> None:
    synthetic = pytest.importorskip("df2am.data.synthetic")
    if not hasattr(synthetic, "write_synthetic"):
        pytest.skip("df2am.data.synthetic.write_synthetic not available yet")
    for layout in ("sysu", "regdb"):
        out = tmp_path / layout
        argv = ["data", "synth", "--layout", layout, "--out", str(out), "--ids", "8"]
        assert main([*argv, "--seed", "0", "--size", "32x16"]) == 0
        assert f"wrote synthetic {layout} dataset" in capsys.readouterr().out
        trial = ["--trial", "0", "--mode", "all"] if layout == "sysu" else ["--trial", "1"]
        extra = [] if layout == "sysu" else ["--direction", "v2t"]
        listed = run_json(capsys, ["protocol", layout, "--root", str(out), *trial, *extra])
        assert listed["query"] and listed["gallery"]
        assert all((out / rec["path"]).is_file() for rec in listed["query"] + listed["gallery"])


def test_identity_key_per_dataset() -> None:
    """What the trainer's train/test overlap check compares, dataset by dataset."""
    from df2am.data.datasets import get_dataset
    from df2am.data.records import ImageRecord

    sysu = ImageRecord("cam1/0006/0001.jpg", 6, 1, "rgb", 2)
    regdb = ImageRecord("Visible/17/female_v_1.bmp", 0, 1, "rgb", 0)
    llcm_train = ImageRecord("train_vis/0003/a.jpg", 5, 0, "rgb", 5)
    llcm_test = ImageRecord("test_vis/cam4/0012/0001.jpg", 12, 4, "rgb")
    assert get_dataset("sysu").identity_key(sysu) == 6
    assert get_dataset("regdb").identity_key(regdb) == "Visible/17"  # labels restart per split
    assert get_dataset("llcm").identity_key(llcm_train) is None  # a label, not a release id
    assert get_dataset("llcm").identity_key(llcm_test) == 12
