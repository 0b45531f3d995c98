"""Shared fixtures of the ``df2am serve`` tests: a tiny checkpoint, SYSU-like tree, index, run."""

from __future__ import annotations

import shutil
from pathlib import Path

import tiny
from tiny import make_checkpoint


def make_sysu(root: Path, per_folder: int = 2) -> Path:
    return tiny.make_sysu(root, per_folder)


def build_env(base: Path) -> dict[str, Path]:
    """Checkpoint, dataset, an exact RGB index over ``cam1``, a 1-trial eval run, a twin."""
    from df2am.deploy.api import evaluate_checkpoint
    from df2am.deploy.features import extract_images
    from df2am.deploy.index import build_index, save_index

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
