"""Architectures by name: one dict of builders, the protocol every network offers, and config
validation of options that belong to another architecture (each error names the key)."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import torch

from df2am.config import (
    ARCH_FEATURES,
    ARCH_OPTIONS,
    ModelConfig,
    arch_problems,
    config_to_dict,
    load_config,
)
from df2am.errors import ConfigError
from df2am.models import ARCHITECTURES, AGWNet, DF2AMNet, ModelOutput, ReIDNet, build_model

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

TINY = {
    "df2am": ModelConfig(depth=18, num_parts=2),
    "baseline": ModelConfig(arch="baseline", depth=18, df2_module=False,
                            test_feature="bn_global"),
    "agw": ModelConfig(arch="agw", depth=18, pooling="gem", df2_module=False,
                       test_feature="bn_global"),
}


def test_the_tables_name_the_same_architectures() -> None:
    names = set(typing.get_args(typing.get_type_hints(ModelConfig)["arch"]))
    assert names == set(ARCHITECTURES) == set(ARCH_OPTIONS) == set(ARCH_FEATURES) == set(TINY)
    assert ModelConfig().arch == "df2am"


@pytest.mark.parametrize("arch", sorted(TINY))
def test_every_architecture_offers_the_protocol(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(TINY[arch], num_classes=6)
    assert isinstance(model, ReIDNet) and model.arch == arch
    assert model.feature_kinds == ARCH_FEATURES[arch] and model.cfg is TINY[arch]
    assert model.num_classes == 6 and model.feat_dim == 512
    rgb, ir = torch.randn(2, 3, 64, 32), torch.randn(3, 3, 64, 32)
    out = model(rgb, ir)
    assert isinstance(out, ModelOutput) and out.num_rgb == 2
    assert out.global_feat.shape == out.bn_feat.shape == (5, 512)
    assert out.logits.shape == (5, 6)
    for feature in model.feature_kinds:
        f = model.extract(ir, "ir", feature=feature, flip=True)
        assert f.shape == (3, 512)
        torch.testing.assert_close(f.norm(dim=1), torch.ones(3))
        assert model.test_features(ir, "ir", feature).shape == (3, 512)
    assert model.extract(rgb, "rgb").shape == (2, 512)  # cfg.test_feature
    weights = model.part_weights(rgb, "rgb")
    assert (weights is None) == (arch != "df2am")
    if weights is not None:
        assert weights.shape == (2, 2)
    names = [g["name"] for g in model.param_groups(0.1, 0.1, 5e-4)]
    assert names == ["backbone", "head"]
    with pytest.raises(ConfigError, match=r"model\.test_feature must be one of"):
        model.extract(rgb, "rgb", feature="parts")
    with pytest.raises(ValueError, match="modality"):
        model.extract(rgb, "thermal")


def test_baseline_is_the_df2am_class_without_the_module() -> None:
    base = build_model(TINY["baseline"], 6)
    plain = build_model(ModelConfig(depth=18, df2_module=False, test_feature="bn_global"), 6)
    assert type(base) is DF2AMNet and base.df2 is None
    assert list(base.state_dict()) == list(plain.state_dict())
    base.load_state_dict(plain.state_dict(), strict=True)
    with pytest.raises(ConfigError, match="fused"):
        base.extract(torch.randn(1, 3, 64, 32), "rgb", feature="fused")


def test_agw_is_its_own_class() -> None:
    assert type(build_model(TINY["agw"], 6)) is AGWNet


@pytest.mark.parametrize(
    ("overrides", "messages"),
    [
        # A bare arch switch on the DF²AM defaults names every key to change, in one message.
        (["model.arch=agw"],
         [r"model\.df2_module=True is an option of df2am, not of agw \(leave it at False\)",
          r"model\.test_feature='fused' is not a feature of agw \(it offers 'bn_global', "
          r"'global'\)",
          r"loss\.use_df2=true needs the DF² module, which agw does not have"]),
        (["model.non_local=true"], [r"model\.non_local=True is an option of agw, not of df2am"]),
        (["model.pooling=gem"], [r"model\.pooling='gem' is an option of agw, not of df2am"]),
        (["model.arch=baseline", "model.df2_module=false", "model.test_feature=bn_global",
          "loss.use_df2=false", "model.num_parts=3"],
         [r"model\.num_parts=3 is an option of df2am, not of baseline \(leave it at 4\)"]),
        (["model.arch=baseline", "model.df2_module=false", "loss.use_df2=false"],
         [r"model\.test_feature='fused' is not a feature of baseline"]),
        (["model.arch=agw", "model.df2_module=false", "model.test_feature=bn_global",
          "loss.use_df2=false", "model.specific_stages=1"],
         [r"model\.specific_stages=1 is an option of df2am, baseline, not of agw"]),
        (["model.arch=agw", "model.df2_module=false", "model.test_feature=bn_global",
          "loss.use_df2=false", "model.depth=18", "model.non_local=true"],
         [r"model\.non_local=true needs ResNet depth 34, 50 or 101"]),
        (["model.arch=resnet"], [r"model\.arch.*expected one of \['df2am', 'baseline', 'agw'\]"]),
    ],
)
def test_options_of_another_architecture_are_errors_naming_the_key(overrides, messages) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    for message in messages:
        assert __import__("re").search(message, str(err.value)), (message, str(err.value))


def test_build_model_checks_the_same_rules() -> None:
    cfg = ModelConfig(arch="agw", test_feature="bn_global")  # df2_module left at true
    assert arch_problems(cfg) == [
        "model.df2_module=True is an option of df2am, not of agw (leave it at False)"
    ]
    with pytest.raises(ConfigError, match=r"model\.arch=agw: model\.df2_module=True"):
        build_model(cfg, 3)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["loss.triplet_type=wrt", "loss.triplet_margin=0.5"],
         r"loss\.triplet_margin=0\.5 does not apply to loss\.triplet_type=wrt"),
        (["data.erasing_mode=caj"], r"data\.erasing_mode=caj has no effect with "
                                    r"data\.random_erasing=0"),
        (["data.rgb_exchange_copy=true", "data.channel_aug=true"],
         r"data\.rgb_exchange_copy=true and data\.channel_aug=true: choose one"),
        (["loss.triplet_type=cosine"], r"loss\.triplet_type.*expected one of \['hard', 'wrt', "
                                       r"'adp'\]"),
        (["loss.id_mode=both"], r"loss\.id_mode.*expected one of"),
    ],
)
def test_recipe_switches_that_do_not_fit_are_errors(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_old_configs_complete_to_df2am() -> None:
    """A run config written before model.arch existed means today's DF²AM network."""
    from df2am.config import complete_config_dict

    old = config_to_dict(load_config(CONFIGS / "sysu.yaml"))
    for key in ("arch", "non_local", "pooling"):
        del old["model"][key]
    for key in ("triplet_type", "id_mode"):
        del old["loss"][key]
    for key in ("erasing_mode", "rgb_exchange_copy", "ir_channel_gray"):
        del old["data"][key]
    done = complete_config_dict(old)
    assert done["model"]["arch"] == "df2am" and done["loss"]["triplet_type"] == "hard"
    assert done == config_to_dict(load_config(CONFIGS / "sysu.yaml"))


@pytest.mark.parametrize("name", ["agw_sysu.yaml", "agw_regdb.yaml", "caj_sysu.yaml"])
def test_baseline_recipes_load(name: str) -> None:
    cfg = load_config(CONFIGS / name)
    assert cfg.model.arch == "agw" and cfg.model.non_local and cfg.model.pooling == "gem"
    assert cfg.model.test_feature == "bn_global"
    assert cfg.loss.id_mode == "joint" and cfg.loss.triplet_mode == "joint"
    assert not (cfg.loss.use_df2 or cfg.loss.use_affinity)
    assert (cfg.data.height, cfg.data.width) == (288, 144)
    assert cfg.optim.milestones == [20, 50] and cfg.optim.nesterov
    caj = name.startswith("caj")
    assert cfg.loss.triplet_type == ("adp" if caj else "wrt")
    assert cfg.data.rgb_exchange_copy is caj and cfg.data.ir_channel_gray is caj
    assert (cfg.data.random_erasing, cfg.data.erasing_mode) == (
        (0.5, "caj") if caj else (0.0, "torchvision"))
