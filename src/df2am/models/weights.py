"""Backbone initialisation from torchvision ResNet weights (method.md, "Network": "ImageNet
initialisation through torchvision's weights API or a local file; none when offline").

::

    from df2am.models import build_model, load_backbone_weights
    from df2am.config import ModelConfig

    model = build_model(ModelConfig(depth=50), num_classes=395)          # pretrained="none"
    load_backbone_weights(model, "/data/weights/resnet50-0676ba61.pth")  # local file
    load_backbone_weights(model, "imagenet")                             # downloads (cached)

The torchvision keys ``conv1.*``/``bn1.*`` go into BOTH modality stems (``stem_rgb``,
``stem_ir``), and so do ``layer1.*`` (and ``layer2.*``) when ``model.specific_stages`` makes them
per modality (``stem_ir.layer1.0.conv1.weight`` ← ``layer1.0.conv1.weight``); the other layers
go into the shared trunk. The match is strict: every backbone
key must be in the file (a missing key is a :class:`~df2am.errors.CheckpointError` naming it
and the file), unknown keys are errors too, except torchvision's ImageNet classifier ``fc.*``,
which the re-id model does not use. The only tolerated gap is the BatchNorm counter
``num_batches_tracked``, which old torchvision files lack and which is bookkeeping, not a weight
(``nn.BatchNorm`` itself accepts such files).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import (
    ResNet18_Weights,
    ResNet34_Weights,
    ResNet50_Weights,
    ResNet101_Weights,
    WeightsEnum,
)

from df2am.errors import CheckpointError
from df2am.models.backbone import STEM_NAMES, TwoStreamResNet

__all__ = ["load_backbone_weights", "IMAGENET_WEIGHTS"]

logger = logging.getLogger(__name__)

#: depth → torchvision ImageNet weights (V1: the classic weights re-id papers start from).
IMAGENET_WEIGHTS: dict[int, WeightsEnum] = {
    18: ResNet18_Weights.IMAGENET1K_V1,
    34: ResNet34_Weights.IMAGENET1K_V1,
    50: ResNet50_Weights.IMAGENET1K_V1,
    101: ResNet101_Weights.IMAGENET1K_V1,
}
_WRAPPER_KEYS = ("state_dict", "model")
_MAX_LISTED = 10


def _fmt_keys(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    more = len(keys) - _MAX_LISTED
    return shown + (f" (and {more} more)" if more > 0 else "")


def _download_imagenet(depth: int) -> dict[str, torch.Tensor]:
    weights = IMAGENET_WEIGHTS[depth]
    url = weights.url
    fname = url.rsplit("/", 1)[-1]
    enum_name = type(weights).__name__
    logger.info("downloading ImageNet ResNet-%d weights (%s) via torchvision", depth, url)
    try:
        return weights.get_state_dict(progress=True)
    except Exception as exc:  # URLError, OSError, RuntimeError (hash), ... all mean "no weights"
        raise CheckpointError(
            f"model.pretrained=imagenet: downloading the torchvision ResNet-{depth} ImageNet "
            f"weights from {url} failed ({type(exc).__name__}: {exc}). Use a local file "
            f"instead: on a machine with internet run `curl -LO {url}` (or "
            f'`python -c "from torchvision.models import {enum_name}; '
            f'{enum_name}.IMAGENET1K_V1.get_state_dict()"`, which stores it under '
            f"~/.cache/torch/hub/checkpoints/), copy it here and set "
            f"model.pretrained=/path/to/{fname}"
        ) from exc


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(
            f"model.pretrained={path}: no such file; expected 'none', 'imagenet' or the path "
            f"of a torchvision-format ResNet state dict (e.g. resnet50-0676ba61.pth)"
        )
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickle with non-tensor objects, ...
        raise CheckpointError(
            f"{path}: cannot read it as a torch state dict ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path}: expected a state dict (a mapping), got {type(obj).__name__}"
        )
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        # A training checkpoint may wrap the weights; unwrap only when exactly one known wrapper
        # key holds a mapping of tensors, otherwise we cannot know which dict is meant.
        inner = [
            k
            for k in _WRAPPER_KEYS
            if isinstance(obj.get(k), Mapping)
            and all(isinstance(v, torch.Tensor) for v in obj[k].values())
        ]
        if len(inner) != 1:
            raise CheckpointError(
                f"{path}: not a torchvision ResNet state dict: it holds non-tensor entries "
                f"(top-level keys: {_fmt_keys(sorted(map(str, obj.keys())))}) and no single "
                f"'state_dict' or 'model' entry of tensors to use instead"
            )
        logger.info("%s: using the weights under %r", path, inner[0])
        obj = obj[inner[0]]
    return dict(obj)


def load_backbone_weights(model: nn.Module, source: str | os.PathLike[str]) -> None:
    """Copy torchvision ResNet weights into the two-stream backbone of ``model``.

    Args:
        model: a df2am network (:class:`~df2am.models.base.ReIDNet`: its ``backbone`` is used)
            or a :class:`~df2am.models.backbone.TwoStreamResNet` (or subclass; keys under its
            ``NOT_PRETRAINED`` prefixes are left alone).
        source: "none" (keep the random initialisation), "imagenet" (torchvision weights API;
            downloads to torch's hub cache on first use) or a path to a torchvision-format
            state dict (``torch.load(..., weights_only=True)``; a dict wrapping it under
            "state_dict" or "model" is accepted).

    Raises:
        CheckpointError: missing file, failed download, missing / unexpected keys or a shape
            mismatch; the message names the key(s) and the file.
    """
    backbone = getattr(model, "backbone", model)
    if not isinstance(backbone, TwoStreamResNet):
        raise TypeError(f"expected a DF2AMNet or TwoStreamResNet, got {type(model).__name__}")
    source_str = os.fspath(source)
    if source_str == "none":
        logger.info("backbone: random initialisation (model.pretrained=none)")
        return
    if source_str == "imagenet":
        state = _download_imagenet(backbone.depth)
        origin = f"torchvision ImageNet ResNet-{backbone.depth} weights"
    else:
        state = _read_file(Path(source_str))
        origin = source_str

    target = backbone.state_dict()
    # Modules an architecture adds inside the backbone (AGW's non-local blocks) are not in a
    # torchvision ResNet: they keep their own initialisation.
    own = tuple(getattr(backbone, "NOT_PRETRAINED", ()))
    # target key → source key: the stems' "stem_rgb.conv1.weight" reads "conv1.weight" and a
    # specific stage's "stem_ir.layer1.0.conv1.weight" reads "layer1.0.conv1.weight".
    mapping = {
        tk: (tk.split(".", 1)[1] if tk.split(".", 1)[0] in STEM_NAMES else tk)
        for tk in target
        if not tk.startswith(own)
    }
    used = set(mapping.values())
    missing = sorted(
        {sk for sk in used if sk not in state and not sk.endswith("num_batches_tracked")}
    )
    unexpected = sorted(k for k in state if k not in used and not k.startswith("fc."))
    problems = []
    if missing:
        problems.append(f"missing keys: {_fmt_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_fmt_keys(unexpected)}")
    mismatched = [
        f"{sk} (file {tuple(state[sk].shape)}, model {tuple(target[tk].shape)})"
        for tk, sk in mapping.items()
        if sk in state and state[sk].shape != target[tk].shape
    ]
    if mismatched:
        problems.append(f"shape mismatch: {_fmt_keys(sorted(set(mismatched)))}")
    if problems:
        raise CheckpointError(
            f"{origin}: does not match a torchvision ResNet-{backbone.depth}: "
            + "; ".join(problems)
        )
    copied = 0
    with torch.no_grad():
        for tk, sk in mapping.items():
            if sk in state:
                target[tk].copy_(state[sk])
                copied += 1
    logger.info("backbone: loaded %d tensors from %s", copied, origin)
