"""Typed configuration: dataclasses loaded from YAML, with ``key=value`` overrides.

Every setting of a run lives in one :class:`Config`. A YAML file gives any subset of the keys
(nested by section); overrides from the command line use dotted keys::

    from df2am.config import load_config
    cfg = load_config("configs/sysu.yaml", ["optim.lr=0.05", "model.num_parts=3"])
    cfg.model.num_parts  # -> 3

Everything below is checked when the config is loaded (YAML or ``key=value``), before any
work starts; each failure is a :class:`~df2am.errors.ConfigError` naming the key (and the file
it came from) and what was expected, so a typo can never be silently ignored:

* unknown keys; values of the wrong type; values outside a field's allowed choices;
* the range of every numeric field (:data:`NUMERIC_RULES`, one rule per field; the comments of
  the dataclasses say the same);
* numbers in any YAML spelling: PyYAML reads ``1e-4`` or ``5E-4`` (no dot) as a *string*;
  a float field takes any decimal spelling (``1e-4``, ``1E3``, ``.5``, ``"0.1"``), an int field
  only a plain integer (``1e3`` is an error: write ``1000``); ``nan``/``inf`` are errors;
* a key given twice in one YAML mapping (at any depth) is an error naming the key and both
  lines, never "last one wins". A ``key=value`` override given twice on the command line is
  *not* an error: overrides apply left to right and the later one wins (sweeps append a run's
  overrides after the spec's, on purpose);
* a config file that is missing, a directory, not UTF-8 (the byte offset is named), not
  valid YAML (the line is named) or empty (no key: it would silently train the defaults);
* protocol options the dataset does not have, set to a non-default value (``eval.mode=indoor``
  with RegDB; ``data.trial=3`` with SYSU-MM01, whose trials are gallery draws of one model) —
  the rule ``df2am eval --mode``/``--direction`` follows too
  (:meth:`df2am.data.datasets.base.Dataset.check_applicable`);
* model options of another architecture (:data:`ARCH_OPTIONS`: ``model.df2_module=true`` or
  ``model.test_feature=fused`` with ``model.arch=agw``), and loss or augmentation switches
  that have no effect together (``loss.triplet_margin`` with ``loss.triplet_type=wrt``).

``train.precision`` is checked against its choices here; whether the hardware runs it at a
sensible speed (``auto``, emulated bf16) depends on the device, which is only known when
training starts: :func:`df2am.train.precision.resolve_precision` runs then, before epoch 1.

:func:`save_config` writes the resolved config of a run, which :func:`load_config` reads back
unchanged; :func:`complete_config_dict` fills keys that an older run config lacks with their
defaults (which reproduce the behaviour it ran with).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from df2am.errors import ConfigError

__all__ = [
    "Config",
    "ModelConfig",
    "LossConfig",
    "DataConfig",
    "SamplerConfig",
    "OptimConfig",
    "TrainConfig",
    "EvalConfig",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "apply_overrides",
    "save_config",
    "complete_config_dict",
    "NUMERIC_RULES",
    "ARCH_OPTIONS",
    "ARCH_FEATURES",
    "arch_problems",
]


@dataclass
class ModelConfig:
    """The two-stream network and its DF² module (method.md, "Network")."""

    #: Architecture (a name of df2am.models.ARCHITECTURES): "df2am" (the paper's network),
    #: "baseline" (the paper's L_B network: df2am without the DF² module) or "agw" (Ye et al.,
    #: TPAMI 2021). An option of another architecture (ARCH_OPTIONS) must keep its default.
    arch: Literal["df2am", "baseline", "agw"] = "df2am"
    depth: Literal[18, 34, 50, 101] = 50
    #: Base width of the ResNet (channels of the stem and layer1; the stages double it): 64 is
    #: torchvision's (and ImageNet weights'); a narrower network (a multiple of 8) only from
    #: scratch.
    width: int = 64
    #: "none", "imagenet" (torchvision weights API; downloads only when asked) or a path to a
    #: torchvision-format ResNet state dict.
    pretrained: str = "none"
    last_stride: Literal[1, 2] = 1
    #: Build the DF² module (part pooling + attention + fused head). Off for the Table 3 baseline.
    df2_module: bool = True
    num_parts: int = 4  # P >= 1
    #: "strict": P must divide the feature height H (equal strips); "adaptive": PyTorch's
    #: adaptive pooling bins (rows floor(pH/P) .. ceil((p+1)H/P) - 1, may overlap), any P.
    part_pooling: Literal["strict", "adaptive"] = "strict"
    #: "part": ω_p from f^p alone (Sec. 3.3, default); "part_global": from [f^p; f^g];
    #: "global_vector": one learned ω ∈ R^P shared by all images.
    part_attention: Literal["part", "part_global", "global_vector"] = "part"
    #: ResNet stages after the stem that are modality-specific (0: only the stems; 1: + layer1;
    #: 2: + layer1 and layer2). The rest of layer1–layer4 is shared.
    specific_stages: int = 0  # 0..2
    #: Initial weights of the IR stem (and its specific stages): "independent" random draws,
    #: or "copy" of the RGB ones (what ImageNet weights give both).
    stem_init: Literal["independent", "copy"] = "independent"
    #: Test feature: "fused" (BN(f̃), default), "global" (f^g) or "bn_global" (BN(f^g)).
    test_feature: Literal["fused", "global", "bn_global"] = "fused"
    #: Average the features of the image and its horizontal flip at test time.
    flip_test: bool = False
    #: AGW only: non-local blocks after the last 2 blocks of layer2 and the last 3 of layer3.
    non_local: bool = False
    #: AGW only: pooling of the feature map, "avg" (global average) or "gem" (generalised mean,
    #: p = 3, the AGW reference's).
    pooling: Literal["avg", "gem"] = "avg"


@dataclass
class LossConfig:
    """Switches and weights of Eq. 4, L = L_B + λ·L_D + ζ·L_A (method.md, "Losses")."""

    use_baseline: bool = True  # L_B = L_ID + L_BH per modality
    use_df2: bool = True  # L_D (needs model.df2_module)
    use_affinity: bool = True  # L_A (or its L1 variant)
    affinity_type: Literal["margin", "l1"] = "margin"  # Eq. 12 | Eq. 11
    affinity_margin: float = 0.5  # m of Eq. 12, >= 0
    affinity_delta: float = 1.0  # δ of Eq. 11, >= 0
    lambda_df2: float = 1.1  # λ >= 0
    zeta_affinity: float = 1.5  # ζ >= 0
    #: How L_A's B² pair terms are reduced: "pairs" (mean), "row" (Σ_j, mean over anchors) or
    #: "sum" (Eq. 12 as printed). See docs/method.md for what ζ means with each.
    affinity_reduction: Literal["pairs", "row", "sum"] = "pairs"
    #: Feature L_A is computed on: "global" (f^g, §3.4) or "bn_global" (BN(f^g), centred).
    affinity_feature: Literal["global", "bn_global"] = "global"
    #: Feature the batch-hard triplet is computed on: "global" (f^g) or "bn_global" (BN(f^g)).
    triplet_feature: Literal["global", "bn_global"] = "global"
    triplet_margin: float = 0.3  # >= 0
    #: "per_modality": L_BH^RGB + L_BH^IR (the paper); "joint": one triplet over all 2K* samples.
    #: "cross": one triplet whose positives and negatives are mined in the other modality only.
    triplet_mode: Literal["per_modality", "joint", "cross"] = "per_modality"
    label_smoothing: float = 0.0  # ε of the smoothed cross-entropy, in [0, 1)
    #: Metric term of L_B: "hard" (batch-hard triplet, triplet_margin), "wrt" (AGW's weighted
    #: regularisation triplet, soft margin) or "adp" (CAJ's squared-difference variant of WRT).
    triplet_type: Literal["hard", "wrt", "adp"] = "hard"
    #: Identity term of L_B: "per_modality" (CE over the RGB rows + CE over the IR rows, the
    #: paper) or "joint" (one CE over all rows, the AGW/CAJ code).
    id_mode: Literal["per_modality", "joint"] = "per_modality"
    #: Weight of the cross-modality centre alignment term (0 = off): per identity of the batch,
    #: the distance between its RGB and IR centres of unit BN(f^g).
    center_weight: float = 0.0  # >= 0
    #: "distance": mean distance between each id's RGB and IR centres; "prototype": each row
    #: classified among the batch's ids by the other modality's centres (softmax, temperature).
    center_mode: Literal["distance", "prototype"] = "distance"
    center_temperature: float = 0.1  # > 0


@dataclass
class DataConfig:
    """Training data: which dataset, where, and the transforms of method.md."""

    #: A name of df2am.data.datasets.DATASETS ("sysu", "regdb", "llcm").
    dataset: str = "sysu"
    root: str = ""
    #: Training trial of datasets with one model per trial (RegDB: 1..10). Other datasets
    #: (SYSU-MM01, LLCM) train one model for all trials: there it must stay 1 (the default).
    trial: int = 1
    height: int = 256  # >= 1 (pixels)
    width: int = 128  # >= 1 (pixels)
    pad: int = 10  # >= 0: padding before the random crop (0 = no crop)
    flip_prob: float = 0.5  # probability, in [0, 1]
    random_erasing: float = 0.0  # probability, in [0, 1]; 0 = off
    channel_aug: bool = False  # random channel swap / gray for RGB images
    #: Share of RGB images that channel augmentation replaces by one channel or the luminance.
    channel_aug_prob: float = 0.5  # probability, in [0, 1]
    #: Rule of random erasing (when random_erasing > 0): "torchvision" (area 0.02–0.33,
    #: log-uniform aspect, fill 0 after normalisation) or "caj" (CAJ's ChannelRandomErasing:
    #: area 0.02–0.4, uniform aspect 0.3–3.33, per-channel fill 0.4914/0.4822/0.4465).
    erasing_mode: Literal["torchvision", "caj"] = "torchvision"
    #: CAJ's joint batch: every RGB image a second time with CAJ's ChannelExchange (one of its
    #: R, G, B channels on all three), so the RGB rows are [originals; exchanged copies].
    rgb_exchange_copy: bool = False
    #: CAJ's ChannelAdapGray on IR images: one of R, G, B on all three channels (1/4 each),
    #: else the luminance (1/8) or unchanged (1/8).
    ir_channel_gray: bool = False
    #: Share of training images (both modalities) replaced by their luminance through a random
    #: tone curve (brightness order scrambled, edges kept); 0 = off.
    tone_aug_prob: float = 0.0  # probability, in [0, 1]
    tone_knots: int = 4  # >= 2: knots of the random piecewise-linear tone curve
    num_workers: int = 2  # >= 0 (0 = load in the main process)
    #: Decoded, resized uint8 images are cached here ("" = <run dir>/cache). "none" disables.
    cache_dir: str = ""


@dataclass
class SamplerConfig:
    """Identity-balanced sampling: N* ids × (M* RGB + M* IR) per batch."""

    num_ids: int = 8  # N* >= 1
    num_per_modality: int = 4  # M* >= 1


@dataclass
class OptimConfig:
    """SGD recipe of §4.1 with the warm-up and backbone learning-rate multiplier of AGW/DDAG."""

    #: "sgd" (the paper's), or "adam" / "adamw" (β = (momentum, 0.999); no Nesterov).
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.1  # > 0
    momentum: float = 0.9  # in [0, 1) (Adam's β1 as well)
    weight_decay: float = 5e-4  # >= 0
    nesterov: bool = False
    #: Learning-rate multiplier of the (pretrained) backbone relative to the new layers; >= 0
    #: (0 freezes the backbone's weights).
    backbone_lr_mult: float = 0.1
    warmup_epochs: int = 10  # >= 0 (0 = no warm-up)
    #: Epochs after which the rate is multiplied by ``gamma``: each >= 1, strictly ascending.
    #: Milestones beyond ``train.epochs`` are allowed (they are never reached: a shortened run,
    #: e.g. ``train.epochs=2``, keeps the recipe's schedule).
    milestones: list[int] = field(default_factory=lambda: [30, 50])
    gamma: float = 0.1  # > 0 (< 1 decays)


@dataclass
class TrainConfig:
    """How the training job runs."""

    epochs: int = 80  # >= 1
    seed: int = 0  # >= 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: "fp32", "bf16", "fp16" (CUDA only) or "auto": what the device runs fastest (CUDA: bf16
    #: from compute capability 8.0, fp16 on 7.x, else fp32; CPU: bf16 only with native bf16
    #: instructions, else fp32). Resolved when training starts (df2am.train.precision).
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    #: bf16 on a device without native bf16 (e.g. a CPU without AVX512-BF16/AMX) is emulated,
    #: ~20x slower than fp32, and refused unless this is true (then a warning is logged).
    allow_slow_bf16: bool = False
    channels_last: bool = True
    #: Cap on iterations per epoch (0 = the full epoch of method.md); for smoke runs and demos.
    max_iters_per_epoch: int = 0  # >= 0
    checkpoint_every: int = 10  # >= 1
    log_every: int = 20  # >= 1
    #: Evaluate on the validation split every N epochs (0 = never); >= 0.
    eval_every: int = 0
    #: Identities carved from the training ids for model selection (0 = report the last epoch);
    #: >= 0.
    val_ids: int = 0
    deterministic: bool = False
    #: Evaluate the reported model on the test protocol (``cfg.eval``) at the end of training.
    final_eval: bool = True
    #: Stop when a step's loss exceeds this factor × the median of the run's first steps or ×
    #: the running median of recent step losses (0 = off; a non-finite loss always stops);
    #: >= 0. 1000 by default: divergence grows the loss by orders of magnitude, training never
    #: does (df2am.train.divergence).
    divergence_factor: float = 1000.0


@dataclass
class EvalConfig:
    """Test protocol (protocols.md).

    The protocol options (mode, sampler, shots, split_file, direction) apply to the datasets
    that have them (``Dataset.option_choices``); with any other dataset they must keep the
    defaults below (the shipped RegDB/LLCM configs spell those defaults out).
    """

    mode: Literal["all", "indoor"] = "all"  # SYSU-MM01 only
    sampler: Literal["seeded", "official"] = "seeded"  # SYSU-MM01 only
    shots: Literal[1, 10] = 1  # SYSU-MM01 only
    trials: int = 10  # 1..10
    #: SYSU official split file; "" = <root>/exp/rand_perm_cam.mat. SYSU-MM01 only.
    split_file: str = ""
    #: Query→gallery direction of the dataset (RegDB "v2t" | "t2v"; LLCM "i2v" | "v2i" |
    #: "v2i_transposed"); SYSU-MM01 has none and ignores the default.
    direction: str = "v2t"
    metric: Literal["cosine", "euclidean"] = "cosine"
    batch_size: int = 128  # >= 1
    max_rank: int = 20  # >= 1
    #: k-reciprocal re-ranking (Zhong et al., CVPR 2017) of each trial's query + gallery.
    rerank: bool = False
    rerank_k1: int = 20  # >= 1
    rerank_k2: int = 6  # >= 1
    rerank_lambda: float = 0.3  # weight, in [0, 1]

    def check_rerank(self) -> None:
        """The re-ranking parameters are in range (also for evaluator overrides)."""
        if self.rerank_k1 < 1 or self.rerank_k2 < 1:
            raise ConfigError(f"eval.rerank_k1 and eval.rerank_k2 must be >= 1, got "
                              f"{self.rerank_k1} and {self.rerank_k2}")
        if not 0.0 <= self.rerank_lambda <= 1.0:
            raise ConfigError(f"eval.rerank_lambda is a weight: expected a value in [0, 1], "
                              f"got {self.rerank_lambda}")


@dataclass
class Config:
    """A whole run. Sections mirror the library's rooms."""

    name: str = "df2am"
    output_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        """Every check a config passes before work starts (see the module docstring)."""
        for key, rule in NUMERIC_RULES.items():
            if rule is None:
                continue  # checked against the dataset below
            section, name = key.split(".")
            problem = rule(getattr(getattr(self, section), name))
            if problem:
                raise ConfigError(f"{key} {problem}")
        problems = arch_problems(self.model, self.loss)
        if problems:
            raise ConfigError(f"model.arch={self.model.arch}: " + "; ".join(problems))
        self._validate_recipe_switches()
        if self.model.width != 64 and self.model.pretrained != "none":
            raise ConfigError(
                f"model.width={self.model.width} has no pretrained weights: ImageNet ResNets are "
                f"64 wide; use model.pretrained=none (or model.width=64)"
            )
        if self.loss.use_df2 and not self.model.df2_module:
            raise ConfigError(
                "loss.use_df2=true needs model.df2_module=true (L_D is the DF² head's loss)"
            )
        if self.model.test_feature == "fused" and not self.model.df2_module:
            raise ConfigError(
                "model.test_feature='fused' needs model.df2_module=true; "
                "use 'bn_global' for the baseline"
            )
        if not (self.loss.use_baseline or self.loss.use_df2 or self.loss.use_affinity):
            raise ConfigError(
                "loss: at least one of use_baseline, use_df2, use_affinity must be true"
            )
        self.eval.check_rerank()
        self._validate_dataset()

    def _validate_recipe_switches(self) -> None:
        """Loss and augmentation switches that only make sense together."""
        margin = LossConfig().triplet_margin
        if self.loss.triplet_type != "hard" and self.loss.triplet_margin != margin:
            raise ConfigError(
                f"loss.triplet_margin={self.loss.triplet_margin} does not apply to "
                f"loss.triplet_type={self.loss.triplet_type} (a soft-margin loss without a "
                f"margin); leave loss.triplet_margin at {margin}"
            )
        if self.data.erasing_mode != "torchvision" and self.data.random_erasing == 0:
            raise ConfigError(
                f"data.erasing_mode={self.data.erasing_mode} has no effect with "
                f"data.random_erasing=0 (the erasing probability); set both or neither"
            )
        if self.data.rgb_exchange_copy and self.data.channel_aug:
            raise ConfigError(
                "data.rgb_exchange_copy=true and data.channel_aug=true: choose one (the "
                "exchanged copy is CAJ's channel augmentation; channel_aug would also change "
                "the originals)"
            )

    def _validate_dataset(self) -> None:
        """The dataset exists and the protocol options are valid for it: options it does not
        have must keep their defaults, those it has must be among its choices."""
        # Imported here: df2am.data imports this module (the loaders take DataConfig).
        from df2am.data.datasets import get_dataset
        from df2am.data.datasets.base import OPTION_NAMES

        ds = get_dataset(self.data.dataset, "data.dataset")
        defaults = EvalConfig()
        changed = {name: getattr(self.eval, name) for name in OPTION_NAMES
                   if getattr(self.eval, name) != getattr(defaults, name)}
        ds.check_applicable(changed, spell="eval.{}".format, advice=lambda name: (
            f"leave eval.{name} at its default {getattr(defaults, name)!r}"))
        ds.resolve_options(**{name: getattr(self.eval, name) for name in ds.option_choices})
        if self.eval.split_file and self.eval.sampler != "official":
            raise ConfigError(
                f"eval.split_file={self.eval.split_file!r} is the official sampler's split, but "
                f"eval.sampler={self.eval.sampler} draws its own galleries and would ignore it: "
                "set eval.sampler=official, or leave eval.split_file empty")
        trial, default_trial = self.data.trial, DataConfig().trial
        if ds.trial_per_model:
            if trial not in ds.trials:
                raise ConfigError(
                    f"data.trial must be in {ds.trials[0]}..{ds.trials[-1]} for {ds.title} "
                    f"({ds.trial_rule}), got {trial}"
                )
        elif trial != default_trial:
            raise ConfigError(
                f"data.trial={trial} does not apply to {ds.title}: it trains one model for all "
                f"trials (eval.trials chooses how many gallery draws are tested); data.trial "
                f"selects the training split of datasets with one model per trial (RegDB). "
                f"Leave it at {default_trial}"
            )


