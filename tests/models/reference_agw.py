"""An independent, minimal re-implementation of the AGW reference network, for tests and the
AGW benchmark: ``embed_net`` of github.com/mangye16/Cross-Modal-Re-ID-baseline (``model.py``,
``resnet.py``), written from reading that code — not copied, and sharing no code with
``df2am.models``.

Same module names, so the same state-dict keys as the reference
(``visible_module.visible.*``, ``thermal_module.thermal.*``, ``base_resnet.base.*``,
``NL_1``–``NL_4``, ``bottleneck``, ``classifier``), and the same forward:

* each of the three parts holds a whole ResNet-50 (last stride 1, stride on the 3×3 conv,
  no ``fc``), of which the visible/thermal parts run only conv1, bn1, relu, maxpool and the
  shared part only layer1–layer4;
* non-local blocks after layer2 blocks 2, 3 and layer3 blocks 3, 4, 5 (``non_layers =
  [0, 2, 3, 0]``; block index ``layers[k] - (i + 1)``), inner width
  ``reduc_ratio // reduc_ratio`` = 1, computed the reference's way: the N × N matrix
  ``f = θᵀφ / N`` first, then ``y = f g``; BN of W initialised to 0;
* GeM ``(mean(x³) + 1e-12)^(1/3)`` over the flattened positions, or average pooling;
* ``bottleneck`` BatchNorm1d (bias frozen, weight N(1, 0.01)), bias-free ``classifier``
  N(0, 0.001);
* training: ``(x_pool, classifier(bottleneck(x_pool)))``; eval: ``(l2norm(x_pool),
  l2norm(bottleneck(x_pool)))``; ``modal`` 0 = both streams concatenated, 1 = visible only,
  2 = thermal only.

:func:`randomize_` gives every parameter and buffer random values (the non-local blocks'
zero-initialised BN included) so a comparison exercises every piece; :func:`calibrate_` then
sets the statistics of the BatchNorm layers the forward uses from a batch of images, so that
features of different images differ as they would in a trained network.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["EmbedNet", "randomize_", "calibrate_"]

_LAYERS = (3, 4, 6, 3)  # ResNet-50


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + shortcut)


class _ResNet50(nn.Module):
    """The reference's ``resnet50(last_conv_stride=1)``: no avgpool weights, no fc."""

    def __init__(self, last_stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for k, (planes, blocks, stride) in enumerate(
            zip((64, 128, 256, 512), _LAYERS, (1, 2, 2, last_stride), strict=True), start=1
        ):
            down = None
            if stride != 1 or inplanes != planes * 4:
                down = nn.Sequential(
                    nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes * 4),
                )
            layer = [_Bottleneck(inplanes, planes, stride, down)]
            inplanes = planes * 4
            layer += [_Bottleneck(inplanes, planes) for _ in range(1, blocks)]
            setattr(self, f"layer{k}", nn.Sequential(*layer))


