"""Tiny test fixtures shared by the test rooms: a SYSU-MM01-like tree, a depth-18 config and a
checkpoint of an (untrained, seeded) model — one copy instead of one per test file.

``tests/conftest.py`` puts this folder on ``sys.path``, so test modules ``import tiny``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from df2am.config import Config, ModelConfig, config_to_dict
from df2am.models import build_model
from df2am.train.checkpoint import FORMAT_VERSION, save_checkpoint

#: Input size of the tiny models (a 2 × 1 feature map with last stride 1).
H, W = 32, 16

#: ``key=value`` overrides of a seconds-long CPU training (2 epochs × 2 iterations, P = 2 at
#: 32 × 16, warm-up over 2 epochs then ×0.1 at epoch 1); later overrides win.
TINY_TRAIN: list[str] = [
    "data.height=32",
    "data.width=16",
    "data.pad=2",
    "data.num_workers=0",
    "model.depth=18",
    "model.num_parts=2",  # 32×16 input → a 2×1 feature map with last stride 1
    "sampler.num_ids=2",
    "sampler.num_per_modality=2",
    "train.device=cpu",
    "train.epochs=2",
    "train.max_iters_per_epoch=2",
    "train.log_every=1",
    "train.checkpoint_every=1",
    "optim.lr=0.01",
    "optim.warmup_epochs=2",
    "optim.milestones=[1]",
    "eval.trials=1",
    "eval.batch_size=64",
]


def make_sysu(root: Path, per_folder: int = 3, size: tuple[int, int] = (H, W)) -> Path:
    """A tiny SYSU-MM01 tree: train ids 1-2, val id 3, test ids 4-6, every camera present; each
    id one base colour plus seeded noise (deterministic)."""
    rng = np.random.default_rng(0)
    for pid in range(1, 7):
        base = rng.integers(40, 215, size=3)
        for cam in range(1, 7):
            for n in range(1, per_folder + 1):
                path = root / f"cam{cam}" / f"{pid:04d}" / f"{n:04d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                noise = rng.integers(-40, 40, size=(*size, 3))
                Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path)
    (root / "exp").mkdir()
    (root / "exp/train_id.txt").write_text("1,2")
    (root / "exp/val_id.txt").write_text("3")
    (root / "exp/test_id.txt").write_text("4,5,6")
    return root


def tiny_config(dataset: str = "sysu", *, df2: bool = True, height: int = H) -> Config:
    """A depth-18 DF²AM config at ``height`` × 16 (P = 2), single-process test loader."""
    cfg = Config()
    cfg.model = ModelConfig(depth=18, num_parts=2, df2_module=df2, pretrained="none",
                            test_feature="fused" if df2 else "bn_global")
    cfg.data.dataset = dataset
    cfg.data.height, cfg.data.width = height, W
    cfg.data.num_workers = 0
    cfg.eval.batch_size = 16
    cfg.eval.trials = 3
    return cfg


def save_model(path: Path, model: torch.nn.Module, cfg: Config, num_classes: int) -> Path:
    """``model`` with ``cfg`` in the checkpoint format ``load_model`` reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, {
        "format_version": FORMAT_VERSION, "model": model.state_dict(),
        "num_classes": num_classes, "config": config_to_dict(cfg), "epoch": 1,
        "optimizer": None, "scheduler": None, "sampler": None, "rng": None, "scaler": None,
    })
    return path


def make_checkpoint(path: Path, seed: int = 1, height: int = H, num_classes: int = 4) -> Path:
    """A checkpoint of a seeded, untrained tiny model (``tiny_config``)."""
    cfg = tiny_config(height=height)
    torch.manual_seed(seed)
    return save_model(path, build_model(cfg.model, num_classes=num_classes), cfg, num_classes)
