"""The DF²AM network: two-stream ResNet, BNNeck baseline head and the DF² module.

Built from a :class:`~df2am.config.ModelConfig`::

    import torch
    from df2am.config import ModelConfig
    from df2am.models import build_model

    model = build_model(ModelConfig(depth=18), num_classes=395)
    out = model(torch.randn(4, 3, 256, 128), torch.randn(4, 3, 256, 128))   # training pass
    out.fused_logits.shape  # -> (8, 395); rows [rgb; ir], out.num_rgb == 4
    feats = model.extract(torch.randn(5, 3, 256, 128), "ir")                # (5, 512), unit rows
    groups = model.param_groups(lr=0.1, backbone_lr_mult=0.1, weight_decay=5e-4)

What each piece implements (method.md, "Network"):

* ``backbone``: ``Conv1``/``Conv2`` (modality stems, plus layer1/layer2 when
  ``cfg.specific_stages`` > 0) and the shared ``Feat`` (the rest of layer1–4).
* f^g = GAP(f); baseline head BN(f^g) → bias-free classifier (BNNeck, for L_B's ID term).
* ``df2``: Eq. 5–7 (:mod:`df2am.models.df2`), present only when ``cfg.df2_module``.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from df2am.config import ModelConfig
from df2am.errors import ConfigError
from df2am.models.backbone import TwoStreamResNet
from df2am.models.df2 import BNNeck, DF2Module, make_classifier
from df2am.models.output import ModelOutput
from df2am.models.weights import load_backbone_weights

__all__ = ["DF2AMNet", "build_model"]

logger = logging.getLogger(__name__)

FeatureKind = Literal["fused", "global", "bn_global"]
_FEATURES = ("fused", "global", "bn_global")


class DF2AMNet(nn.Module):
    """Two-stream ResNet + BNNeck + DF² module (method.md, "Network").

    Args:
        cfg: the model section of the config (depth, last_stride, specific_stages, df2_module,
            num_parts, part_pooling, part_attention, test_feature, flip_test).
            ``cfg.pretrained`` is applied by :func:`build_model`, not here.
        num_classes: number of training identities.
    """

    def __init__(self, cfg: ModelConfig, num_classes: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        self.cfg = cfg
        self.num_classes = num_classes
        self.backbone = TwoStreamResNet(
            depth=cfg.depth, last_stride=cfg.last_stride, specific_stages=cfg.specific_stages
        )
        channels = self.backbone.out_channels
        self.feat_dim = channels
        self.bnneck = BNNeck(channels)
        self.classifier = make_classifier(channels, num_classes)
        self.df2: DF2Module | None = (
            DF2Module(
                channels,
                cfg.num_parts,
                num_classes,
                part_attention=cfg.part_attention,
                part_pooling=cfg.part_pooling,
            )
            if cfg.df2_module
            else None
        )

    # ------------------------------------------------------------------ training pass
    def forward(self, rgb: torch.Tensor, ir: torch.Tensor) -> ModelOutput:
        """Training pass over a cross-modality batch; rows of every output are ``[rgb; ir]``."""
        feat_map = self.backbone(rgb, ir)
        return self._heads(feat_map, num_rgb=rgb.shape[0])

    def _heads(self, feat_map: torch.Tensor, num_rgb: int) -> ModelOutput:
        global_feat = F.adaptive_avg_pool2d(feat_map, 1).flatten(1)  # f^g = GAP(f)
        bn_feat = self.bnneck(global_feat)
        logits = self.classifier(bn_feat)
        if self.df2 is None:
            return ModelOutput(
                global_feat=global_feat,
                bn_feat=bn_feat,
                logits=logits,
                part_feat=None,
                part_weights=None,
                fused_feat=None,
                fused_bn_feat=None,
                fused_logits=None,
                num_rgb=num_rgb,
            )
        d = self.df2(feat_map, global_feat, bn_feat)
        return ModelOutput(
            global_feat=global_feat,
            bn_feat=bn_feat,
            logits=logits,
            part_feat=d.part_feat,
            part_weights=d.part_weights,
            fused_feat=d.fused_feat,
            fused_bn_feat=d.fused_bn_feat,
            fused_logits=d.fused_logits,
            num_rgb=num_rgb,
        )

    # ------------------------------------------------------------------ test features
    def _feature(self, images: torch.Tensor, modality: str, feature: str) -> torch.Tensor:
        feat_map = self.backbone.forward_single(images, modality)
        global_feat = F.adaptive_avg_pool2d(feat_map, 1).flatten(1)
        if feature == "global":
            return global_feat
        bn_feat = self.bnneck(global_feat)
        if feature == "bn_global":
            return bn_feat
        assert self.df2 is not None  # checked by extract()
        return self.df2(feat_map, global_feat, bn_feat).fused_bn_feat

    def extract(
        self,
        images: torch.Tensor,
        modality: str,
        feature: FeatureKind | None = None,
        flip: bool | None = None,
    ) -> torch.Tensor:
        """Test features of one modality's images: (N, C), L2-normalised rows, fp32.

        Runs in eval mode (the previous mode is restored afterwards) without autograd.

        Args:
            images: (N, 3, H, W), any memory format.
            modality: "rgb" or "ir" — picks the stem.
            feature: "fused" (BN(f̃), needs the DF² module), "global" (f^g) or "bn_global"
                (BN(f^g)); ``None`` = ``cfg.test_feature``.
            flip: average the features of the images and of their horizontal flips before
                normalising; ``None`` = ``cfg.flip_test``.
        """
        feature = self.cfg.test_feature if feature is None else feature
        flip = self.cfg.flip_test if flip is None else flip
        if feature not in _FEATURES:
            raise ConfigError(f"model.test_feature must be one of {_FEATURES}, got {feature!r}")
        if feature == "fused" and self.df2 is None:
            raise ConfigError(
                "model.test_feature='fused' needs model.df2_module=true; use 'bn_global'"
            )
        if modality not in ("rgb", "ir"):
            raise ValueError(f"modality must be 'rgb' or 'ir', got {modality!r}")
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                feats = self._feature(images, modality, feature).float()
                if flip:
                    flipped = self._feature(images.flip(3), modality, feature).float()
                    feats = (feats + flipped) / 2
                return F.normalize(feats, dim=1)
        finally:
            self.train(was_training)

    # ------------------------------------------------------------------ optimiser groups
    def param_groups(
        self, lr: float, backbone_lr_mult: float, weight_decay: float
    ) -> list[dict[str, Any]]:
        """SGD parameter groups: pretrained ``backbone`` (both stems, specific stages included,
        + the shared layers) at
        ``lr × backbone_lr_mult`` and the new ``head`` layers (BNNecks, classifiers, DF²
        attention) at ``lr``. Frozen parameters (the BNNeck biases) are left out.
        Each group carries ``name`` and ``lr_mult`` so schedulers can rescale it.
        """
        backbone_ids = {id(p) for p in self.backbone.parameters()}
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        head = [p for p in self.parameters() if p.requires_grad and id(p) not in backbone_ids]
        return [
            {
                "params": backbone,
                "lr": lr * backbone_lr_mult,
                "weight_decay": weight_decay,
                "name": "backbone",
                "lr_mult": backbone_lr_mult,
            },
            {
                "params": head,
                "lr": lr,
                "weight_decay": weight_decay,
                "name": "head",
                "lr_mult": 1.0,
            },
        ]


def build_model(cfg: ModelConfig, num_classes: int) -> DF2AMNet:
    """Build the network of ``cfg`` and load ``cfg.pretrained`` into its backbone.

    ``cfg.pretrained`` is "none", "imagenet" (downloads through torchvision's weights API) or a
    path to a torchvision-format ResNet state dict; see
    :func:`df2am.models.weights.load_backbone_weights`.
    """
    model = DF2AMNet(cfg, num_classes)
    load_backbone_weights(model, cfg.pretrained)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info(
        "built DF2AMNet: ResNet-%d, last stride %d, %d modality-specific stage(s) after the "
        "stems, DF² %s (P=%d, %s pooling, attention %s), %d classes, %.1fM parameters",
        cfg.depth,
        cfg.last_stride,
        cfg.specific_stages,
        "on" if cfg.df2_module else "off",
        cfg.num_parts,
        cfg.part_pooling,
        cfg.part_attention,
        num_classes,
        n_params / 1e6,
    )
    return model
