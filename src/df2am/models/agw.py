"""AGW (``model.arch=agw``): the cross-modality baseline of Ye et al., "Deep Learning for Person
Re-identification: A Survey and Outlook" (TPAMI 2021), as its public code builds it
(github.com/mangye16/Cross-Modal-Re-ID-baseline, ``model.py``: ``embed_net``).

::

    from df2am.config import ModelConfig
    from df2am.models import build_model

    cfg = ModelConfig(arch="agw", non_local=True, pooling="gem", test_feature="bn_global",
                      df2_module=False)
    model = build_model(cfg, num_classes=395)
    out = model(rgb, ir)               # ModelOutput: global_feat (pooled), bn_feat, logits
    feats = model.extract(images, "ir")  # BN(pooled), L2-normalised: the reference's test feature

The network, piece by piece (what the reference does, and where df2am differs):

* **Stems.** Two ResNet stems (conv1, bn1, relu, maxpool): ``backbone.stem_rgb`` for visible
  images (the reference's ``visible_module``), ``backbone.stem_ir`` for thermal ones
  (``thermal_module``). The reference builds a whole ResNet-50 for each stem and uses only
  these four modules; df2am builds only them (:func:`df2am.models.agw_reference.
  convert_reference_state_dict` reports the unused tensors of a reference checkpoint).
* **Shared trunk.** ResNet layer1–layer4 (``base_resnet``), last stride 1. The reference's own
  ResNet puts the stride on the 3×3 ``conv2`` of a bottleneck, like torchvision's, so the
  weights map one to one.
* **Non-local blocks** (``model.non_local``; the reference's ``no_local='on'``): after the last
  2 blocks of layer2 and the last 3 of layer3 (the reference: ``non_layers = [0, 2, 3, 0]``,
  after block indices ``layers[k] - (i + 1)``, i.e. layer2 blocks 2, 3 and layer3 blocks 3, 4,
  5 of ResNet-50), none in layer1 and layer4. Each block (:class:`NonLocal`) is the
  embedded-dot-product non-local operation with 1/N normalisation:
  ``z = x + BN(W · y)``, ``y_i = (1/N) Σ_j (θ_i · φ_j) g_j`` with 1×1 convolutions θ, φ, g
  (with bias) from C to the inner width, and W back to C. **The inner width is 1**: the
  reference computes ``inter_channels = reduc_ratio // reduc_ratio`` (= 1 for any ratio), and
  its released checkpoints have that shape, so df2am uses 1 too. The BN of W starts at weight
  0, bias 0, so every block starts as the identity. df2am computes ``y`` as ``θ (φᵀ g) / N``
  instead of ``(θ φᵀ / N) g``: the same product, associated the other way, so no N×N matrix is
  formed (O(N·c²) instead of O(N²·c)); θ, φ, g run as one convolution of the concatenated
  weights.
* **Pooling** (``model.pooling``): "gem" = generalised mean with p = 3, exactly the
  reference's ``(mean(x³) + 1e-12)^(1/3)`` over the H·W positions (no clamp: the map is a ReLU
  output, ≥ 0), computed in fp32 under autocast; "avg" = global average pooling (the
  reference's ``gm_pool='off'``).
* **BNNeck.** ``bnneck`` (the reference's ``bottleneck``): BatchNorm1d with its bias frozen at
  0, weight initialised N(1, 0.01) as the reference's ``weights_init_kaiming``; then a
  bias-free ``classifier`` initialised N(0, 0.001).
* **Outputs.** Training: ``global_feat`` = the pooled feature (the reference's ``x_pool``, which
  its WRT loss uses), ``bn_feat`` = BNNeck feature, ``logits``. Test (``model.test_feature``):
  "bn_global" = BN(pooled), L2-normalised — what the reference reports ("FC" in its logs, the
  feature its best model is picked by) and the default of the AGW configs; "global" = the
  pooled feature (the reference's "POOL").
* **Initialisation.** ``model.pretrained=imagenet`` loads the ImageNet ResNet into both stems
  and the trunk (as the reference's ``resnet50(pretrained=True)`` does); the non-local blocks,
  BNNeck and classifier keep the initialisation above.
* **Optimiser groups.** The non-local blocks sit inside ``backbone`` (they run between its
  blocks), so :meth:`~df2am.models.base.ReIDNet.param_groups` puts them in the ``backbone``
  group, as the reference's optimiser does (everything but ``bottleneck`` and ``classifier``
  at 0.1 × lr).
"""

