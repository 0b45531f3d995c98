"""Python API: load a trained model in one call, extract features, search a gallery.

Example — rank a gallery of RGB images for each IR query::

    from df2am.deploy.api import load_model, extract_features, search

    model, cfg = load_model("runs/sysu/model_final.pt")          # eval mode, on the CPU
    gallery = extract_features(model, ["g/0001.jpg", "g/0002.jpg"], "rgb")   # (2, C)
    query = extract_features(model, ["q/0001.jpg"], "ir")                    # (1, C)
    scores = query @ gallery.T          # cosine similarity: rows are L2-normalised

    idx, dist = search(model, ["q/0001.jpg"], "ir", ["g/0001.jpg", "g/0002.jpg"], "rgb", k=2)
    idx[0]   # gallery indices of query 0, best match first

With identities and cameras, the same features give the paper's metrics::

    from df2am.evaluation import evaluate_features
    result = evaluate_features(query, gallery, q_ids, g_ids, q_cams, g_cams, protocol="sysu")

Images are file paths or PIL images; they get exactly the test pipeline of evaluation (RGB
decode, bilinear resize to ``cfg.data.height`` × ``cfg.data.width``, ImageNet normalisation),
and the modality picks the network's stem: ``"rgb"`` for visible images, ``"ir"`` for
infrared/thermal ones.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from df2am.assess.evaluator import EvalReport, evaluate_model, write_eval_outputs
from df2am.config import ARCH_OPTIONS, Config, DataConfig, config_from_dict
from df2am.data.cache import decode_resize
from df2am.data.images import check_geometry, display_path, to_rgb
from df2am.data.transforms import TestTransform
from df2am.device import resolve_device
from df2am.errors import CheckpointError, ConfigError, DatasetError
from df2am.models import ReIDNet, build_model
from df2am.train.checkpoint import MODEL_KEYS, load_checkpoint

__all__ = ["load_model", "extract_features", "search", "evaluate_checkpoint"]

logger = logging.getLogger(__name__)


def load_model(
    checkpoint_path: str | Path, device: str | torch.device = "cpu"
) -> tuple[ReIDNet, Config]:
    """Rebuild the network of a checkpoint and load its weights (strictly): one call.

    Works with the trainer's ``model_final.pt`` and ``checkpoints/*.pt`` (keys
    ``format_version``, ``model``, ``num_classes``, ``config``; the optimiser state etc. are
    ignored here; see :mod:`df2am.train.checkpoint`).

    Args:
        checkpoint_path: the ``.pt`` file.
        device: where to put the model ("cpu", "cuda", "auto").

    Returns:
        ``(model, cfg)``: the model in eval mode on ``device`` and the run's
        :class:`~df2am.config.Config`. The config is also kept as ``model.run_config`` so that
        :func:`extract_features` uses the training image size without being told.

    Raises:
        CheckpointError: the file is missing or unreadable, lacks a required key, or its
            weights do not fit the network its config describes. A checkpoint of other code
            that ``df2am import`` can convert (the AGW reference's) is named as such, with
            the command that converts it.
    """
    path = Path(checkpoint_path)
    try:
        # Raises CheckpointError naming the file for a missing/unreadable file or a missing key.
        ckpt = load_checkpoint(path, map_location="cpu", required=MODEL_KEYS)
    except CheckpointError as exc:
        raise CheckpointError(str(exc) + _import_hint(path)) from None
    try:
        cfg = config_from_dict(ckpt["config"], source=f"{path} [config]")
    except ConfigError as exc:
        raise CheckpointError(f"{path}: its config is invalid: {exc}") from None
    model_cfg = copy.deepcopy(cfg.model)
    # The checkpoint holds every weight: initialising the backbone from ImageNet (a download)
    # or from a file that may no longer exist would be wasted work or a spurious failure.
    model_cfg.pretrained = "none"
    model = build_model(model_cfg, int(ckpt["num_classes"]))
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise CheckpointError(
            f"{path}: the weights do not match the network of its config "
            f"({describe_network(cfg, int(ckpt['num_classes']))}): {exc}"
        ) from None
    model.run_config = cfg  # type: ignore[attr-defined]
    model.to(resolve_device(device, key="device"))
    model.eval()
    logger.info("loaded %s (epoch %s)", path, ckpt.get("epoch", "?"))
    return model, cfg


def _import_hint(path: Path) -> str:
    """For a checkpoint of other code that ``df2am import`` converts: how to convert it."""
    from df2am.deploy.importer import SOURCES, foreign_format

    found = foreign_format(path) if path.is_file() else None
    if found is None:
        return ""
    return (f"; it is a checkpoint of the {SOURCES[found].title}: convert it once with "
            f"`df2am import {path} --from {found} --out model.pt`, then use model.pt")


def describe_network(cfg: Config, num_classes: int) -> str:
    """The network a config describes, in the terms of its own architecture, e.g.
    ``model.arch=agw, ResNet-50, non_local=True, pooling='gem', num_classes=395``."""
    m = cfg.model
    own = ", ".join(f"{k}={getattr(m, k)!r}" for k in ARCH_OPTIONS.get(m.arch, ()))
    return f"model.arch={m.arch}, ResNet-{m.depth}, " + (own + ", " if own else "") + (
        f"num_classes={num_classes}")


def evaluate_checkpoint(
    checkpoint_path: str | Path,
    root: str | Path | None = None,
    *,
    device: str | torch.device = "auto",
    out_dir: str | Path | None = None,
    **overrides: Any,
) -> EvalReport:
    """:func:`load_model` + :func:`~df2am.assess.evaluator.evaluate_model` in one call.

    ``overrides`` are ``evaluate_model``'s keyword arguments (``dataset``, ``mode``,
    ``sampler``, ``shots``, ``trials``, ``split_file``, ``direction``, ``batch_size``,
    ``feature``, ``flip``, ``cache_dir``, ``rerank``, ``rerank_k1``, ``rerank_k2``,
    ``rerank_lambda``, ``diagnose``); unset ones come from the checkpoint's config.
    With ``out_dir`` the report is also written there (``results.json`` + ``cmc.png``)::

        report = evaluate_checkpoint("runs/sysu/model_final.pt", "/data/SYSU-MM01",
                                     mode="indoor", out_dir="runs/sysu/eval_indoor")
        report.metrics()["rank1"]
        llcm = evaluate_checkpoint("runs/llcm/model_final.pt", "/data/LLCM",
                                   direction="v2i_transposed", rerank=True)
    """
    model, cfg = load_model(checkpoint_path, device=device)
    report = evaluate_model(model, cfg, root, device=device, **overrides)
    if out_dir is not None:
        write_eval_outputs(report, out_dir, extra={"checkpoint": str(Path(checkpoint_path))})
    return report


def _to_uint8(image: str | Path | Image.Image, height: int, width: int) -> np.ndarray:
    """Decode/resize exactly as the test loader's image cache does (uint8 HWC, RGB)."""
    if isinstance(image, Image.Image):
        check_geometry(getattr(image, "filename", "") or "(a PIL image)", *image.size)
        im = to_rgb(image)  # the loaders' mode rules (16-bit, palette, alpha, CMYK)
        if im.size != (width, height):
            im = im.resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.uint8)
    p = Path(image)
    if not p.is_file():
        raise DatasetError(f"image not found: {display_path(p)}")
    return decode_resize(p, (height, width), geometry="warn")


