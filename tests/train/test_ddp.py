"""Two-process CPU DDP (gloo) through the real command line: ``torchrun -m df2am.cli train``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from df2am.train.checkpoint import load_checkpoint
from df2am.train.metrics_log import read_metrics

TINY = [
    "data.height=32",
    "data.width=16",
    "data.pad=2",
    "data.num_workers=0",
    "model.depth=18",
    "model.num_parts=2",
    "sampler.num_ids=2",
    "sampler.num_per_modality=2",
    "train.device=cpu",
    "train.epochs=2",
    "train.max_iters_per_epoch=2",
    "train.log_every=1",
    "train.final_eval=false",
    "optim.lr=0.01",
    "optim.warmup_epochs=0",
]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_two_process_gloo_run_completes_and_ranks_agree(tmp_path):
    from df2am.data.synthetic import write_synthetic

    root = write_synthetic(
        tmp_path / "syn", "sysu", num_ids=12, size=(64, 32), images_per_camera=(2, 3),
        images_per_modality=4,
    )
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text("name: ddp\n")
    run = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "df2am.cli", "train", str(cfg_file), *TINY, f"data.root={root}", "--out", str(run),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # Both ranks hashed their final weights (BN statistics included): identical.
    (check,) = read_metrics(run, "ddp_check")
    assert len(check["digests"]) == 2 and check["agree"] is True
    assert check["digests"][0] == check["digests"][1]

    # Only rank 0 logged: one train record per iteration, not two.
    assert [(r["epoch"], r["iter"]) for r in read_metrics(run, "train")] == [
        (1, 1), (1, 2), (2, 1), (2, 2),
    ]
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["epoch"] == 2 and len(last["rng_ranks"]) == 2
    assert not any(k.startswith("module.") for k in last["model"])  # unwrapped state dict
    # The reported model is rank 0's (every rank took rank 0's BN statistics at the end).
    final = load_checkpoint(run / "model_final.pt")
    assert final["model"].keys() == last["model"].keys()
    assert all(torch.equal(final["model"][k], last["model"][k]) for k in final["model"])
