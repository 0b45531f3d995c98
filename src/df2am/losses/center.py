"""Cross-modality centre alignment (a common VI-ReID term, not part of DF²AM's Eq. 4).

For every identity of the batch with rows in both modalities: the centre of its RGB rows and the
centre of its IR rows of the L2-normalised feature; the loss is the mean Euclidean distance
between the two centres (hetero-centre loss, Zhu et al., Neurocomputing 2020, on unit features).
No host synchronisation: identities are handled with one-hot matrix products.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["cross_modality_center_loss", "cross_modality_prototype_loss"]


def cross_modality_center_loss(feat: torch.Tensor, labels: torch.Tensor, num_rgb: int
                               ) -> torch.Tensor:
    """Mean distance between each identity's RGB and IR centres of unit ``feat`` rows.

    ``feat`` (B, C) with rows [RGB; IR], the first ``num_rgb`` RGB; ``labels`` (B,).
    """
    with torch.autocast(device_type=feat.device.type, enabled=False):
        unit = F.normalize(feat.float(), dim=1)
        ids, inverse = torch.unique(labels, return_inverse=True)
        onehot = F.one_hot(inverse, ids.numel()).float()  # (B, I)
        rgb_oh, ir_oh = onehot[:num_rgb], onehot[num_rgb:]
        n_rgb, n_ir = rgb_oh.sum(0), ir_oh.sum(0)  # (I,)
        c_rgb = rgb_oh.t() @ unit[:num_rgb] / n_rgb.clamp(min=1)[:, None]
        c_ir = ir_oh.t() @ unit[num_rgb:] / n_ir.clamp(min=1)[:, None]
        both = ((n_rgb > 0) & (n_ir > 0)).float()
        dist = ((c_rgb - c_ir).pow(2).sum(1) + 1e-12).sqrt()
        return (dist * both).sum() / both.sum().clamp(min=1)


def cross_modality_prototype_loss(feat: torch.Tensor, labels: torch.Tensor, num_rgb: int,
                                  temperature: float = 0.1) -> torch.Tensor:
    """Each row classified among the batch's identities by the *other* modality's centres.

    Unit features; the centres of every identity of the batch in each modality; an IR row's
    logits are its cosines to the RGB centres / ``temperature`` (and an RGB row's to the IR
    centres); cross-entropy with its own identity as target, averaged over both directions.
    Only identities with rows in both modalities are candidates and anchors.
    """
    with torch.autocast(device_type=feat.device.type, enabled=False):
        unit = F.normalize(feat.float(), dim=1)
        ids, inverse = torch.unique(labels, return_inverse=True)
        onehot = F.one_hot(inverse, ids.numel()).float()  # (B, I)
        rgb_oh, ir_oh = onehot[:num_rgb], onehot[num_rgb:]
        n_rgb, n_ir = rgb_oh.sum(0), ir_oh.sum(0)
        both = (n_rgb > 0) & (n_ir > 0)  # (I,)
        c_rgb = F.normalize(rgb_oh.t() @ unit[:num_rgb], dim=1)
        c_ir = F.normalize(ir_oh.t() @ unit[num_rgb:], dim=1)
        mask = torch.where(both, 0.0, float("-inf"))  # candidates: ids seen in both modalities
        loss = feat.new_zeros((), dtype=torch.float32)
        for rows, centres, inv in ((unit[num_rgb:], c_rgb, inverse[num_rgb:]),
                                   (unit[:num_rgb], c_ir, inverse[:num_rgb])):
            logits = rows @ centres.t() / temperature + mask
            anchor = both[inv].float()
            ce = F.cross_entropy(logits, inv, reduction="none")
            ce = torch.where(anchor > 0, ce, torch.zeros_like(ce))
            loss = loss + ce.sum() / anchor.sum().clamp(min=1)
        return loss / 2
