"""The DF²AM network (``model.arch=df2am``): two-stream ResNet, BNNeck baseline head and the
DF² module. Without the DF² module it is the paper's L_B network (``model.arch=baseline``,
:mod:`df2am.models.baseline`).

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

``extract``, ``param_groups`` and the rest of the protocol every architecture shares are in
:class:`~df2am.models.base.ReIDNet`.
"""

from __future__ import annotations

import logging
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from df2am.config import ARCH_FEATURES, ModelConfig
from df2am.errors import ConfigError
from df2am.models.backbone import TwoStreamResNet
from df2am.models.base import ReIDNet
from df2am.models.df2 import BNNeck, DF2Module, make_classifier
from df2am.models.output import ModelOutput
from df2am.models.weights import load_backbone_weights

__all__ = ["DF2AMNet", "build_df2am"]

logger = logging.getLogger(__name__)

FeatureKind = Literal["fused", "global", "bn_global"]


class DF2AMNet(ReIDNet):
    """Two-stream ResNet + BNNeck + DF² module (method.md, "Network").

    Args:
        cfg: the model section of the config (depth, last_stride, specific_stages, df2_module,
            num_parts, part_pooling, part_attention, test_feature, flip_test).
            ``cfg.pretrained`` is applied by :func:`build_model`, not here.
        num_classes: number of training identities.
    """

    _DF2_ATTENTION = ("df2.attention.", "df2.omega")
    OUTPUT_PARAMETERS: ClassVar[dict[str, tuple[str, ...]]] = {
        "global_feat": ("backbone.",),
        "bn_feat": ("backbone.", "bnneck."),
        "logits": ("backbone.", "bnneck.", "classifier."),
        "part_feat": ("backbone.",),
        "part_weights": ("backbone.", *_DF2_ATTENTION),
        "fused_feat": ("backbone.", "bnneck.", *_DF2_ATTENTION),
        "fused_bn_feat": ("backbone.", "bnneck.", *_DF2_ATTENTION, "df2.bnneck."),
        "fused_logits": ("backbone.", "bnneck.", *_DF2_ATTENTION, "df2.bnneck.",
                         "df2.classifier."),
    }

    def __init__(self, cfg: ModelConfig, num_classes: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        self.cfg = cfg
        self.arch = cfg.arch
        self.feature_kinds = ARCH_FEATURES[cfg.arch]
        self.num_classes = num_classes
        self.backbone = TwoStreamResNet(
            depth=cfg.depth, last_stride=cfg.last_stride, specific_stages=cfg.specific_stages,
            stem_init=cfg.stem_init, width=cfg.width,
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
    def test_features(self, images: torch.Tensor, modality: str, feature: str) -> torch.Tensor:
        """One pass of one modality's images → "fused" (BN(f̃)), "global" (f^g) or
        "bn_global" (BN(f^g)), not normalised (see :meth:`ReIDNet.extract`)."""
        feat_map = self.backbone.forward_single(images, modality)
        global_feat = F.adaptive_avg_pool2d(feat_map, 1).flatten(1)
        if feature == "global":
            return global_feat
        bn_feat = self.bnneck(global_feat)
        if feature == "bn_global":
            return bn_feat
        assert self.df2 is not None  # checked by check_feature()
        return self.df2(feat_map, global_feat, bn_feat).fused_bn_feat

    def check_feature(self, feature: str) -> str:
        if feature == "fused" and self.df2 is None:
            raise ConfigError(
                "model.test_feature='fused' needs model.df2_module=true; use 'bn_global'"
            )
        return super().check_feature(feature)

    def part_weights(self, images: torch.Tensor, modality: str) -> torch.Tensor | None:
        """ω̃ (N, P) of one modality's images (eval mode, no autograd); None without DF²."""
        if self.df2 is None:
            return None
        self.check_modality(modality)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                feat_map = self.backbone.forward_single(images, modality)
                g = F.adaptive_avg_pool2d(feat_map, 1).flatten(1)
                return self.df2(feat_map, g, self.bnneck(g)).part_weights.float()
        finally:
            self.train(was_training)


def build_df2am(cfg: ModelConfig, num_classes: int) -> DF2AMNet:
    """Build the DF²AM network of ``cfg`` and load ``cfg.pretrained`` into its backbone
    (``ARCHITECTURES["df2am"]``; use :func:`df2am.models.build_model`).

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