from __future__ import annotations

import logging
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from df2am.config import ARCH_FEATURES, ModelConfig
from df2am.errors import ConfigError
from df2am.models.backbone import TwoStreamResNet
from df2am.models.base import ReIDNet
from df2am.models.df2 import BNNeck, make_classifier
from df2am.models.output import ModelOutput
from df2am.models.weights import load_backbone_weights

__all__ = [
    "AGWNet",
    "AGWBackbone",
    "NonLocal",
    "gem_pool",
    "build_agw",
    "NON_LOCAL_BLOCKS",
    "NON_LOCAL_INNER",
    "GEM_P",
    "GEM_EPS",
]

logger = logging.getLogger(__name__)

#: Non-local blocks per stage: after the last 2 blocks of layer2 and the last 3 of layer3 (the
#: reference's ``non_layers = [0, 2, 3, 0]``).
NON_LOCAL_BLOCKS: dict[str, int] = {"layer2": 2, "layer3": 3}
#: Inner width of a non-local block: the reference's ``reduc_ratio // reduc_ratio`` = 1.
NON_LOCAL_INNER = 1
#: GeM exponent and the constant added before the root (the reference's values).
GEM_P = 3.0
GEM_EPS = 1e-12


def gem_pool(feat_map: torch.Tensor, p: float = GEM_P, eps: float = GEM_EPS) -> torch.Tensor:
    """Generalised-mean pooling (B, C, H, W) → (B, C): ``(mean_hw(x^p) + eps)^(1/p)``, in fp32.

    The AGW reference's formula, without a clamp (its input is a ReLU output, >= 0).
    """
    x = feat_map.float()
    return (x.pow(p).mean(dim=(2, 3)) + eps).pow(1.0 / p)


