"""The paper's baseline L_B network (``model.arch=baseline``): DF²AM's network without the DF²
module — two stems, shared ResNet, global average pooling, BNNeck and its classifier.

It is a preset of :class:`~df2am.models.network.DF2AMNet`, not a class of its own, because the
paper defines DF²AM as this baseline plus the DF² module (and L_A): one class keeps the stems,
heads and test features of the two identical by construction, and the state-dict names are the
same, so a checkpoint trained as ``arch=df2am, df2_module=false`` (Table 3's "Baseline" row)
and one trained as ``arch=baseline`` hold the same tensors. What the name adds is the check that
no DF² option is set (``model.df2_module`` must be false, ``num_parts`` / ``part_pooling`` /
``part_attention`` at their defaults) and a test feature without DF² ("bn_global", "global").

::

    cfg = ModelConfig(arch="baseline", df2_module=False, test_feature="bn_global")
    model = build_model(cfg, num_classes=395)     # a DF2AMNet with model.df2 None
"""

from __future__ import annotations

from df2am.config import ModelConfig
from df2am.errors import ConfigError
from df2am.models.network import DF2AMNet, build_df2am

__all__ = ["build_baseline"]


def build_baseline(cfg: ModelConfig, num_classes: int) -> DF2AMNet:
    """``ARCHITECTURES["baseline"]``: :func:`~df2am.models.network.build_df2am` with the DF²
    module off (``cfg.df2_module`` must already be false; use
    :func:`df2am.models.build_model`)."""
    if cfg.df2_module:
        raise ConfigError("model.arch=baseline has no DF² module: set model.df2_module=false")
    return build_df2am(cfg, num_classes)
