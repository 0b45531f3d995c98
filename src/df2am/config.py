"""Typed configuration: dataclasses loaded from YAML, with ``key=value`` overrides.

Every setting of a run lives in one :class:`Config`. A YAML file gives any subset of the keys
(nested by section); overrides from the command line use dotted keys::

    from df2am.config import load_config
    cfg = load_config("configs/sysu.yaml", ["optim.lr=0.05", "model.num_parts=3"])
    cfg.model.num_parts  # -> 3

Unknown keys, values of the wrong type and values outside a field's allowed choices raise
:class:`~df2am.errors.ConfigError` naming the key (and the file it came from), so a typo can
never be silently ignored. :func:`save_config` writes the resolved config of a run, which
:func:`load_config` reads back unchanged.
"""

from __future__ import annotations

import dataclasses
import types
import typing
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
]


@dataclass
class ModelConfig:
    """The two-stream network and its DF² module (method.md, "Network")."""

    depth: Literal[18, 34, 50, 101] = 50
    #: "none", "imagenet" (torchvision weights API; downloads only when asked) or a path to a
    #: torchvision-format ResNet state dict.
    pretrained: str = "none"
    last_stride: Literal[1, 2] = 1
    #: Build the DF² module (part pooling + attention + fused head). Off for the Table 3 baseline.
    df2_module: bool = True
    num_parts: int = 4
    #: "strict": P must divide the feature height H (equal strips); "adaptive": PyTorch's
    #: adaptive pooling bins (rows floor(pH/P) .. ceil((p+1)H/P) - 1, may overlap), any P.
    part_pooling: Literal["strict", "adaptive"] = "strict"
    #: "part": ω_p from f^p alone (Sec. 3.3, default); "part_global": from [f^p; f^g];
    #: "global_vector": one learned ω ∈ R^P shared by all images.
    part_attention: Literal["part", "part_global", "global_vector"] = "part"
    #: ResNet stages after the stem that are modality-specific (0: only the stems; 1: + layer1;
    #: 2: + layer1 and layer2). The rest of layer1–layer4 is shared.
    specific_stages: int = 0
    #: Test feature: "fused" (BN(f̃), default), "global" (f^g) or "bn_global" (BN(f^g)).
    test_feature: Literal["fused", "global", "bn_global"] = "fused"
    #: Average the features of the image and its horizontal flip at test time.
    flip_test: bool = False


@dataclass
class LossConfig:
    """Switches and weights of Eq. 4, L = L_B + λ·L_D + ζ·L_A (method.md, "Losses")."""

    use_baseline: bool = True  # L_B = L_ID + L_BH per modality
    use_df2: bool = True  # L_D (needs model.df2_module)
    use_affinity: bool = True  # L_A (or its L1 variant)
    affinity_type: Literal["margin", "l1"] = "margin"  # Eq. 12 | Eq. 11
    affinity_margin: float = 0.5  # m of Eq. 12
    affinity_delta: float = 1.0  # δ of Eq. 11
    lambda_df2: float = 1.1  # λ
    zeta_affinity: float = 1.5  # ζ
    #: How L_A's B² pair terms are reduced: "pairs" (mean), "row" (Σ_j, mean over anchors) or
    #: "sum" (Eq. 12 as printed). See docs/method.md for what ζ means with each.
    affinity_reduction: Literal["pairs", "row", "sum"] = "pairs"
    #: Feature L_A is computed on: "global" (f^g, §3.4) or "bn_global" (BN(f^g), centred).
    affinity_feature: Literal["global", "bn_global"] = "global"
    #: Feature the batch-hard triplet is computed on: "global" (f^g) or "bn_global" (BN(f^g)).
    triplet_feature: Literal["global", "bn_global"] = "global"
    triplet_margin: float = 0.3
    #: "per_modality": L_BH^RGB + L_BH^IR (the paper); "joint": one triplet over all 2K* samples.
    #: "cross": one triplet whose positives and negatives are mined in the other modality only.
    triplet_mode: Literal["per_modality", "joint", "cross"] = "per_modality"
    label_smoothing: float = 0.0


@dataclass
class DataConfig:
    """Training data: which dataset, where, and the transforms of method.md."""

    #: A name of df2am.data.datasets.DATASETS ("sysu", "regdb", "llcm").
    dataset: str = "sysu"
    root: str = ""
    #: Training trial of datasets with one model per trial (RegDB: 1..10); ignored otherwise.
    trial: int = 1
    height: int = 256
    width: int = 128
    pad: int = 10
    flip_prob: float = 0.5
    random_erasing: float = 0.0  # probability; 0 = off
    channel_aug: bool = False  # random channel swap / gray for RGB images
    #: Share of RGB images that channel augmentation replaces by one channel or the luminance.
    channel_aug_prob: float = 0.5
    num_workers: int = 2
    #: Decoded, resized uint8 images are cached here ("" = <run dir>/cache). "none" disables.
    cache_dir: str = ""


@dataclass
class SamplerConfig:
    """Identity-balanced sampling: N* ids × (M* RGB + M* IR) per batch."""

    num_ids: int = 8  # N*
    num_per_modality: int = 4  # M*