class NonLocal(nn.Module):
    """Non-local block of the AGW reference: ``z = x + BN(W · y)``, ``y = θ (φᵀ g) / N``.

    Args:
        channels: C of the input (and output).
        inner: width of θ, φ, g (the reference's is 1, see :data:`NON_LOCAL_INNER`).

    Parameters: ``theta``, ``phi``, ``g`` (1×1 convolutions C → inner, with bias), ``out_conv``
    (1×1, inner → C, with bias) and ``out_bn`` (BatchNorm2d(C), weight and bias 0 at start).
    """

    def __init__(self, channels: int, inner: int = NON_LOCAL_INNER) -> None:
        super().__init__()
        self.inner = inner
        self.theta = nn.Conv2d(channels, inner, kernel_size=1)
        self.phi = nn.Conv2d(channels, inner, kernel_size=1)
        self.g = nn.Conv2d(channels, inner, kernel_size=1)
        self.out_conv = nn.Conv2d(inner, channels, kernel_size=1)
        self.out_bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.out_bn.weight)
        nn.init.zeros_(self.out_bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        c = self.inner
        # θ, φ, g as one 1×1 convolution: the input is read once instead of three times.
        weight = torch.cat([self.theta.weight, self.phi.weight, self.g.weight])
        bias = torch.cat([self.theta.bias, self.phi.bias, self.g.bias])
        theta, phi, g = F.conv2d(x, weight, bias).flatten(2).split(c, dim=1)  # (B, c, N) each
        # The reference forms f = θᵀφ / N (N × N) and y = f g; θ (φᵀ g / N) is the same product.
        context = torch.bmm(phi, g.transpose(1, 2)) / (h * w)  # (B, c, c)
        y = torch.bmm(context.transpose(1, 2), theta).view(b, c, h, w)
        if x.is_contiguous(memory_format=torch.channels_last):
            # With c = 1 the layout of y is ambiguous and W's convolution would answer in
            # NCHW, costing a copy of the (B, C, H, W) output; ask for channels_last (free).
            y = y.contiguous(memory_format=torch.channels_last)
        return x + self.out_bn(self.out_conv(y))


def _stage_channels(stage: nn.Sequential) -> int:
    last = stage[-1]
    bn = getattr(last, "bn3", None) or last.bn2  # Bottleneck or BasicBlock
    return int(bn.num_features)


class AGWBackbone(TwoStreamResNet):
    """:class:`TwoStreamResNet` (two stems, shared layer1–4) with the reference's non-local
    blocks run between the trunk's blocks (``non_local.layer2.0`` … ``non_local.layer3.2``)."""

    #: Keys under these prefixes are not part of a torchvision ResNet: ImageNet initialisation
    #: (:func:`df2am.models.weights.load_backbone_weights`) leaves them as they are.
    NOT_PRETRAINED = ("non_local.",)

    def __init__(self, depth: int = 50, last_stride: int = 1, non_local: bool = True) -> None:
        super().__init__(depth=depth, last_stride=last_stride, specific_stages=0)
        self.non_local = nn.ModuleDict()
        if non_local:
            for stage, count in NON_LOCAL_BLOCKS.items():
                layer = getattr(self, stage)
                if len(layer) < count:
                    raise ConfigError(
                        f"model.non_local=true: ResNet-{depth} has {len(layer)} blocks in "
                        f"{stage}, the reference places non-local blocks after its last {count}"
                    )
                channels = _stage_channels(layer)
                self.non_local[stage] = nn.ModuleList(NonLocal(channels) for _ in range(count))

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.shared_stages:
            layer = getattr(self, name)
            if name not in self.non_local:
                x = layer(x)
                continue
            blocks = self.non_local[name]
            first = len(layer) - len(blocks)
            for i, block in enumerate(layer):
                x = block(x)
                if i >= first:
                    x = blocks[i - first](x)
        return x


class AGWNet(ReIDNet):
    """The AGW network (see the module docstring).

    Args:
        cfg: the model section (``arch="agw"``; depth, last_stride, non_local, pooling,
            test_feature, flip_test). ``cfg.pretrained`` is applied by :func:`build_agw`.
        num_classes: number of training identities.
    """

    OUTPUT_PARAMETERS: ClassVar[dict[str, tuple[str, ...]]] = {
        "global_feat": ("backbone.",),
        "bn_feat": ("backbone.", "bnneck."),
        "logits": ("backbone.", "bnneck.", "classifier."),
    }

    def __init__(self, cfg: ModelConfig, num_classes: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        if cfg.pooling not in ("avg", "gem"):
            raise ConfigError(f"model.pooling must be 'avg' or 'gem', got {cfg.pooling!r}")
        self.cfg = cfg
        self.arch = "agw"
        self.feature_kinds = ARCH_FEATURES["agw"]
        self.num_classes = num_classes
        self.backbone = AGWBackbone(cfg.depth, cfg.last_stride, cfg.non_local)
        channels = self.backbone.out_channels
        self.feat_dim = channels
        self.bnneck = BNNeck(channels)
        nn.init.normal_(self.bnneck.weight, 1.0, 0.01)  # the reference's weights_init_kaiming
        self.classifier = make_classifier(channels, num_classes)

    def pool(self, feat_map: torch.Tensor) -> torch.Tensor:
        """The pooled feature (the reference's ``x_pool``), (B, C)."""
        if self.cfg.pooling == "gem":
            return gem_pool(feat_map)
        return F.adaptive_avg_pool2d(feat_map, 1).flatten(1)

    def forward(self, rgb: torch.Tensor, ir: torch.Tensor) -> ModelOutput:
        """Training pass; rows ``[rgb; ir]``. Fields AGW does not have are None."""
        pooled = self.pool(self.backbone(rgb, ir))
        bn_feat = self.bnneck(pooled)
        return ModelOutput(
            global_feat=pooled,
            bn_feat=bn_feat,
            logits=self.classifier(bn_feat),
            part_feat=None,
            part_weights=None,
            fused_feat=None,
            fused_bn_feat=None,
            fused_logits=None,
            num_rgb=rgb.shape[0],
        )

    def test_features(self, images: torch.Tensor, modality: str, feature: str) -> torch.Tensor:
        """"global" (pooled) or "bn_global" (BN(pooled)), one pass, not normalised."""
        pooled = self.pool(self.backbone.forward_single(images, modality))
        return pooled if feature == "global" else self.bnneck(pooled)


def build_agw(cfg: ModelConfig, num_classes: int) -> AGWNet:
    """Build the AGW network of ``cfg`` and load ``cfg.pretrained`` into its backbone
    (``ARCHITECTURES["agw"]``; use :func:`df2am.models.build_model`)."""
    model = AGWNet(cfg, num_classes)
    load_backbone_weights(model, cfg.pretrained)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info(
        "built AGW: ResNet-%d, last stride %d, non-local %s, %s pooling, %d classes, "
        "%.1fM parameters",
        cfg.depth,
        cfg.last_stride,
        "on" if cfg.non_local else "off",
        cfg.pooling,
        num_classes,
        n_params / 1e6,
    )
    return model