# --------------------------------------------------------------------------- architectures

#: Model options that belong to some architectures only (``model.arch``): any other
#: architecture must leave them at their defaults (``df2_module`` at false). The networks live
#: in ``df2am.models`` (one file each); a test keeps this table and ``ARCHITECTURES`` in step.
ARCH_OPTIONS: dict[str, tuple[str, ...]] = {
    "df2am": ("df2_module", "num_parts", "part_pooling", "part_attention", "specific_stages",
              "stem_init", "width"),
    "baseline": ("specific_stages", "stem_init", "width"),
    "agw": ("non_local", "pooling"),
}
#: Test features (``model.test_feature``) each architecture offers; the first is its usual one.
ARCH_FEATURES: dict[str, tuple[str, ...]] = {
    "df2am": ("fused", "global", "bn_global"),
    "baseline": ("bn_global", "global"),
    "agw": ("bn_global", "global"),
}
#: The value of an option that means "this architecture does not have it" when it is not the
#: dataclass default.
_ABSENT: dict[str, Any] = {"df2_module": False}


def arch_problems(model: ModelConfig, loss: LossConfig | None = None) -> list[str]:
    """What in ``model`` (and ``loss``) does not fit ``model.arch``, each naming its key; empty
    when everything fits. :meth:`Config.validate` and ``df2am.models.build_model`` use it."""
    arch = model.arch
    if arch not in ARCH_OPTIONS:
        return [f"model.arch must be one of {sorted(ARCH_OPTIONS)}, got {arch!r}"]
    problems = []
    own = ARCH_OPTIONS[arch]
    defaults = ModelConfig()
    for key in sorted({k for keys in ARCH_OPTIONS.values() for k in keys} - set(own)):
        absent = _ABSENT.get(key, getattr(defaults, key))
        value = getattr(model, key)
        if value != absent:
            owners = ", ".join(a for a, keys in ARCH_OPTIONS.items() if key in keys)
            problems.append(
                f"model.{key}={value!r} is an option of {owners}, not of {arch} "
                f"(leave it at {absent!r})"
            )
    if model.test_feature not in ARCH_FEATURES[arch]:
        offered = ", ".join(repr(f) for f in ARCH_FEATURES[arch])
        problems.append(
            f"model.test_feature={model.test_feature!r} is not a feature of {arch} (it offers "
            f"{offered})"
        )
    if arch == "agw" and model.non_local and model.depth == 18:
        problems.append(
            "model.non_local=true needs ResNet depth 34, 50 or 101 (the blocks follow the last "
            "3 blocks of layer3, which has 2 at depth 18); set model.non_local=false or "
            "model.depth=50"
        )
    if loss is not None and arch != "df2am" and loss.use_df2:
        problems.append(
            f"loss.use_df2=true needs the DF² module, which {arch} does not have (set it false)"
        )
    return problems


