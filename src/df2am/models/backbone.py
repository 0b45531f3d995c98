"""Two-stream ResNet backbone: modality-specific stems and a shared trunk (method.md, "Network").

The paper's feature extractor is ``f = Feat(Conv1(x_RGB))`` for visible images and
``f = Feat(Conv2(x_IR))`` for infrared ones: ``Conv1``/``Conv2`` are two separate ResNet stems
(conv1, bn1, relu, maxpool) and ``Feat`` is ResNet layer1–layer4, shared by both modalities::

    import torch
    from df2am.models.backbone import TwoStreamResNet

    backbone = TwoStreamResNet(depth=50, last_stride=1)
    f = backbone(torch.randn(2, 3, 256, 128), torch.randn(2, 3, 256, 128))
    f.shape  # -> (4, 2048, 16, 8): rows [rgb; ir]

``specific_stages=k`` (k = 1, 2) makes layer1 (and layer2) modality-specific too: they move
into the stems (``stem_rgb.layer1``, ``stem_ir.layer1``), and the shared trunk starts after them.

Every module is built once and used: the temporary torchvision ``ResNet`` only donates its
stem and layer1–layer4 (its avgpool/fc are dropped), and the IR stem (with its specific stages)
is a fresh module with torchvision's initialisation. Parameter names follow torchvision's once
the stem prefix is stripped, so :func:`df2am.models.weights.load_backbone_weights` maps an
ImageNet state dict directly: ``stem_rgb.conv1.weight`` / ``stem_ir.conv1.weight`` ←
``conv1.weight``, ``stem_ir.layer1.0.conv1.weight`` ← ``layer1.0.conv1.weight``,
``layer3.1.bn2.bias`` ← ``layer3.1.bn2.bias``.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import nn
from torchvision.models import resnet
from torchvision.models.resnet import BasicBlock, Bottleneck

__all__ = ["TwoStreamResNet", "RESNET_BUILDERS", "STEM_NAMES", "TRUNK_NAMES", "set_last_stride"]

#: Explicit depth → torchvision constructor table (no registry).
RESNET_BUILDERS = {
    18: resnet.resnet18,
    34: resnet.resnet34,
    50: resnet.resnet50,
    101: resnet.resnet101,
}
#: Names of the two modality-specific stems (attributes of :class:`TwoStreamResNet`).
STEM_NAMES = ("stem_rgb", "stem_ir")
#: Names of the ResNet stages, identical to torchvision's; the first ``specific_stages`` of them
#: sit inside the stems, the rest are the shared trunk.
TRUNK_NAMES = ("layer1", "layer2", "layer3", "layer4")
MAX_SPECIFIC_STAGES = 2


def _make_stem(width: int = 64) -> nn.Sequential:
    """A fresh ResNet stem, initialised as torchvision's ``ResNet.__init__`` does."""
    conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(conv1.weight, mode="fan_out", nonlinearity="relu")
    bn1 = nn.BatchNorm2d(width)  # weight 1, bias 0 by default, as in torchvision
    return nn.Sequential(
        OrderedDict(
            conv1=conv1,
            bn1=bn1,
            relu=nn.ReLU(inplace=True),
            maxpool=nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
    )


_STAGE_BLOCKS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)),
                 50: (Bottleneck, (3, 4, 6, 3)), 101: (Bottleneck, (3, 4, 23, 3))}


class _NarrowResNet(resnet.ResNet):
    """torchvision's ResNet with every stage ``width / 64`` times as wide (stem ``width``
    channels, stages width, 2·width, 4·width, 8·width), built and initialised as torchvision
    builds its own (same module names, kaiming fan-out convolutions, BN weight 1 / bias 0)."""

    def __init__(self, depth: int, width: int) -> None:
        nn.Module.__init__(self)
        block, layers = _STAGE_BLOCKS[depth]
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = width, 1, 1, 64
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * width * block.expansion, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)


def _fresh_copy(stage: nn.Sequential) -> nn.Sequential:
    """A deep copy of ``stage`` re-initialised as torchvision's ``ResNet.__init__`` does
    (independent draws, not the donor's values; ``zero_init_residual`` is off there too)."""
    stage = copy.deepcopy(stage)
    for m in stage.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()  # weight 1, bias 0, fresh running statistics
    return stage