def _data_cfg(model: ReIDNet, cfg: Config | None) -> DataConfig:
    if cfg is not None:
        return cfg.data
    run_cfg: Any = getattr(model, "run_config", None)
    if run_cfg is not None:
        return run_cfg.data
    # A model built in code (not via load_model) carries no data config: the library's
    # default image size is the documented fallback.
    return DataConfig()


def extract_features(
    model: ReIDNet,
    images: Sequence[str | Path | Image.Image],
    modality: str,
    *,
    cfg: Config | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    feature: str | None = None,
    flip: bool | None = None,
) -> torch.Tensor:
    """L2-normalised fp32 features (N, C), on the CPU, of ``images`` of one modality.

    Args:
        model: any :class:`~df2am.models.ReIDNet` (e.g. from :func:`load_model`).
        images: file paths or PIL images, in any size/mode (converted to RGB and resized).
        modality: ``"rgb"`` (visible) or ``"ir"`` (infrared/thermal).
        cfg: the run config giving the image size; None = ``model.run_config`` (set by
            :func:`load_model`), else :class:`~df2am.config.DataConfig` defaults (256 × 128).
        batch_size: images per forward pass.
        device: where to run; None = where the model's parameters are.
        feature, flip: test feature / flip averaging; None = the model config's values.
    """
    if modality not in ("rgb", "ir"):
        raise ConfigError(f"modality must be 'rgb' or 'ir', got {modality!r}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    data_cfg = _data_cfg(model, cfg)
    h, w = data_cfg.height, data_cfg.width
    # The same decode + resize + normalisation as evaluation, so features match exactly.
    transform = TestTransform(h, w)
    if device is None:
        dev = next(model.parameters()).device
    else:
        dev = resolve_device(device, key="device")
        model.to(dev)
    chunks: list[torch.Tensor] = []
    for start in range(0, len(images), batch_size):
        raw = np.stack([_to_uint8(im, h, w) for im in images[start : start + batch_size]])
        batch = transform(torch.from_numpy(raw))
        feats = model.extract(batch.to(dev), modality, feature=feature, flip=flip)
        chunks.append(feats.float().cpu())
    if not chunks:
        raise DatasetError("extract_features: the image list is empty")
    return torch.cat(chunks)


def search(
    model: ReIDNet,
    query_images: Sequence[str | Path | Image.Image],
    query_modality: str,
    gallery_images: Sequence[str | Path | Image.Image],
    gallery_modality: str,
    k: int = 10,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` gallery matches of every query by cosine distance (1 − q·g).

    ``k`` is capped at the gallery size. Extra keyword arguments go to
    :func:`extract_features` (``cfg``, ``batch_size``, ``device``, ``feature``, ``flip``).

    Returns:
        ``(indices, distances)``, both (num_query, k): gallery indices, best match first
        (ties broken by gallery order), and their distances.
    """
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    q = extract_features(model, query_images, query_modality, **kwargs)
    g = extract_features(model, gallery_images, gallery_modality, **kwargs)
    dist = 1.0 - q @ g.T
    k = min(k, g.shape[0])
    # A stable sort keeps ties in gallery order, the same rule as the metrics (protocols.md).
    order = torch.sort(dist, dim=1, stable=True).indices[:, :k]
    # Rounding can put 1 - q·g a hair outside [0, 2], the range every distance shown has.
    return order, torch.gather(dist, 1, order).clamp_(0.0, 2.0)
