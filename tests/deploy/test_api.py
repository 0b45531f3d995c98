"""Python API: load_model round trip, checkpoint errors, extract_features on files/PIL, search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from df2am.config import Config, ModelConfig, config_to_dict
from df2am.data import transforms
from df2am.deploy.api import extract_features, load_model, search
from df2am.errors import CheckpointError, ConfigError, DatasetError
from df2am.models import build_model
from df2am.train.checkpoint import FORMAT_VERSION, save_checkpoint

H, W = 32, 16


def tiny_config() -> Config:
    cfg = Config()
    cfg.model = ModelConfig(depth=18, num_parts=2, pretrained="imagenet")
    cfg.data.height, cfg.data.width = H, W
    return cfg


def checkpoint_dict(model: torch.nn.Module, cfg: Config, num_classes: int) -> dict:
    """The trainer's checkpoint format (train/checkpoint.py), model-only."""
    return {
        "format_version": FORMAT_VERSION,
        "model": model.state_dict(),
        "num_classes": num_classes,
        "config": config_to_dict(cfg),
        "epoch": 3,
        "optimizer": None,
        "scheduler": None,
        "sampler": None,
        "rng": None,
        "scaler": None,
    }


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory):
    cfg = tiny_config()
    torch.manual_seed(1)
    model_cfg = ModelConfig(**{**config_to_dict(cfg)["model"], "pretrained": "none"})
    model = build_model(model_cfg, num_classes=5)
    # Non-default BN statistics, so a load that silently kept fresh buffers would show.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    model.eval()
    path = tmp_path_factory.mktemp("ckpt") / "model_final.pt"
    save_checkpoint(path, checkpoint_dict(model, cfg, 5))
    return model, cfg, path


@pytest.fixture(scope="module")
def image_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("imgs")
    paths = []
    for i in range(5):
        # Sizes differ from (H, W): the API must resize like the test loader.
        arr = rng.integers(0, 256, size=(40 + i, 20 + i, 3), dtype=np.uint8)
        p = folder / f"{i}.jpg"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


def test_load_model_round_trip(saved, image_files):
    model, cfg, path = saved
    loaded, loaded_cfg = load_model(path)
    assert not loaded.training
    assert loaded_cfg.data.height == H and loaded_cfg.model.depth == 18
    # pretrained="imagenet" in the run config must not trigger a download on load
    assert loaded.cfg.pretrained == "none" and loaded_cfg.model.pretrained == "imagenet"
    for (k, a), (_, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k

    # Independent features: PIL decode + bilinear resize + the test transform + extract.
    arrs = [
        np.asarray(Image.open(p).convert("RGB").resize((W, H), Image.Resampling.BILINEAR))
        for p in image_files
    ]
    batch = transforms.TestTransform(H, W)(torch.from_numpy(np.stack(arrs))).contiguous()
    want = model.extract(batch, "ir")
    got = extract_features(loaded, image_files, "ir", batch_size=2)
    assert got.shape == (5, model.feat_dim) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.norm(dim=1), torch.ones(5))
    # PIL images give the same features as their files.
    pil = [Image.open(p) for p in image_files]
    torch.testing.assert_close(extract_features(loaded, pil, "ir"), got, atol=1e-6, rtol=0)
    # The modality picks the stem: RGB features differ.
    assert not torch.allclose(extract_features(loaded, image_files, "rgb"), got, atol=1e-3)


def test_search_topk(saved, image_files):
    model, _, path = saved
    loaded, _ = load_model(path)
    q = extract_features(loaded, image_files[:2], "ir")
    g = extract_features(loaded, image_files, "rgb")
    idx, dist = search(loaded, image_files[:2], "ir", image_files, "rgb", k=3)
    assert idx.shape == dist.shape == (2, 3)
    full = 1.0 - q @ g.T
    for i in range(2):
        order = sorted(range(5), key=lambda j: (full[i, j].item(), j))[:3]
        assert idx[i].tolist() == order
        torch.testing.assert_close(dist[i], full[i, order])
    idx_all, _ = search(loaded, image_files[:1], "ir", image_files, "rgb", k=50)
    assert idx_all.shape == (1, 5)  # k capped at the gallery size


def test_load_model_errors(saved, tmp_path: Path):
    model, cfg, _ = saved
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope.pt")

    ckpt = checkpoint_dict(model, cfg, 5)
    del ckpt["num_classes"]
    save_checkpoint(tmp_path / "nokey.pt", ckpt)
    with pytest.raises(CheckpointError, match="num_classes"):
        load_model(tmp_path / "nokey.pt")

    ckpt = checkpoint_dict(model, cfg, 5)
    ckpt["model"] = {k: v for k, v in ckpt["model"].items() if "classifier" not in k}
    save_checkpoint(tmp_path / "partial.pt", ckpt)
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(tmp_path / "partial.pt")

    ckpt = checkpoint_dict(model, cfg, 7)  # classifier built for 5 classes
    save_checkpoint(tmp_path / "classes.pt", ckpt)
    with pytest.raises(CheckpointError, match="num_classes=7"):
        load_model(tmp_path / "classes.pt")

    ckpt = checkpoint_dict(model, cfg, 5)
    ckpt["config"]["model"]["depth"] = 7
    save_checkpoint(tmp_path / "badcfg.pt", ckpt)
    with pytest.raises(CheckpointError, match="model.depth"):
        load_model(tmp_path / "badcfg.pt")

    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_model(tmp_path / "garbage.pt")


def test_extract_features_errors(saved, tmp_path: Path):
    model, _, _ = saved
    with pytest.raises(DatasetError, match="missing.jpg"):
        extract_features(model, [tmp_path / "missing.jpg"], "rgb")
    with pytest.raises(ConfigError, match="modality"):
        extract_features(model, [Image.new("RGB", (W, H))], "thermal")
    with pytest.raises(DatasetError, match="empty"):
        extract_features(model, [], "rgb")