# ------------------------------------------------------------------------- numeric rules

#: A rule: the value → ``None`` when it is valid, else what is wrong ("must be >= 1, got 0"),
#: printed after the key.
Rule = Callable[[Any], "str | None"]


def _at_least(low: int | float) -> Rule:
    def rule(v: Any) -> str | None:
        return None if v >= low else f"must be >= {low:g}, got {v}"
    return rule


def _above(low: float) -> Rule:
    def rule(v: Any) -> str | None:
        return None if v > low else f"must be > {low:g}, got {v}"
    return rule


def _int_range(low: int, high: int) -> Rule:
    def rule(v: Any) -> str | None:
        return None if low <= v <= high else f"must be in {low}..{high}, got {v}"
    return rule


def _interval(low: float, high: float, *, open_high: bool = False, what: str = "") -> Rule:
    shown = f"[{low:g}, {high:g}{')' if open_high else ']'}"

    def rule(v: Any) -> str | None:
        ok = low <= v < high if open_high else low <= v <= high
        return None if ok else f"{what}expected a value in {shown}, got {v}"
    return rule


_PROBABILITY = _interval(0.0, 1.0, what="is a probability: ")


def _milestones(v: list[int]) -> str | None:
    bad = [m for m in v if m < 1]
    if bad:
        return f"must be epochs >= 1, got {v}"
    if any(b <= a for a, b in zip(v, v[1:], strict=False)):
        return f"must be ascending (each epoch once), got {v}"
    return None


