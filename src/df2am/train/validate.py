"""Validation during training: the model-selection score on identities held out of training.

With ``train.val_ids = N > 0`` the last N training identities are carved out of training
(:func:`df2am.data.validation.split_validation`): their IR images query their RGB images,
image-level CMC without camera filtering. The test set is never used for model selection.
The same features also give the modality-alignment report
(:func:`df2am.evaluation.modality_alignment`) logged with every validation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from df2am.config import Config
from df2am.data.records import ImageRecord
from df2am.evaluation import AlignmentReport

if TYPE_CHECKING:  # the networks import torchvision: not needed at import time
    from df2am.models import ReIDNet

__all__ = ["known_cams", "validate"]


def known_cams(records: list[ImageRecord]) -> np.ndarray | None:
    """Cameras of ``records``, or None when some are unknown (0: LLCM training lines carry no
    camera), so the alignment's within-modality retrieval does not skip same-camera pairs."""
    cams = np.asarray([r.cam for r in records])
    return None if (cams <= 0).any() else cams


def validate(
    model: ReIDNet,
    cfg: Config,
    query: list[ImageRecord],
    gallery: list[ImageRecord],
    *,
    device: torch.device,
    cache_dir: str,
) -> tuple[dict[str, Any], AlignmentReport]:
    """IR → RGB retrieval on the validation ids (``rank1``, ``mAP``, ``mINP``; the model
    selection criterion) and, under ``align``, the modality-alignment report of the same
    features (:func:`df2am.evaluation.modality_alignment`: within-RGB, within-IR and
    cross-modality Rank-1/mAP, the cross-modality positive/negative distance gap); the report
    itself is returned beside, for the log line."""
    from df2am.assess.evaluator import extract_records
    from df2am.evaluation import evaluate_features, modality_alignment

    def feats(records: list[ImageRecord]) -> torch.Tensor:
        return extract_records(
            model,
            records,
            cfg.data.root,
            cfg.data,
            device=device,
            batch_size=cfg.eval.batch_size,
            cache_dir=cache_dir,
        )

    q, g = feats(query), feats(gallery)
    q_ids = np.asarray([r.pid for r in query])
    g_ids = np.asarray([r.pid for r in gallery])
    res = evaluate_features(
        q,
        g,
        q_ids,
        g_ids,
        None,
        None,
        protocol="regdb",  # image-level CMC, no camera filter: query and gallery differ anyway
        metric=cfg.eval.metric,
        max_rank=min(cfg.eval.max_rank, len(gallery)),
    )
    d = res.to_dict()
    align = modality_alignment(g, q, g_ids, q_ids, known_cams(gallery), known_cams(query))
    metrics = {"rank1": d["rank1"], "mAP": d["mAP"], "mINP": d["mINP"], "align": align.to_json()}
    return metrics, align
