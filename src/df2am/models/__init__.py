"""The two-stream DF²AM network (method.md, "Network").

::

    from df2am.config import ModelConfig
    from df2am.models import build_model

    model = build_model(ModelConfig(), num_classes=395)   # ResNet-50, last stride 1, P = 4
    out = model(rgb, ir)                                   # ModelOutput, rows [rgb; ir]
    feats = model.extract(images, "rgb")                   # (N, 2048), L2-normalised

Modules: :mod:`~df2am.models.backbone` (modality stems + shared layer1–4),
:mod:`~df2am.models.df2` (Eq. 5–7), :mod:`~df2am.models.network` (heads, ``extract``,
``param_groups``), :mod:`~df2am.models.weights` (ImageNet / local-file initialisation).
"""

from df2am.models.network import DF2AMNet, build_model
from df2am.models.output import ModelOutput
from df2am.models.weights import load_backbone_weights

__all__ = ["DF2AMNet", "build_model", "ModelOutput", "load_backbone_weights"]
