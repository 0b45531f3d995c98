"""Faults and data safety of training (issue 14): tiny CPU runs on synthetic data."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from df2am.config import load_config
from df2am.errors import CheckpointError, ConfigError, DatasetError
from df2am.train import checkpoint as ckpt_mod
from df2am.train import divergence, runlock, trainer
from df2am.train.checkpoint import load_checkpoint, save_checkpoint
from df2am.train.divergence import TrainingDivergedError
from df2am.train.metrics_log import read_metrics
from tiny import TINY_TRAIN

# One epoch of one iteration, no final test, no image cache.
TINY = [*TINY_TRAIN, "train.epochs=1", "train.max_iters_per_epoch=1", "train.final_eval=false",
        "optim.warmup_epochs=1", "data.cache_dir=none"]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    from df2am.data.synthetic import write_synthetic

    out = tmp_path_factory.mktemp("syn") / "sysu"
    return write_synthetic(
        out, "sysu", num_ids=12, size=(64, 32), images_per_camera=(2, 3), images_per_modality=4
    )


@pytest.fixture(scope="module")
def done_run(tiny_root, tmp_path_factory) -> Path:
    """A finished 1-epoch run (no final test), copied by tests that change it."""
    run = tmp_path_factory.mktemp("done") / "run"
    trainer.train(_cfg(tiny_root), run)
    return run


def _cfg(root: Path, *extra: str):
    return load_config(None, [*TINY, f"data.root={root}", *extra])


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _no_epoch(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("an epoch started")

    monkeypatch.setattr(trainer, "_train_epoch", fail)


# --------------------------------------------------------------------------- 0. precision


def test_emulated_bf16_fails_before_epoch_1_unless_allowed(tiny_root, tmp_path, monkeypatch,
                                                          caplog):
    monkeypatch.setattr("df2am.train.precision.cpu_has_native_bf16", lambda *a: False)
    real = trainer._train_epoch
    _no_epoch(monkeypatch)
    with pytest.raises(ConfigError, match="bf16.*emulated.*allow_slow_bf16"):
        trainer.train(_cfg(tiny_root, "train.precision=bf16"), tmp_path / "a")
    assert not (tmp_path / "a" / "config.yaml").exists()
    # auto resolves to the concrete fp32, which the run records.
    monkeypatch.setattr(trainer, "_train_epoch", real)
    trainer.train(_cfg(tiny_root, "train.precision=auto"), tmp_path / "b")
    assert load_config(tmp_path / "b/config.yaml").train.precision == "fp32"
    rec = read_metrics(tmp_path / "b", "precision")[0]
    assert rec["requested"] == "auto" and rec["precision"] == "fp32"
    _no_epoch(monkeypatch)  # allowed: it gets as far as epoch 1 (with a warning)
    with caplog.at_level("WARNING"), pytest.raises(AssertionError, match="an epoch started"):
        trainer.train(_cfg(tiny_root, "train.precision=bf16", "train.allow_slow_bf16=true"),
                      tmp_path / "c")
    assert "allow_slow_bf16=true" in caplog.text
    assert load_config(tmp_path / "c/config.yaml").train.precision == "bf16"


# --------------------------------------------------------------------------- 1. data checks


def test_a_bad_data_root_fails_before_the_run_directory_is_made(tiny_root, tmp_path):
    """It used to fail after config.yaml was written: the same command, root fixed, was then
    refused ("already holds an unfinished run")."""
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="data.root is empty"):
        trainer.train(load_config(None, TINY), run)
    with pytest.raises(DatasetError, match=r"SYSU-MM01 root .*elsewhere is not a directory"):
        trainer.train(_cfg(tmp_path / "elsewhere"), run)
    (tmp_path / "wrong").mkdir()
    with pytest.raises(DatasetError, match="lacks camera folder"):
        trainer.train(_cfg(tmp_path / "wrong"), run)
    assert not run.exists()


def test_missing_test_split_and_id_overlap_fail_before_epoch_1(tiny_root, tmp_path,
                                                               monkeypatch):
    import shutil

    from df2am.data.datasets import get_dataset

    _no_epoch(monkeypatch)
    root = tmp_path / "sysu"
    shutil.copytree(tiny_root, root)
    (root / "exp" / "test_id.txt").unlink()
    with pytest.raises(DatasetError):
        trainer.train(_cfg(root, "train.final_eval=true"), tmp_path / "r1")
    ds = type(get_dataset("sysu"))
    real = ds.test_split

    def leaky(self, root, trial, options):
        q, g = real(self, root, trial, options)
        return q, [*g, *self.train_records(root)[:1]]

    monkeypatch.setattr(ds, "test_split", leaky)
    with pytest.raises(DatasetError, match="training id.*also in the test split"):
        trainer.train(_cfg(tiny_root, "train.final_eval=true"), tmp_path / "r2")


# --------------------------------------------------------------------------- 2. resume refusals


def test_resume_refuses_hand_edit_wrong_weights_and_shorter_schedule(done_run, tmp_path,
                                                                    tiny_root):
    run = _copy(done_run, tmp_path / "run")
    (run / "model_final.pt").unlink()  # an unfinished run
    cfg_path = run / "config.yaml"
    text = cfg_path.read_text()
    cfg_path.write_text(text.replace("lr: 0.01", "lr: 0.5"))
    with pytest.raises(ConfigError, match=r"edited by hand.*|optim\.lr"):
        trainer.train(load_config(cfg_path), run, resume=True)
    cfg_path.write_text(text)
    # Weights of another model (a classifier of another size).
    last = load_checkpoint(run / "checkpoints/last.pt")
    key = next(k for k, v in last["model"].items() if v.ndim == 2)
    last["model"][key] = torch.zeros(3, 3)
    save_checkpoint(run / "checkpoints/last.pt", last)
    with pytest.raises(CheckpointError, match=f"weights do not match.*'{key}'"):
        trainer.train(load_config(cfg_path), run, resume=True)
    # A schedule shorter than what was trained.
    last = load_checkpoint(done_run / "checkpoints/last.pt")
    last["epoch"] = 2
    save_checkpoint(run / "checkpoints/last.pt", last)
    with pytest.raises(ConfigError, match="already trained 2 epochs.*cannot be shortened"):
        trainer.train(load_config(cfg_path), run, resume=True)


def test_extending_a_finished_run_needs_extend_and_is_recorded(done_run, tmp_path):
    run = _copy(done_run, tmp_path / "run")
    cfg = load_config(run / "config.yaml", ["train.epochs=2"])
    with pytest.raises(ConfigError, match="--extend"):
        trainer.train(cfg, run, resume=True)
    result = trainer.train(cfg, run, resume=True, extend=True)
    assert result.epochs_completed == 2 and result.resumed_from == 1
    rec = read_metrics(run, "extend")[0]
    assert (rec["from_epochs"], rec["to_epochs"], rec["at_epoch"]) == (1, 2, 1)
    hist = load_checkpoint(run / "checkpoints/last.pt")["history"]
    assert hist[0]["event"] == "extend" and hist[0]["to_epochs"] == 2
    assert "extending the run from 1 to 2 epochs" in (run / "train.log").read_text()


# --------------------------------------------------------------------------- 3. run lock


def _write_lock(run: Path, pid: int) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    path = run / runlock.LOCK_NAME
    path.write_text(json.dumps({"pid": pid, "host": socket.gethostname(),
                                "started": time.time()}))
    return path


def test_live_lock_refuses_second_process_stale_lock_is_replaced(done_run, tmp_path, caplog):
    run = _copy(done_run, tmp_path / "run")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        _write_lock(run, other.pid)
        with pytest.raises(runlock.RunLockedError, match=f"pid {other.pid}"):
            trainer.train(load_config(run / "config.yaml"), run, resume=True)
        assert runlock.read_lock(run / ".lock")["pid"] == other.pid  # left alone
    finally:
        other.kill()
        other.wait()
    # The process is gone now: its lock is stale, reported and replaced, removed at the end.
    with caplog.at_level("WARNING"):
        trainer.train(load_config(run / "config.yaml"), run, resume=True)
    assert "stale lock" in caplog.text and str(other.pid) in caplog.text
    assert not (run / ".lock").exists()


def test_lock_is_removed_when_training_fails(tiny_root, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(trainer, "_train_epoch", boom)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.train(_cfg(tiny_root), tmp_path / "run")
    assert not (tmp_path / "run" / ".lock").exists()


# --------------------------------------------------------------------------- 4. debris


def test_temp_files_removed_and_interrupted_epoch_checkpoint_rewritten(done_run, tmp_path,
                                                                      caplog):
    run = _copy(done_run, tmp_path / "run")
    (run / "model_final.pt").unlink()
    (run / "checkpoints/epoch_001.pt").unlink()  # killed between last.pt and epoch_001.pt
    debris = [run / "checkpoints/.last.pt.tmp", run / ".model_final.pt.tmp"]
    for d in debris:
        d.write_bytes(b"half a checkpoint")
    with caplog.at_level("WARNING"):
        trainer.train(load_config(run / "config.yaml"), run, resume=True)
    assert not any(d.exists() for d in debris)
    assert "removed" in caplog.text and ".last.pt.tmp" in caplog.text
    assert load_checkpoint(run / "checkpoints/epoch_001.pt")["epoch"] == 1


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_checkpoint_files_get_umask_permissions(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = save_checkpoint(tmp_path / "x.pt", {"a": torch.zeros(2)})
        (tmp_path / ".y.pt.tmp").write_bytes(b"")
        os.chmod(tmp_path / ".y.pt.tmp", 0o600)  # a killed writer's 0600 temp file
        path2 = save_checkpoint(tmp_path / "y.pt", {"a": torch.zeros(2)})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert path2.stat().st_mode & 0o777 == 0o666 & ~umask


# --------------------------------------------------------------------------- 5. divergence


def test_non_finite_loss_stops_with_epoch_step_and_lr(tiny_root, tmp_path, monkeypatch):
    real = trainer._train_step

    def nan_step(run, batch):
        total, parts = real(run, batch)
        return total * float("nan"), parts

    monkeypatch.setattr(trainer, "_train_step", nan_step)
    with pytest.raises(TrainingDivergedError,
                       match=r"epoch 1, step 1/1: the loss became nan.*lr.*optim.lr=0.01"):
        trainer.train(_cfg(tiny_root), tmp_path / "run")
    assert not (tmp_path / "run/checkpoints/last.pt").exists()
    assert read_metrics(tmp_path / "run", "diverged")[0]["iter"] == 1


def test_exploding_loss_over_running_median(tiny_root, tmp_path, monkeypatch):
    real = trainer._train_step
    calls = {"n": 0}

    def exploding(run, batch):
        total, parts = real(run, batch)
        calls["n"] += 1
        return total * 0 + (1.0 if calls["n"] < 6 else 100.0), parts

    monkeypatch.setattr(trainer, "_train_step", exploding)
    monkeypatch.setattr(divergence, "DIVERGENCE_WARMUP_STEPS", 3)
    extra = ["train.max_iters_per_epoch=6"]
    probe = _cfg(tiny_root)
    if hasattr(probe.train, "divergence_factor"):
        extra.append("train.divergence_factor=10")
    else:  # until config.py has the key: a class attribute the trainer's getattr finds
        monkeypatch.setattr(type(probe.train), "divergence_factor", 10.0, raising=False)
    with pytest.raises(TrainingDivergedError,
                       match=r"step 6/6: the loss 100 exceeds train.divergence_factor=10"):
        trainer.train(_cfg(tiny_root, *extra), tmp_path / "run")


@pytest.mark.parametrize("optim", ["adam", "sgd"])
def test_absurd_learning_rate_stops_by_default(optim, tiny_root, tmp_path):
    """optim.lr=1e6 with the default guard (issue 21): stopped with epoch, step and lr, and
    nothing of it written (no last.pt, no model_final.pt)."""
    cfg = _cfg(tiny_root, f"optim.name={optim}", "optim.lr=1e6", "optim.warmup_epochs=0",
               "train.max_iters_per_epoch=4", "train.log_every=2")
    assert cfg.train.divergence_factor == divergence.DEFAULT_DIVERGENCE_FACTOR == 1000
    with pytest.raises(TrainingDivergedError,
                       match=r"epoch 1, step \d/4: the loss .*(became|exceeds train\."
                             r"divergence_factor=1000 x the median of the run's first).*"
                             r"current lr: .*1e\+06.*optim.lr=1e\+06"):
        trainer.train(cfg, tmp_path / "run")
    assert not (tmp_path / "run/checkpoints/last.pt").exists()
    assert not (tmp_path / "run/model_final.pt").exists()
    (rec,) = read_metrics(tmp_path / "run", "diverged")
    assert rec["epoch"] == 1 and rec["iter"] >= 2


def test_guard_off_with_factor_zero_and_quiet_on_tiny_runs(tiny_root, tmp_path, monkeypatch):
    """divergence_factor=0 still turns the comparison off (a 1e6× jump passes); the default
    guard never stops a sound tiny run (every tiny run of the suite trains with it, too)."""
    real = trainer._train_step
    calls = {"n": 0}

    def jump(run, batch):
        total, parts = real(run, batch)
        calls["n"] += 1
        return total * (1.0 if calls["n"] < 3 else 1e6), parts

    monkeypatch.setattr(trainer, "_train_step", jump)
    trainer.train(_cfg(tiny_root, "train.divergence_factor=0", "train.max_iters_per_epoch=4"),
                  tmp_path / "off")
    assert (tmp_path / "off/checkpoints/last.pt").is_file()
    monkeypatch.setattr(trainer, "_train_step", real)
    trainer.train(_cfg(tiny_root, "train.max_iters_per_epoch=4", "train.epochs=2"),
                  tmp_path / "on")
    assert (tmp_path / "on/model_final.pt").is_file()
    assert not read_metrics(tmp_path / "on", "diverged")


def test_loss_history_judges_against_the_first_steps():
    h = divergence.LossHistory()
    assert h.judge(5.0, 1000) is None  # nothing to compare with yet
    h.append(5.0)
    assert h.judge(4000.0, 1000) is None  # 800×: a bad step, not divergence
    assert "first 1 step losses 5" in h.judge(5001.0, 1000)
    assert h.judge(float("inf"), 0) == "the loss became inf"
    assert h.judge(1e30, 0) is None  # factor 0: off
    for _ in range(19):
        h.append(5.0)
    for _ in range(200):
        h.append(0.01)  # training lowers the loss: the running median follows, the early one
    assert len(h.early) == divergence.DIVERGENCE_EARLY_STEPS  # stays the first 20
    assert "running median 0.01" in h.judge(15.0, 1000)  # 1500× now, 3× the first steps
    zero = divergence.LossHistory(early=[0.0])
    assert zero.judge(1.0, 1000) is None  # no growth factor from a zero reference


def test_non_finite_weights_are_never_checkpointed(tiny_root, tmp_path, monkeypatch):
    real = trainer._train_step

    def poison(run, batch):
        out = real(run, batch)
        with torch.no_grad():
            next(run.model.parameters()).fill_(float("inf"))
        return out

    monkeypatch.setattr(trainer, "_train_step", poison)
    with pytest.raises(TrainingDivergedError, match="NaN/inf.*not writing"):
        trainer.train(_cfg(tiny_root), tmp_path / "run")
    assert not (tmp_path / "run/checkpoints/last.pt").exists()


# --------------------------------------------------------------------------- 6. disk full


def test_disk_full_mid_write_names_file_and_keeps_previous(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "last.pt", {"epoch": 1, "w": torch.ones(10)})
    before = path.read_bytes()
    real_save = torch.save

    def full_disk(obj, fh, *a, **k):
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt_mod.torch, "save", full_disk)
    with pytest.raises(CheckpointError,
                       match=r"last\.pt: No space left on device \(ENOSPC\).*previous last\.pt "
                             r"is unchanged"):
        save_checkpoint(path, {"epoch": 2, "w": torch.zeros(10)})
    monkeypatch.setattr(ckpt_mod.torch, "save", real_save)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]  # no temp file left


# --------------------------------------------------------------------------- 7. odd names


def test_odd_characters_in_run_dir(tiny_root, tmp_path):
    run = tmp_path / "run with spaces ünïcødé"
    result = trainer.train(_cfg(tiny_root), run)
    assert result.final_checkpoint.is_file()
    assert load_checkpoint(run / "checkpoints/last.pt")["epoch"] == 1
    # An undecodable byte: a plain message before anything is written.
    bad = tmp_path / os.fsdecode(b"run\xff")
    with pytest.raises(ConfigError, match=r"not valid UTF-8.*another --out"):
        trainer.train(_cfg(tiny_root), bad)
    assert not os.path.exists(bad)
