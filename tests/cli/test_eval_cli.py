"""``df2am eval``: defaults from the checkpoint, results.json + cmc.png, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from df2am.cli import main
from df2am.config import Config, ModelConfig
from df2am.data.synthetic import write_synthetic
from df2am.models import build_model
from tiny import save_model

KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("evalcli")
    root = write_synthetic(base / "sysu", "sysu", num_ids=8, seed=0, size=(32, 16))
    cfg = Config()
    cfg.model = ModelConfig(depth=18, num_parts=2)
    cfg.data.root = str(root)
    cfg.data.height, cfg.data.width = 32, 16
    cfg.data.num_workers = 0
    cfg.eval.trials = 3
    torch.manual_seed(0)
    model = build_model(cfg.model, num_classes=5)
    path = save_model(base / "run" / "model_final.pt", model, cfg, 5)
    return path, root


def test_eval_writes_results_and_table(setup, capsys: pytest.CaptureFixture[str]):
    ckpt, root = setup
    assert main(["eval", str(ckpt), "--root", str(root), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    # default output folder, trials from the checkpoint's config (3)
    folder = ckpt.parent / "eval_sysu_all"
    doc = json.loads((folder / "results.json").read_text())
    for key in KEYS:
        assert key in doc and f"{key}_std" in doc
        assert f"{doc[key]:.2f}" in out  # the printed table shows the same numbers
    assert doc["protocol"]["trials"] == [0, 1, 2]
    assert doc["protocol"]["feature"] == "fused" and doc["protocol"]["flip"] is False
    assert doc["checkpoint"] == str(ckpt.resolve())
    assert (folder / "cmc.png").is_file()
    for name in ("Rank-1", "Rank-5", "Rank-10", "Rank-20", "mAP", "mINP"):
        assert name in out


def test_eval_diagnose_prints_and_writes_the_alignment(setup, tmp_path: Path, capsys):
    ckpt, root = setup
    out = tmp_path / "diag"
    assert main(["eval", str(ckpt), "--root", str(root), "--device", "cpu", "--diagnose",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    doc = json.loads((out / "results.json").read_text())
    align = doc["alignment"]
    assert f"{align['ir2rgb_mAP']:6.2f}" in printed and "within IR" in printed
    assert align["cross_gap"] == pytest.approx(align["cross_neg_dist"] - align["cross_pos_dist"])


def test_eval_options_override_checkpoint_config(setup, tmp_path: Path):
    ckpt, root = setup
    argv = ["eval", str(ckpt), "--root", str(root), "--out", str(tmp_path / "o"),
            "--trials", "2", "--mode", "indoor", "--feature", "bn_global", "--flip"]
    assert main(argv) == 0
    proto = json.loads((tmp_path / "o" / "results.json").read_text())["protocol"]
    assert proto["trials"] == [0, 1] and proto["mode"] == "indoor"
    assert proto["feature"] == "bn_global" and proto["flip"] is True


@pytest.mark.parametrize(
    "argv_tail, message",
    [
        (["--trials", "11"], "1..10"),
        (["--dataset", "regdb"], "RegDB root"),
    ],
)
def test_eval_user_errors_exit_2(setup, capsys, argv_tail, message):
    ckpt, root = setup
    assert main(["eval", str(ckpt), "--root", str(root), *argv_tail]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err
    assert "Traceback" not in err


def test_eval_on_another_dataset_takes_its_protocol_defaults(setup, tmp_path: Path):
    """The checkpoint's eval.* options belong to its own dataset (SYSU-MM01, whose config
    holds the unused default direction v2t): on LLCM eval and visualize said "eval.direction:
    LLCM expects one of [...], got 'v2t'" although no direction was asked for."""
    ckpt, _ = setup
    llcm = write_synthetic(tmp_path / "llcm", "llcm", num_ids=6, seed=0, size=(32, 16),
                           images_per_modality=2)
    assert main(["eval", str(ckpt), "--root", str(llcm), "--dataset", "llcm", "--trials", "1",
                 "--out", str(tmp_path / "o"), "--device", "cpu"]) == 0
    proto = json.loads((tmp_path / "o" / "results.json").read_text())["protocol"]
    assert proto["dataset"] == "llcm" and proto["direction"] == "i2v"
    assert main(["visualize", str(ckpt), "--root", str(llcm), "--dataset", "llcm", "--out",
                 str(tmp_path / "v"), "--queries", "1", "--device", "cpu"]) == 0
    doc = json.loads((tmp_path / "v" / "visualize.json").read_text())
    assert doc["options"]["direction"] == "i2v"


def test_eval_bad_paths_exit_2(setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    ckpt, root = setup
    assert main(["eval", str(tmp_path / "missing.pt"), "--root", str(root)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["eval", str(ckpt), "--root", str(tmp_path / "nowhere")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_eval_unreadable_checkpoint_exit_2(setup, tmp_path: Path, capsys):
    _, root = setup
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    assert main(["eval", str(bad), "--root", str(root)]) == 2
    assert "bad.pt" in capsys.readouterr().err


def test_evaluate_checkpoint_api_matches_cli(setup, tmp_path: Path):
    from df2am.deploy.api import evaluate_checkpoint

    ckpt, root = setup
    report = evaluate_checkpoint(ckpt, root, device="cpu", trials=2, out_dir=tmp_path / "api")
    doc = json.loads((tmp_path / "api" / "results.json").read_text())
    assert report.trials == [0, 1] and doc["checkpoint"] == str(ckpt)
    assert main(["eval", str(ckpt), "--root", str(root), "--trials", "2",
                 "--out", str(tmp_path / "cli")]) == 0
    cli = json.loads((tmp_path / "cli" / "results.json").read_text())
    for key in KEYS:
        assert cli[key] == pytest.approx(doc[key], abs=1e-9)


def test_an_io_error_is_a_plain_message_naming_the_file(monkeypatch, capsys, tmp_path):
    """Disk full (or any OSError) while a command writes: one line naming the file, exit 2."""
    import errno

    from df2am.cli import data_commands, main

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "x.jpg"))

    monkeypatch.setattr("df2am.data.synthetic.write_synthetic", full)
    assert main(["data", "synth", "--layout", "sysu", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {tmp_path / 'out' / 'x.jpg'}: No space left on device"
    assert "Traceback" not in err and data_commands