@dataclass
class OptimConfig:
    """SGD recipe of §4.1 with the warm-up and backbone learning-rate multiplier of AGW/DDAG."""

    #: "sgd" (the paper's), or "adam" / "adamw" (β = (momentum, 0.999); no Nesterov).
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    #: Learning-rate multiplier of the (pretrained) backbone relative to the new layers.
    backbone_lr_mult: float = 0.1
    warmup_epochs: int = 10
    milestones: list[int] = field(default_factory=lambda: [30, 50])
    gamma: float = 0.1


@dataclass
class TrainConfig:
    """How the training job runs."""

    epochs: int = 80
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = True
    #: Cap on iterations per epoch (0 = the full epoch of method.md); for smoke runs and demos.
    max_iters_per_epoch: int = 0
    checkpoint_every: int = 10
    log_every: int = 20
    #: Evaluate on the validation split every N epochs (0 = never).
    eval_every: int = 0
    #: Identities carved from the training ids for model selection (0 = report the last epoch).
    val_ids: int = 0
    deterministic: bool = False
    #: Evaluate the reported model on the test protocol (``cfg.eval``) at the end of training.
    final_eval: bool = True


@dataclass
class EvalConfig:
    """Test protocol (protocols.md)."""

    mode: Literal["all", "indoor"] = "all"
    sampler: Literal["seeded", "official"] = "seeded"
    shots: Literal[1, 10] = 1
    trials: int = 10
    #: SYSU official split file; "" = <root>/exp/rand_perm_cam.mat.
    split_file: str = ""
    #: Query→gallery direction of the dataset (RegDB "v2t" | "t2v"; LLCM "i2v" | "v2i" |
    #: "v2i_transposed"); SYSU-MM01 has none and ignores it.
    direction: str = "v2t"
    metric: Literal["cosine", "euclidean"] = "cosine"
    batch_size: int = 128
    max_rank: int = 20
    #: k-reciprocal re-ranking (Zhong et al., CVPR 2017) of each trial's query + gallery.
    rerank: bool = False
    rerank_k1: int = 20
    rerank_k2: int = 6
    rerank_lambda: float = 0.3

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
        """Cross-field checks that single-field typing cannot express."""
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
        if self.model.num_parts < 1:
            raise ConfigError(f"model.num_parts must be >= 1, got {self.model.num_parts}")
        if not 0 <= self.model.specific_stages <= 2:
            raise ConfigError(
                f"model.specific_stages must be in 0..2, got {self.model.specific_stages}"
            )
        if self.sampler.num_ids < 1 or self.sampler.num_per_modality < 1:
            raise ConfigError("sampler.num_ids and sampler.num_per_modality must be >= 1")
        if not 1 <= self.data.trial <= 10:
            raise ConfigError(f"data.trial must be in 1..10, got {self.data.trial}")
        if self.train.epochs < 1:
            raise ConfigError(f"train.epochs must be >= 1, got {self.train.epochs}")
        for key in ("checkpoint_every", "log_every"):
            if getattr(self.train, key) < 1:
                raise ConfigError(f"train.{key} must be >= 1, got {getattr(self.train, key)}")
        for key in ("eval_every", "val_ids", "max_iters_per_epoch"):
            if getattr(self.train, key) < 0:
                raise ConfigError(f"train.{key} must be >= 0, got {getattr(self.train, key)}")
        if self.data.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {self.data.num_workers}")
        for key in ("flip_prob", "random_erasing", "channel_aug_prob"):
            if not 0.0 <= getattr(self.data, key) <= 1.0:
                raise ConfigError(
                    f"data.{key} is a probability: expected a value in [0, 1], got "
                    f"{getattr(self.data, key)}"
                )
        if sorted(self.optim.milestones) != list(self.optim.milestones):
            raise ConfigError(f"optim.milestones must be ascending, got {self.optim.milestones}")
        if self.eval.trials < 1 or self.eval.trials > 10:
            raise ConfigError(f"eval.trials must be in 1..10, got {self.eval.trials}")
        self.eval.check_rerank()
        self._validate_dataset()

    def _validate_dataset(self) -> None:
        """The dataset exists and the protocol options are valid for it."""
        # Imported here: df2am.data imports this module (the loaders take DataConfig).
        from df2am.data.datasets import get_dataset

        ds = get_dataset(self.data.dataset, "data.dataset")
        if "direction" in ds.option_choices:
            ds.resolve_options(direction=self.eval.direction)


# --------------------------------------------------------------------------- conversion


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
            raise ConfigError(f"{key}{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}{where}: expected a number, got {value!r}")
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


def _parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. optim.lr=0.05")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {key}: cannot parse value {raw!r}: {exc}") from None
    return key, value


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` overrides (values parsed as YAML) and re-validate."""
    for text in overrides:
        key, value = _parse_override(text)
        nested: Any = value
        for part in reversed(key.split(".")):
            nested = {part: nested}
        _fill(cfg, nested, "", "command-line override")
    cfg.validate()
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or start from defaults when ``path`` is None) and apply overrides."""
    data: dict[str, Any] = {}
    source = ""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from None
        source = str(p)
    cfg = Config()
    _fill(cfg, data, "", source)
    return apply_overrides(cfg, overrides or [])


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically: temp file + rename)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    tmp.replace(p)