#: Range of every numeric field, ``section.key`` → rule (``None``: checked against the dataset
#: by ``Config._validate_dataset``). Fields typed ``Literal`` are checked by their choices.
#: A test keeps this table complete: a new int/float field needs a rule here.
NUMERIC_RULES: dict[str, Rule | None] = {
    "model.num_parts": _at_least(1),
    "model.specific_stages": _int_range(0, 2),
    "model.width": _at_least(8),
    "loss.affinity_margin": _at_least(0.0),
    "loss.affinity_delta": _at_least(0.0),
    "loss.lambda_df2": _at_least(0.0),
    "loss.zeta_affinity": _at_least(0.0),
    "loss.triplet_margin": _at_least(0.0),
    "loss.label_smoothing": _interval(0.0, 1.0, open_high=True),
    "loss.center_weight": _at_least(0.0),
    "loss.center_temperature": _above(0.0),
    "data.trial": None,
    "data.height": _at_least(1),
    "data.width": _at_least(1),
    "data.pad": _at_least(0),
    "data.flip_prob": _PROBABILITY,
    "data.random_erasing": _PROBABILITY,
    "data.channel_aug_prob": _PROBABILITY,
    "data.tone_aug_prob": _PROBABILITY,
    "data.tone_knots": _at_least(2),
    "data.num_workers": _at_least(0),
    "sampler.num_ids": _at_least(1),
    "sampler.num_per_modality": _at_least(1),
    "optim.lr": _above(0.0),
    "optim.momentum": _interval(0.0, 1.0, open_high=True),
    "optim.weight_decay": _at_least(0.0),
    "optim.backbone_lr_mult": _at_least(0.0),
    "optim.warmup_epochs": _at_least(0),
    "optim.milestones": _milestones,
    "optim.gamma": _above(0.0),
    "train.epochs": _at_least(1),
    "train.seed": _at_least(0),
    "train.max_iters_per_epoch": _at_least(0),
    "train.checkpoint_every": _at_least(1),
    "train.log_every": _at_least(1),
    "train.eval_every": _at_least(0),
    "train.val_ids": _at_least(0),
    "train.divergence_factor": _at_least(0),
    "eval.trials": _int_range(1, 10),
    "eval.batch_size": _at_least(1),
    "eval.max_rank": _at_least(1),
    "eval.rerank_k1": _at_least(1),
    "eval.rerank_k2": _at_least(1),
    "eval.rerank_lambda": _interval(0.0, 1.0, what="is a weight: "),
}