class _NonLocal(nn.Module):
    def __init__(self, in_channels: int, reduc_ratio: int = 2) -> None:
        super().__init__()
        self.inter_channels = reduc_ratio // reduc_ratio  # = 1, as in the reference
        c, ci = in_channels, self.inter_channels
        self.g = nn.Sequential(nn.Conv2d(c, ci, 1))
        self.W = nn.Sequential(nn.Conv2d(ci, c, 1), nn.BatchNorm2d(c))
        nn.init.constant_(self.W[1].weight, 0.0)
        nn.init.constant_(self.W[1].bias, 0.0)
        self.theta = nn.Conv2d(c, ci, 1)
        self.phi = nn.Conv2d(c, ci, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        ci = self.inter_channels
        g_x = self.g(x).reshape(b, ci, -1).permute(0, 2, 1)  # (B, N, ci)
        theta_x = self.theta(x).reshape(b, ci, -1).permute(0, 2, 1)  # (B, N, ci)
        phi_x = self.phi(x).reshape(b, ci, -1)  # (B, ci, N)
        f = torch.matmul(theta_x, phi_x)  # (B, N, N)
        f = f / f.shape[-1]
        y = torch.matmul(f, g_x).permute(0, 2, 1).reshape(b, ci, *x.shape[2:])
        return self.W(y) + x


class _Visible(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.visible = _ResNet50(last_stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.visible
        return v.maxpool(v.relu(v.bn1(v.conv1(x))))


class _Thermal(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.thermal = _ResNet50(last_stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.thermal
        return t.maxpool(t.relu(t.bn1(t.conv1(x))))


class _Base(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.base = _ResNet50(last_stride=1)


class EmbedNet(nn.Module):
    """``embed_net(class_num, no_local, gm_pool)`` of the reference ("on"/"off" flags)."""

    def __init__(self, class_num: int, no_local: str = "on", gm_pool: str = "on") -> None:
        super().__init__()
        self.thermal_module = _Thermal()
        self.visible_module = _Visible()
        self.base_resnet = _Base()
        self.non_local = no_local
        non_layers = (0, 2, 3, 0)
        self.nl_idx: list[list[int]] = []
        if no_local == "on":
            for k, (channels, n) in enumerate(zip((256, 512, 1024, 2048), non_layers,
                                                  strict=True), start=1):
                setattr(self, f"NL_{k}", nn.ModuleList(_NonLocal(channels) for _ in range(n)))
                self.nl_idx.append(sorted(_LAYERS[k - 1] - (i + 1) for i in range(n)))
        self.bottleneck = nn.BatchNorm1d(2048)
        self.bottleneck.bias.requires_grad_(False)
        nn.init.normal_(self.bottleneck.weight, 1.0, 0.01)
        nn.init.zeros_(self.bottleneck.bias)
        self.classifier = nn.Linear(2048, class_num, bias=False)
        nn.init.normal_(self.classifier.weight, 0, 0.001)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.gm_pool = gm_pool

    def _shared(self, x: torch.Tensor) -> torch.Tensor:
        base = self.base_resnet.base
        for k in range(1, 5):
            layer = getattr(base, f"layer{k}")
            if self.non_local != "on":
                x = layer(x)
                continue
            blocks, idx = getattr(self, f"NL_{k}"), self.nl_idx[k - 1]
            for i, block in enumerate(layer):
                x = block(x)
                if i in idx:
                    x = blocks[idx.index(i)](x)
        return x

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, modal: int = 0):
        if modal == 0:
            x = torch.cat((self.visible_module(x1), self.thermal_module(x2)), 0)
        elif modal == 1:
            x = self.visible_module(x1)
        else:
            x = self.thermal_module(x2)
        x = self._shared(x)
        if self.gm_pool == "on":
            b, c = x.shape[:2]
            x_pool = (torch.mean(x.reshape(b, c, -1) ** 3.0, dim=-1) + 1e-12) ** (1 / 3.0)
        else:
            x_pool = self.avgpool(x).reshape(x.shape[0], x.shape[1])
        feat = self.bottleneck(x_pool)
        if self.training:
            return x_pool, self.classifier(feat)
        return _l2norm(x_pool), _l2norm(feat)


def _l2norm(x: torch.Tensor) -> torch.Tensor:
    return x / x.pow(2).sum(1, keepdim=True).pow(0.5)


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random values for every parameter and buffer (in place), scaled to keep a deep eval-mode
    ResNet's activations finite: convolutions/linears N(0, 1/fan_in), BN weights U(0.5, 1),
    biases and running means N(0, 0.05²), running variances U(0.5, 1.5); BatchNorm counters 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if name.endswith("num_batches_tracked"):
                t.fill_(1)
            elif name.endswith("running_var"):
                t.uniform_(0.5, 1.5, generator=g)
            elif t.dim() >= 2:
                t.normal_(0.0, 1.0 / math.sqrt(math.prod(t.shape[1:])), generator=g)
            elif name.endswith("weight"):
                t.uniform_(0.5, 1.0, generator=g)
            else:  # biases, running means
                t.normal_(0.0, 0.05, generator=g)
    return model


def calibrate_(model: EmbedNet, images: torch.Tensor) -> EmbedNet:
    """Set the BatchNorm statistics of every layer the forward runs to those of ``images``
    (both streams, one training pass with cumulative averages), as training would; random
    statistics make a deep ResNet's features nearly identical for every image."""
    momenta = {}
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            momenta[m] = m.momentum
            m.momentum = None
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(images, images, 0)
    for m, momentum in momenta.items():
        m.momentum = momentum
    return model.eval()
