"""The total training loss of Eq. 4: L = L_B + λ·L_D + ζ·L_A, with the Table 3 switches.

Terms (rows of the :class:`~df2am.models.output.ModelOutput` are [RGB; IR], ``num_rgb``
leading RGB rows; ``labels`` follow the same order):

* L_B = L_B^RGB + L_B^IR (baseline), each = cross-entropy on that modality's rows of
  ``out.logits`` (BNNeck classifier) + batch-hard triplet on that modality's rows of
  ``out.global_feat`` (f^g). With ``triplet_mode="joint"`` the triplet part is one batch-hard
  triplet over all 2K* rows instead (the identity part stays per modality); with ``"cross"``
  each anchor mines its hardest positive and negative among the other modality's rows only.
* L_D = L_D^RGB + L_D^IR (Eq. 8): cross-entropy on each modality's rows of ``out.fused_logits``.
* L_A (Eq. 12), or L1 (Eq. 11) when ``affinity_type="l1"``: on ``out.global_feat`` of all rows.

``label_smoothing`` applies to every cross-entropy term (L_ID and L_D).

The same criterion serves every architecture (``model.arch``); two switches give the AGW/CAJ
recipe (:mod:`df2am.losses.weighted_triplet`):

* ``triplet_type``: the metric term of L_B — "hard" (batch-hard with ``triplet_margin``),
  "wrt" (AGW's weighted regularisation triplet) or "adp" (CAJ's squared-difference WRT, α = γ
  = 1); ``triplet_mode`` (per_modality / joint / cross) and ``triplet_feature`` apply to all
  three.
* ``id_mode``: "per_modality" (CE over the RGB rows + CE over the IR rows, the paper's L_B)
  or "joint" (one CE over all rows, as the AGW/CAJ code: with equal halves, half the
  per-modality sum).

AGW = ``use_baseline`` with ``triplet_type=wrt``, ``triplet_mode=joint``, ``id_mode=joint``
and no DF² / affinity term (configs/agw_sysu.yaml).

The five Table 3 settings are the switches of :class:`~df2am.config.LossConfig`:

=====================  ============  =======  ============
setting                use_baseline  use_df2  use_affinity
=====================  ============  =======  ============
Baseline               true          false    false
Baseline + DF²         true          true     false
Baseline + AM          true          false    true
DF² + AM without L_B   false         true     true
DF²AM (full)           true          true     true
=====================  ============  =======  ============

``LossOutput.parts`` holds, for the enabled terms only, ``id`` (Σ CE of L_B), ``triplet``
(Σ L_BH of L_B), ``df2`` (λ·L_D) and ``affinity`` (ζ·L_A or ζ·L1), each exactly as it enters the
total, so ``sum(parts.values()) == total``. Nothing here synchronises with the host, so the
parts can be logged lazily.

Usage::

    criterion = build_loss(cfg.loss)
    out = model(rgb, ir)
    loss = criterion(out, torch.cat([rgb_labels, ir_labels]))
    loss.total.backward()
"""

from __future__ import annotations

import torch
from torch import nn

from df2am.config import LossConfig
from df2am.errors import ConfigError
from df2am.losses.affinity import affinity_l1_loss, affinity_margin_loss
from df2am.losses.center import cross_modality_center_loss, cross_modality_prototype_loss
from df2am.losses.identity import identity_loss
from df2am.losses.output import LossOutput
from df2am.losses.triplet import batch_hard_triplet
from df2am.losses.weighted_triplet import adaptive_weighted_triplet, weighted_regularized_triplet
from df2am.models.output import ModelOutput

__all__ = ["DF2AMLoss", "build_loss"]


#: ``loss.triplet_feature`` / ``loss.affinity_feature`` → the ModelOutput field it reads.
_FEATURE_FIELDS = {"global": "global_feat", "bn_global": "bn_feat"}


def _metric_feature(out: ModelOutput, which: str) -> torch.Tensor:
    """The feature a metric term (triplet, L_A) works on: f^g ("global") or BN(f^g)."""
    return getattr(out, _FEATURE_FIELDS.get(which, "global_feat"))