# --------------------------------------------------------------------------- conversion

#: A decimal number in any usual spelling: 1, -2, 0.5, .5, 5., 1e-4, 5E-4, +1.5e+3.
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted where lossless."""
    where = f" in {source}" if source else ""
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices or type(value) is not type(choices[0]):
            raise ConfigError(f"{key}{where}: expected one of {list(choices)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(get_args(tp)):
            return None
        return _coerce(value, args[0], key, source)
    if origin is list:
        (item_tp,) = get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}{where}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            hint = ""
            if isinstance(value, float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
                hint = " (an integer field takes a plain integer such as 1000, not 1e3 or 10.0)"
            raise ConfigError(f"{key}{where}: expected an integer, got {value!r}{hint}")
        return value
    if tp is float:
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            # PyYAML (YAML 1.1) reads 1e-4 and 5E-4 (no dot in the mantissa) as strings.
            value = float(value.strip())
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}{where}: expected a number (e.g. 0.1 or 1e-4), got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} for {key}")  # a bug, not user input


def _fill(obj: Any, data: dict[str, Any], prefix: str, source: str) -> None:
    if not isinstance(data, dict):
        where = f" in {source}" if source else ""
        raise ConfigError(f"{prefix or 'config'}{where}: expected a mapping")
    hints = get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(
                f"unknown config key '{full}'{' in ' + source if source else ''}; "
                f"known keys here: {', '.join(sorted(names))}"
            )
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _fill(current, value, f"{full}.", source)
        else:
            setattr(obj, key, _coerce(value, hints[key], full, source))


def config_from_dict(data: dict[str, Any], source: str = "") -> Config:
    """Build a validated :class:`Config` from a nested dict (defaults for missing keys)."""
    cfg = Config()
    _fill(cfg, data or {}, "", source)
    cfg.validate()
    return cfg


def complete_config_dict(data: dict[str, Any], source: str = "") -> dict[str, Any]:
    """A saved config mapping with every key of today's :class:`Config`: keys added since it was
    written take their defaults (which reproduce the behaviour it ran with); unknown keys are
    a :class:`ConfigError` naming ``source``."""
    return config_to_dict(config_from_dict(data, source=source))


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain nested dicts/lists, ready for YAML or JSON."""
    return dataclasses.asdict(cfg)


