"""The networks, by name (``model.arch``): one file per architecture, one dict of builders.

::

    from df2am.config import ModelConfig
    from df2am.models import build_model

    model = build_model(ModelConfig(), num_classes=395)   # DF²AM: ResNet-50, last stride 1, P = 4
    out = model(rgb, ir)                                   # ModelOutput, rows [rgb; ir]
    feats = model.extract(images, "rgb")                   # (N, 2048), L2-normalised

=============  ====================================  ==========================================
``arch``       builder                               what it is
=============  ====================================  ==========================================
``df2am``      :func:`~df2am.models.network.         the paper's network: two stems, shared
               build_df2am`                          ResNet, BNNeck head, DF² module
``baseline``   :func:`~df2am.models.baseline.        the paper's L_B network: df2am without the
               build_baseline`                       DF² module (a preset of the same class)
``agw``        :func:`~df2am.models.agw.build_agw`   AGW (Ye et al., TPAMI 2021): non-local
                                                     blocks, GeM, BNNeck
=============  ====================================  ==========================================

Every network is a :class:`~df2am.models.base.ReIDNet` — the protocol the trainer, evaluator,
export, visualisation and web app use (``forward``, ``extract``, ``test_features``,
``param_groups``, ``part_weights``, ``feat_dim``, ``num_classes``, ``cfg``), so none of them
needs to know which architecture it holds.

Adding an architecture: a file ``models/<name>.py`` with a :class:`ReIDNet` subclass and a
``build_<name>(cfg, num_classes)``; its entry here; its name in ``ModelConfig.arch`` and its
options and test features in ``df2am.config.ARCH_OPTIONS`` / ``ARCH_FEATURES`` (the config is
validated without importing the networks, so those tables live there; a test keeps them and
:data:`ARCHITECTURES` in step).

Modules: :mod:`~df2am.models.base` (the protocol), :mod:`~df2am.models.backbone` (modality
stems + shared layer1–4), :mod:`~df2am.models.df2` (Eq. 5–7), :mod:`~df2am.models.network`
(DF²AM), :mod:`~df2am.models.baseline`, :mod:`~df2am.models.agw`,
:mod:`~df2am.models.agw_reference` (checkpoints of the AGW reference code),
:mod:`~df2am.models.weights` (ImageNet / local-file initialisation).
"""

from __future__ import annotations

from collections.abc import Callable

from df2am.config import ModelConfig, arch_problems
from df2am.errors import ConfigError
from df2am.models.agw import AGWNet, build_agw
from df2am.models.agw_reference import (
    ConversionReport,
    convert_reference_state_dict,
    read_reference_checkpoint,
)
from df2am.models.base import ReIDNet
from df2am.models.baseline import build_baseline
from df2am.models.network import DF2AMNet, build_df2am
from df2am.models.output import ModelOutput
from df2am.models.weights import load_backbone_weights

__all__ = [
    "ARCHITECTURES",
    "build_model",
    "ReIDNet",
    "DF2AMNet",
    "AGWNet",
    "ModelOutput",
    "load_backbone_weights",
    "ConversionReport",
    "convert_reference_state_dict",
    "read_reference_checkpoint",
]

#: ``model.arch`` → builder ``(cfg, num_classes) -> ReIDNet`` (loads ``cfg.pretrained`` too).
ARCHITECTURES: dict[str, Callable[[ModelConfig, int], ReIDNet]] = {
    "df2am": build_df2am,
    "baseline": build_baseline,
    "agw": build_agw,
}


def build_model(cfg: ModelConfig, num_classes: int) -> ReIDNet:
    """The network ``cfg.arch`` names, with ``cfg.pretrained`` loaded into its backbone.

    Raises:
        ConfigError: an unknown architecture, or an option of another architecture set
            (e.g. ``model.df2_module=true`` with ``arch=agw``); the message names each key.
    """
    problems = arch_problems(cfg)
    if problems:
        raise ConfigError(f"model.arch={cfg.arch}: " + "; ".join(problems))
    return ARCHITECTURES[cfg.arch](cfg, num_classes)
