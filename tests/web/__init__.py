"""Shared fixtures of the ``df2am serve`` tests: a tiny checkpoint, SYSU-like tree, index, run."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

H, W = 32, 16


def make_checkpoint(path: Path, seed: int = 1) -> Path:
    from df2am.config import Config, ModelConfig, config_to_dict
    from df2am.engine.checkpoint import FORMAT_VERSION, save_checkpoint
    from df2am.models import build_model

    cfg = Config()
    cfg.model = ModelConfig(depth=18, num_parts=2, pretrained="none")
    cfg.data.height, cfg.data.width = H, W
    cfg.data.num_workers = 0
    cfg.eval.batch_size = 16
    torch.manual_seed(seed)
    model = build_model(cfg.model, num_classes=4)
    save_checkpoint(path, {"format_version": FORMAT_VERSION, "model": model.state_dict(),
                           "num_classes": 4, "config": config_to_dict(cfg), "epoch": 1,
                           "optimizer": None, "scheduler": None, "sampler": None, "rng": None,
                           "scaler": None})
    return path


def make_sysu(root: Path, per_folder: int = 2) -> Path:
    """A tiny SYSU-MM01 tree: train ids 1-2, val id 3, test ids 4-6, every camera present."""
    rng = np.random.default_rng(0)
    for pid in range(1, 7):
        base = rng.integers(40, 215, size=3)
        for cam in range(1, 7):
            for n in range(1, per_folder + 1):
                path = root / f"cam{cam}" / f"{pid:04d}" / f"{n:04d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                noise = rng.integers(-40, 40, size=(H, W, 3))
                Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path)
    (root / "exp").mkdir()
    (root / "exp/train_id.txt").write_text("1,2")
    (root / "exp/val_id.txt").write_text("3")
    (root / "exp/test_id.txt").write_text("4,5,6")
    return root


def build_env(base: Path) -> dict[str, Path]:
    """Checkpoint, dataset, an exact RGB index over ``cam1``, a 1-trial eval run, a twin."""
    from df2am.engine.api import evaluate_checkpoint
    from df2am.engine.features import extract_images
    from df2am.engine.index import build_index, save_index

    ckpt = make_checkpoint(base / "ckpt" / "model.pt")
    root = make_sysu(base / "SYSU")
    fs = extract_images(ckpt, root / "cam1", "rgb", dtype="float32", device="cpu",
                        progress=False)
    save_index(build_index(fs, "exact"), base / "index" / "gallery")
    run = base / "run"
    evaluate_checkpoint(ckpt, root, device="cpu", out_dir=run, trials=1)
    twin = base / "upload" / "twin.jpg"
    twin.parent.mkdir()
    shutil.copy(root / "cam1" / "0005" / "0002.jpg", twin)
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(twin.read_bytes())
    (root / "cam1" / "escape.jpg").symlink_to(outside / "secret.jpg")
    return {"ckpt": ckpt, "root": root, "index": base / "index" / "gallery", "run": run,
            "twin": twin, "twin_path": Path("0005/0002.jpg"), "outside": outside}