def flatten(nested: Mapping[str, Any], sep: str = ".", prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` → ``{"optim.lr": 0.1}`` (the dotted keys of overrides; the
    metrics log uses ``sep="/"`` for TensorBoard tags). The one flattener of nested dicts."""
    out: dict[str, Any] = {}
    for key, value in nested.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, sep, f"{prefix}{key}{sep}"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. optim.lr=0.05")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = _load_yaml(raw) if raw.strip() else ""
    except _DuplicateKeyError as exc:
        raise ConfigError(f"override {key}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {key}: cannot parse value {raw!r}: {exc}") from None
    return key, value


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` overrides (values parsed as YAML) and re-validate.

    Overrides apply left to right; a key given twice is not an error, the later value wins
    (as on any command line; sweeps append a run's overrides after the spec's on purpose).
    """
    for text in overrides:
        key, value = _parse_override(text)
        nested: Any = value
        for part in reversed(key.split(".")):
            nested = {part: nested}
        _fill(cfg, nested, "", "command-line override")
    cfg.validate()
    return cfg


class _DuplicateKeyError(yaml.YAMLError):
    """A key given twice in one YAML mapping."""


def _check_duplicates(node: yaml.Node, prefix: str = "") -> None:
    """Raise :class:`_DuplicateKeyError` for a key given twice in any mapping under ``node``."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<': explicit keys may override
                _check_duplicates(value_node, prefix)
                continue
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            line = key_node.start_mark.line + 1
            full = f"{prefix}{key}"
            if key is not None:
                if key in seen:
                    raise _DuplicateKeyError(
                        f"duplicated key '{full}' at lines {seen[key]} and {line}: give each "
                        "key once (a repeated key would silently replace the first)"
                    )
                seen[key] = line
            _check_duplicates(value_node, f"{full}.")
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicates(item, f"{prefix[:-1]}[{i}]." if prefix else f"[{i}].")


def _load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicated keys (at any depth) instead of keeping the
    last one."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_duplicates(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_yaml_file(path: str | Path) -> Any:
    """The YAML document of ``path`` (``{}`` when empty); a :class:`ConfigError` naming the
    file when it is missing, a directory, unreadable, not UTF-8 (with the byte offset), not
    valid YAML (with the line) or holds a key twice (with both lines)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p} is a directory: expected a YAML config file")
    if not p.exists():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the config file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        start = exc.start + (3 if raw.startswith(b"\xef\xbb\xbf") else 0)
        line = raw.count(b"\n", 0, start) + 1
        raise ConfigError(
            f"{p}: not UTF-8 text: byte 0x{raw[start]:02x} at offset {start} (line {line}) "
            f"cannot be decoded ({exc.reason}); save the file as UTF-8"
        ) from None
    try:
        data = _load_yaml(text)
    except _DuplicateKeyError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        detail = f"{problem} ({context})" if context else problem
        raise ConfigError(f"{p}{where}: not valid YAML: {detail}") from None
    return {} if data is None else data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or start from defaults when ``path`` is None) and apply overrides.

    An empty config file (nothing, only comments, or ``{}``) is an error: a file that says
    nothing is a wrong or unsaved file far more often than a wish for the defaults, and
    training them silently would waste the run.
    """
    data: dict[str, Any] = {}
    source = ""
    if path is not None:
        p = Path(path)
        data = read_yaml_file(p)
        source = str(p)
        if data == {}:  # an empty file, only comments, or "{}"
            raise ConfigError(
                f"{p}: the config file is empty (no settings, or only comments): it would "
                "silently train the built-in defaults; give the recipe you mean (e.g. "
                "configs/sysu.yaml) or at least one key")
    cfg = Config()
    _fill(cfg, data, "", source)
    return apply_overrides(cfg, overrides or [])


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically: temp file + rename)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    tmp.replace(p)