def set_last_stride(layer4: nn.Sequential, stride: int) -> None:
    """Set the spatial stride of ``layer4`` (the "last stride" trick of re-id baselines).

    Only the first block downsamples: for a :class:`Bottleneck` (torchvision's v1.5) the stride
    sits on ``conv2`` (the 3×3), for a :class:`BasicBlock` on ``conv1``; the projection shortcut
    ``downsample[0]`` always carries the same stride.
    """
    if stride not in (1, 2):
        raise ValueError(f"last_stride must be 1 or 2, got {stride}")
    block = layer4[0]
    if isinstance(block, Bottleneck):
        block.conv2.stride = (stride, stride)
    elif isinstance(block, BasicBlock):
        block.conv1.stride = (stride, stride)
    else:  # pragma: no cover - torchvision only builds these two block types
        raise TypeError(f"unexpected ResNet block type {type(block).__name__}")
    if block.downsample is not None:
        block.downsample[0].stride = (stride, stride)
    block.stride = stride


class TwoStreamResNet(nn.Module):
    """Modality-specific stems + shared ResNet layer1–layer4 (``Conv1``/``Conv2`` and ``Feat``).

    Args:
        depth: ResNet depth, one of 18, 34, 50, 101.
        last_stride: stride of layer4 (1 keeps 16 × 8 maps at 256 × 128 inputs; 2 is torchvision's).
        specific_stages: how many of layer1, layer2 are per modality (0..2); they become the
            last modules of ``stem_rgb`` / ``stem_ir``.

    Attributes:
        out_channels: C of the feature map (512 for depths 18/34, 2048 for 50/101).
        shared_stages: names of the shared stages, e.g. ("layer2", "layer3", "layer4").
    """

    def __init__(self, depth: int = 50, last_stride: int = 1, specific_stages: int = 0,
                 stem_init: str = "independent", width: int = 64) -> None:
        super().__init__()
        if depth not in RESNET_BUILDERS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_BUILDERS)}, got {depth}")
        if not 0 <= specific_stages <= MAX_SPECIFIC_STAGES:
            raise ValueError(
                f"specific_stages must be in 0..{MAX_SPECIFIC_STAGES}, got {specific_stages}"
            )
        # num_classes=1 keeps the (discarded) torchvision fc tiny; only the stem and layers are
        # kept, so the model holds no unused module.
        if width == 64:  # torchvision's own builder: the same draws as before this option
            base = RESNET_BUILDERS[depth](weights=None, num_classes=1)
        elif width >= 8 and width % 8 == 0:
            base = _NarrowResNet(depth, width)
        else:
            raise ValueError(f"ResNet width must be a multiple of 8, >= 8, got {width}")
        self.stem_rgb = nn.Sequential(
            OrderedDict(conv1=base.conv1, bn1=base.bn1, relu=base.relu, maxpool=base.maxpool)
        )
        self.stem_ir = _make_stem(width)
        specific, shared = TRUNK_NAMES[:specific_stages], TRUNK_NAMES[specific_stages:]
        for name in specific:
            # Inside the stems, so the weight mapping only strips the stem prefix.
            self.stem_rgb.add_module(name, getattr(base, name))
            self.stem_ir.add_module(name, _fresh_copy(getattr(base, name)))
        for name in shared:
            setattr(self, name, getattr(base, name))
        set_last_stride(self.layer4, last_stride)  # layer4 is always shared
        if stem_init == "copy":
            # The IR stem's own draws above still happen, so the shared trunk starts from the
            # same weights as with "independent": only the IR stem's start differs.
            self.stem_ir.load_state_dict(self.stem_rgb.state_dict())
        elif stem_init != "independent":
            raise ValueError(f"stem_init must be 'independent' or 'copy', got {stem_init!r}")
        self.depth = depth
        self.width = width
        self.last_stride = last_stride
        self.specific_stages = specific_stages
        self.shared_stages: tuple[str, ...] = shared
        self.out_channels: int = base.fc.in_features

    def stem(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """Run the stem (with its specific stages) of ``modality`` ("rgb" or "ir")."""
        if modality == "rgb":
            return self.stem_rgb(x)
        if modality == "ir":
            return self.stem_ir(x)
        raise ValueError(f"modality must be 'rgb' or 'ir', got {modality!r}")

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The shared extractor ``Feat`` (layer1–layer4 less the specific stages)."""
        for name in self.shared_stages:
            x = getattr(self, name)(x)
        return x

    def forward(self, rgb: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        """Feature maps of ``[rgb; ir]``, shape (K_rgb + K_ir, C, H, W).

        The stems (with their specific stages) run separately and the shared trunk runs once on
        the concatenation: one big batch uses the cores better than two half batches.
        ``torch.cat`` of channels_last inputs stays channels_last, so the memory format survives
        end to end.
        """
        return self.trunk(torch.cat([self.stem_rgb(rgb), self.stem_ir(ir)], dim=0))

    def forward_single(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """Feature map of one modality's batch (used at test time)."""
        return self.trunk(self.stem(x, modality))
