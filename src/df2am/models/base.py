"""What the rest of df2am may use of a network, whatever its architecture: :class:`ReIDNet`.

Every architecture of :data:`df2am.models.ARCHITECTURES` is a subclass. The trainer, the
evaluator, feature extraction, export, visualisation and the web app use only what is listed
here, so none of them needs to know which architecture a checkpoint holds::

    model = build_model(cfg.model, num_classes)        # any model.arch
    out = model(rgb, ir)                                 # ModelOutput; rows [rgb; ir]
    feats = model.extract(images, "ir")                  # (N, feat_dim), unit rows, fp32
    groups = model.param_groups(lr=0.1, backbone_lr_mult=0.1, weight_decay=5e-4)
    one_pass = model.test_features(images, "ir", "bn_global")   # not normalised (export)
    weights = model.part_weights(images, "rgb")          # (N, P) or None (no part attention)

=====================  =====================================================================
member                 meaning
=====================  =====================================================================
``arch``               the ``model.arch`` name
``feature_kinds``      the ``model.test_feature`` values it offers (``ARCH_FEATURES[arch]``)
``cfg``                its :class:`~df2am.config.ModelConfig`
``num_classes``        training identities of its classifier(s)
``feat_dim``           width of a test feature
``backbone``           the two-stream ResNet (:class:`~df2am.models.backbone.TwoStreamResNet`
                       or a subclass): ImageNet initialisation and the ``backbone`` group of
                       :meth:`param_groups` use it
``forward(rgb, ir)``   training pass → :class:`~df2am.models.output.ModelOutput` (fields it
                       lacks are None)
``test_features``      one pass of one modality's images → the (un-normalised) test feature
``extract``            eval mode, no autograd, optional flip averaging, L2-normalised, fp32
``param_groups``       SGD groups ``backbone`` (× ``backbone_lr_mult``) and ``head``
``part_weights``       DF²'s part attention ω̃ (N, P), or None for architectures without parts
``check_feature``      the feature name, or a ConfigError naming ``model.test_feature``
``unused_parameters``  the trainable parameters that the given output fields do not depend
                       on (a loss's ``used_outputs``): what DDP must be told about
=====================  =====================================================================

A subclass implements ``forward``, ``test_features`` (and ``part_weights`` when it has parts),
sets ``arch``, ``feature_kinds``, ``cfg``, ``num_classes``, ``feat_dim`` and ``backbone``, and
declares :attr:`ReIDNet.OUTPUT_PARAMETERS` (which parameters each output field depends on; a
test checks the declaration against autograd for every architecture).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from df2am.config import ModelConfig
from df2am.errors import ConfigError
from df2am.models.output import ModelOutput

__all__ = ["ReIDNet", "MODALITIES"]

MODALITIES = ("rgb", "ir")


class ReIDNet(nn.Module):
    """Base class (and the documented protocol) of every df2am network; see the module
    docstring. Holds no parameters of its own, so subclasses keep their state-dict names."""

    #: ModelOutput field → prefixes of the parameter names it depends on (a field it does not
    #: produce is absent). :meth:`unused_parameters` reads it.
    OUTPUT_PARAMETERS: ClassVar[dict[str, tuple[str, ...]]] = {}

    arch: str
    feature_kinds: tuple[str, ...]
    cfg: ModelConfig
    num_classes: int
    feat_dim: int
    backbone: nn.Module

    # ------------------------------------------------------------------ to implement
    def forward(self, rgb: torch.Tensor, ir: torch.Tensor) -> ModelOutput:  # pragma: no cover
        """Training pass over a cross-modality batch; rows of every output are ``[rgb; ir]``."""
        raise NotImplementedError

    def test_features(
        self, images: torch.Tensor, modality: str, feature: str
    ) -> torch.Tensor:  # pragma: no cover
        """The test feature ``feature`` of one modality's images, one pass, not normalised,
        in the current mode and autograd state (:meth:`extract` wraps it)."""
        raise NotImplementedError

    def part_weights(self, images: torch.Tensor, modality: str) -> torch.Tensor | None:
        """Part-attention weights (N, P) of one modality's images (eval mode, no autograd), or
        None when the architecture has no part attention (the default)."""
        return None

    # ------------------------------------------------------------------ shared behaviour
    def unused_parameters(self, outputs: Iterable[str]) -> list[str]:
        """Names of the trainable parameters that none of ``outputs`` (ModelOutput fields, e.g.
        a loss's ``used_outputs``) depends on: they get no gradient, which DDP must be told
        (``find_unused_parameters``). Empty when every parameter is reached."""
        outputs = set(outputs)
        unknown = sorted(outputs - set(self.OUTPUT_PARAMETERS))
        if unknown:
            raise ConfigError(
                f"model.arch={self.arch} has no output {', '.join(unknown)} (it produces "
                f"{', '.join(sorted(self.OUTPUT_PARAMETERS))}); check the loss settings"
            )
        reached = tuple({p for f in outputs for p in self.OUTPUT_PARAMETERS[f]})
        return [
            name for name, p in self.named_parameters()
            if p.requires_grad and not name.startswith(reached)
        ]

    def check_feature(self, feature: str) -> str:
        """``feature`` when this network offers it, else a ConfigError naming
        ``model.test_feature`` and the features it offers."""
        if feature not in self.feature_kinds:
            offered = ", ".join(repr(f) for f in self.feature_kinds)
            raise ConfigError(
                f"model.test_feature must be one of {offered} for model.arch={self.arch}, "
                f"got {feature!r}"
            )
        return feature

    @staticmethod
    def check_modality(modality: str) -> str:
        if modality not in MODALITIES:
            raise ValueError(f"modality must be 'rgb' or 'ir', got {modality!r}")
        return modality

    def extract(
        self,
        images: torch.Tensor,
        modality: str,
        feature: str | None = None,
        flip: bool | None = None,
    ) -> torch.Tensor:
        """Test features of one modality's images: (N, C), L2-normalised rows, fp32.

        Runs in eval mode (the previous mode is restored afterwards) without autograd.

        Args:
            images: (N, 3, H, W), any memory format.
            modality: "rgb" or "ir" — picks the stem.
            feature: one of :attr:`feature_kinds` (e.g. "fused", "global", "bn_global");
                ``None`` = ``cfg.test_feature``.
            flip: average the features of the images and of their horizontal flips before
                normalising; ``None`` = ``cfg.flip_test``.
        """
        feature = self.check_feature(self.cfg.test_feature if feature is None else feature)
        flip = self.cfg.flip_test if flip is None else flip
        self.check_modality(modality)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                feats = self.test_features(images, modality, feature).float()
                if flip:
                    flipped = self.test_features(images.flip(3), modality, feature).float()
                    feats = (feats + flipped) / 2
                return F.normalize(feats, dim=1)
        finally:
            self.train(was_training)

    def param_groups(
        self, lr: float, backbone_lr_mult: float, weight_decay: float
    ) -> list[dict[str, Any]]:
        """SGD parameter groups: the ``backbone`` (everything under ``self.backbone``: both
        stems, the shared layers and anything an architecture places between them) at
        ``lr × backbone_lr_mult`` and the new ``head`` layers (BNNecks, classifiers, attention)
        at ``lr``. Frozen parameters (the BNNeck biases) are left out.
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
