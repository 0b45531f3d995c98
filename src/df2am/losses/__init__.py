"""Losses of DF²AM: identity, batch-hard triplet, DF² (L_D), affinity (L_A / L1), and Eq. 4;
AGW's weighted regularisation triplet (WRT) and CAJ's variant (ADP) for the other
architectures (``loss.triplet_type``).

Usage::

    from df2am.losses import build_loss
    criterion = build_loss(cfg.loss)           # DF2AMLoss, an nn.Module
    loss = criterion(model(rgb, ir), labels)   # LossOutput(total, parts)
    loss.total.backward()

The plain functions are exported for tests, sweeps and other uses; every distance is computed
in fp32, even inside an autocast region.
"""

from df2am.losses.affinity import affinity_l1_loss, affinity_margin_loss, normalized_euclidean
from df2am.losses.combined import DF2AMLoss, build_loss
from df2am.losses.distance import pairwise_euclidean
from df2am.losses.identity import identity_loss
from df2am.losses.output import LossOutput
from df2am.losses.triplet import batch_hard_triplet
from df2am.losses.weighted_triplet import adaptive_weighted_triplet, weighted_regularized_triplet

__all__ = [
    "build_loss",
    "DF2AMLoss",
    "LossOutput",
    "identity_loss",
    "batch_hard_triplet",
    "weighted_regularized_triplet",
    "adaptive_weighted_triplet",
    "affinity_margin_loss",
    "affinity_l1_loss",
    "normalized_euclidean",
    "pairwise_euclidean",
]
