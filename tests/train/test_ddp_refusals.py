"""A refusal that rank 0 decides reaches every rank (issue 21): two gloo processes on the CPU,
each started directly (``RANK``/``WORLD_SIZE``/``MASTER_*`` in its environment, as torchrun
sets them) so that each one's exit code and message are its own. Before the fix rank 1 waited
at a barrier for the process group's 30-minute timeout; here every process must end within
:data:`TIMEOUT` seconds with the same ``error:`` line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from df2am.train import runlock
from df2am.train.distributed import DistContext, main_decides, share_outcome

SRC = str(Path(__file__).resolve().parents[2] / "src")
TIMEOUT = 150  # seconds per process: start-up (torch import) and a refusal take ~10-30 s here

TINY = [
    "data.height=32", "data.width=16", "data.pad=2", "data.num_workers=0", "model.depth=18",
    "model.num_parts=2", "sampler.num_ids=2", "sampler.num_per_modality=2", "train.device=cpu",
    "train.epochs=1", "train.max_iters_per_epoch=1", "train.log_every=1", "optim.lr=0.01",
    "optim.warmup_epochs=0", "data.cache_dir=none", "eval.trials=1",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(args: list[str], tmp_path: Path) -> list[tuple[int, str]]:
    """``df2am train ARGS`` as rank 0 and rank 1 of one gloo group: (exit code, stderr) each."""
    port = _free_port()
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": str(rank), "LOCAL_RANK": str(rank),
               "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port),
               "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
        cmd = [sys.executable, "-m", "df2am.cli", "train", *args]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, cwd=tmp_path))
    out = []
    try:
        for p in procs:
            _, err = p.communicate(timeout=TIMEOUT)
            out.append((p.returncode, err))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"a rank was still running after {TIMEOUT} s: a refusal did not reach it")
    return out


def _error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert lines, stderr[-2000:]
    return lines[-1]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    from df2am.data.synthetic import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("syn") / "sysu", "sysu", num_ids=12,
                           size=(64, 32), images_per_camera=(2, 3), images_per_modality=4)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
@pytest.mark.parametrize("case", ["used_run_dir", "id_overlap", "run_locked"])
def test_rank0_refusal_stops_both_ranks_with_one_message(case, root, tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("name: ddp_refusal\n")
    run = tmp_path / "run"
    data = root
    expected = {"used_run_dir": "already holds", "id_overlap": "also in the test split",
                "run_locked": "in use by another training process"}[case]
    lock = None
    if case == "used_run_dir":  # a fresh run into a used directory (resume check of rank 0)
        run.mkdir()
        (run / "config.yaml").write_text("name: other\n")
    elif case == "id_overlap":  # training ids that are also test ids
        import shutil

        data = Path(shutil.copytree(root, tmp_path / "overlap"))
        train_ids = (data / "exp/train_id.txt").read_text().strip()
        test_id = (data / "exp/test_id.txt").read_text().strip().split(",")[0]
        (data / "exp/train_id.txt").write_text(f"{train_ids},{test_id}")
    else:  # another live process (this test) holds the run lock
        lock = runlock.acquire(run)
    try:
        results = _two_ranks([str(cfg), *TINY, f"data.root={data}", "--out", str(run)],
                             tmp_path)
    finally:
        if lock is not None:
            runlock.release(lock)
    (rc0, err0), (rc1, err1) = results
    assert rc0 == 2 and rc1 == 2, (err0[-2000:], err1[-2000:])
    assert expected in _error_line(err0)
    assert _error_line(err0) == _error_line(err1)
    assert not (run / "checkpoints").exists()


def test_one_process_outcomes_pass_through():
    ctx = DistContext()
    share_outcome(ctx, None)  # nothing to share on one process
    with pytest.raises(ValueError, match="boom"), main_decides(ctx):
        raise ValueError("boom")
    with main_decides(ctx):
        pass
