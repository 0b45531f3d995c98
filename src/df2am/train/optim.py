"""Optimizer and learning-rate schedule of the training recipe (method.md, paper §4.1).

* SGD with momentum 0.9, weight decay 5e-4 (optionally Nesterov) over the model's parameter
  groups: the pretrained ``backbone`` at ``lr × optim.backbone_lr_mult`` and the new ``head``
  layers at ``lr`` (:meth:`df2am.models.DF2AMNet.param_groups`).
* The rate is set **once per epoch** (as in the AGW/DDAG code the paper builds on): a linear
  warm-up over the first ``warmup_epochs`` epochs, ``lr·(e+1)/warmup_epochs`` for epoch e
  (0-based), then ``lr·gamma^k`` where k is the number of milestones ≤ e. With the defaults
  (warm-up 10, milestones [30, 50], gamma 0.1) that is the paper's 0.1 → ×0.1 at epoch 30 →
  ×0.01 at epoch 50. ``warmup_epochs=0`` turns the warm-up off.

Usage::

    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim)   # LambdaLR, stepped once per epoch
    for epoch in range(cfg.train.epochs):
        ...train one epoch...
        scheduler.step()
"""

from __future__ import annotations

from bisect import bisect_right

import torch
from torch import nn

from df2am.config import OptimConfig
from df2am.errors import ConfigError

__all__ = ["lr_factor", "WarmupStepFactor", "build_optimizer", "build_scheduler"]


def lr_factor(epoch: int, warmup_epochs: int, milestones: list[int], gamma: float) -> float:
    """The multiplier of the base rate during 0-based ``epoch``.

    >>> [round(lr_factor(e, 10, [30, 50], 0.1), 4) for e in (0, 4, 9, 10, 29, 30, 49, 50)]
    [0.1, 0.5, 1.0, 1.0, 1.0, 0.1, 0.1, 0.01]
    """
    decay = gamma ** bisect_right(milestones, epoch)
    if warmup_epochs > 0 and epoch < warmup_epochs:
        return decay * (epoch + 1) / warmup_epochs
    return decay


class WarmupStepFactor:
    """Picklable ``LambdaLR`` callable wrapping :func:`lr_factor` (its ``__dict__`` is what
    ``LambdaLR.state_dict`` stores)."""

    def __init__(self, warmup_epochs: int, milestones: list[int], gamma: float) -> None:
        self.warmup_epochs = int(warmup_epochs)
        self.milestones = [int(m) for m in milestones]
        self.gamma = float(gamma)

    def __call__(self, epoch: int) -> float:
        return lr_factor(epoch, self.warmup_epochs, self.milestones, self.gamma)


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD (``optim.name=sgd``, the paper's) or Adam/AdamW over
    ``model.param_groups(lr, backbone_lr_mult, weight_decay)``; Adam's β₁ is ``optim.momentum``.

    A model without ``param_groups`` gets one group named ``all`` at ``cfg.lr``.
    """
    if cfg.lr <= 0:
        raise ConfigError(f"optim.lr must be > 0, got {cfg.lr}")
    if cfg.warmup_epochs < 0:
        raise ConfigError(f"optim.warmup_epochs must be >= 0, got {cfg.warmup_epochs}")
    if hasattr(model, "param_groups"):
        groups = model.param_groups(cfg.lr, cfg.backbone_lr_mult, cfg.weight_decay)
    else:
        groups = [
            {
                "params": [p for p in model.parameters() if p.requires_grad],
                "lr": cfg.lr,
                "weight_decay": cfg.weight_decay,
                "name": "all",
                "lr_mult": 1.0,
            }
        ]
    groups = [g for g in groups if len(g["params"]) > 0]
    if cfg.name in ("adam", "adamw"):
        if cfg.nesterov:
            raise ConfigError(f"optim.nesterov=true applies to SGD only, not optim.name={cfg.name}")
        cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
        return cls(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        groups,
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=cfg.nesterov,
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-epoch warm-up + step decay; group ``g`` runs at ``g.initial_lr × lr_factor(e)``."""
    factor = WarmupStepFactor(cfg.warmup_epochs, list(cfg.milestones), cfg.gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=factor)