class DF2AMLoss(nn.Module):
    """Eq. 4, L = L_B + λ·L_D + ζ·L_A, configured by a :class:`LossConfig` (no parameters)."""

    def __init__(self, cfg: LossConfig) -> None:
        super().__init__()
        if not (cfg.use_baseline or cfg.use_df2 or cfg.use_affinity):
            raise ConfigError(
                "loss: at least one of use_baseline, use_df2, use_affinity must be true"
            )
        if cfg.affinity_type not in ("margin", "l1"):
            raise ConfigError(
                f"loss.affinity_type: expected 'margin' or 'l1', got {cfg.affinity_type!r}"
            )
        if cfg.triplet_mode not in ("per_modality", "joint", "cross"):
            raise ConfigError(
                "loss.triplet_mode: expected 'per_modality', 'joint' or 'cross', got "
                f"{cfg.triplet_mode!r}"
            )
        if cfg.triplet_type not in ("hard", "wrt", "adp"):
            raise ConfigError(
                f"loss.triplet_type: expected 'hard', 'wrt' or 'adp', got {cfg.triplet_type!r}"
            )
        if cfg.id_mode not in ("per_modality", "joint"):
            raise ConfigError(
                f"loss.id_mode: expected 'per_modality' or 'joint', got {cfg.id_mode!r}"
            )
        self.cfg = cfg

    @property
    def used_outputs(self) -> frozenset[str]:
        """The :class:`~df2am.models.output.ModelOutput` fields the enabled terms read. With
        :meth:`df2am.models.ReIDNet.unused_parameters` it tells the trainer whether some
        parameters get no gradient (DDP's ``find_unused_parameters``)."""
        cfg = self.cfg
        used: set[str] = set()
        if cfg.use_baseline:
            used |= {"logits", _FEATURE_FIELDS.get(cfg.triplet_feature, "global_feat")}
        if cfg.use_df2:
            used.add("fused_logits")
        if cfg.use_affinity:
            used.add(_FEATURE_FIELDS.get(cfg.affinity_feature, "global_feat"))
        return frozenset(used)

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"baseline={c.use_baseline}, df2={c.use_df2} (λ={c.lambda_df2}), "
            f"affinity={c.use_affinity} ({c.affinity_type}, ζ={c.zeta_affinity}), "
            f"triplet={c.triplet_type}/{c.triplet_mode}, id={c.id_mode}"
        )

    def _per_modality_ce(self, logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
        """CE over the RGB rows + CE over the IR rows (each a mean within its modality)."""
        ls = self.cfg.label_smoothing
        return identity_loss(logits[:k], labels[:k], ls) + identity_loss(logits[k:], labels[k:], ls)

    def _metric(
        self, feat: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The metric term (``triplet_type``) over ``feat``'s rows."""
        kind = self.cfg.triplet_type
        if kind == "wrt":
            return weighted_regularized_triplet(feat, labels, groups=groups)
        if kind == "adp":
            return adaptive_weighted_triplet(feat, labels, groups=groups)
        return batch_hard_triplet(feat, labels, self.cfg.triplet_margin, groups=groups)

    def forward(self, out: ModelOutput, labels: torch.Tensor) -> LossOutput:
        """Total loss and its weighted parts for one batch; ``labels`` (B,) in row order."""
        cfg = self.cfg
        b = out.global_feat.shape[0]
        k = out.num_rgb
        if labels.dim() != 1 or labels.shape[0] != b:
            raise ValueError(
                f"DF2AMLoss: labels must have shape ({b},) to match the model output rows, "
                f"got {tuple(labels.shape)}"
            )
        if not 0 < k < b:
            # Both halves of L_B and L_D are per-modality means; an empty modality would be NaN.
            raise ValueError(f"DF2AMLoss: need RGB and IR rows, got num_rgb={k} of {b} rows")

        parts: dict[str, torch.Tensor] = {}
        if cfg.use_baseline:
            if cfg.id_mode == "joint":
                parts["id"] = identity_loss(out.logits, labels, cfg.label_smoothing)
            else:
                parts["id"] = self._per_modality_ce(out.logits, labels, k)
            feat = _metric_feature(out, cfg.triplet_feature)
            if cfg.triplet_mode == "joint":
                parts["triplet"] = self._metric(feat, labels)
            elif cfg.triplet_mode == "cross":
                modality = torch.arange(b, device=labels.device) >= k
                parts["triplet"] = self._metric(feat, labels, groups=modality)
            else:
                parts["triplet"] = self._metric(feat[:k], labels[:k]) + self._metric(
                    feat[k:], labels[k:]
                )
        if cfg.use_df2:
            if out.fused_logits is None:
                raise ConfigError(
                    "loss.use_df2=true but the model output has no fused_logits: the DF² loss "
                    "L_D needs model.df2_module=true (or set loss.use_df2=false)"
                )
            parts["df2"] = cfg.lambda_df2 * self._per_modality_ce(out.fused_logits, labels, k)
        if cfg.use_affinity:
            af = _metric_feature(out, cfg.affinity_feature)
            red = cfg.affinity_reduction
            if cfg.affinity_type == "l1":
                la = affinity_l1_loss(af, labels, cfg.affinity_delta, red)
            else:
                la = affinity_margin_loss(af, labels, cfg.affinity_margin, red)
            parts["affinity"] = cfg.zeta_affinity * la
        if cfg.center_weight > 0:
            if cfg.center_mode == "prototype":
                term = cross_modality_prototype_loss(out.bn_feat, labels, k,
                                                     cfg.center_temperature)
            else:
                term = cross_modality_center_loss(out.bn_feat, labels, k)
            parts["center"] = cfg.center_weight * term

        terms = list(parts.values())
        total = terms[0]
        for t in terms[1:]:
            total = total + t
        return LossOutput(total=total, parts=parts)


def build_loss(cfg: LossConfig) -> DF2AMLoss:
    """The Eq. 4 criterion of a run: ``build_loss(cfg.loss)``."""
    return DF2AMLoss(cfg)
