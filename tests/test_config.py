"""Configuration: typos and bad values fail naming the key; shipped configs load (config.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from df2am.cli import main
from df2am.config import config_to_dict, load_config, save_config
from df2am.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_typo_in_yaml_names_key_and_file(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.epoch' in .*typo\.yaml"):
        load_config(path)


def test_typo_and_bad_values_in_overrides_name_key():
    with pytest.raises(ConfigError, match=r"'optim\.lrr'"):
        load_config(None, ["optim.lrr=0.1"])
    with pytest.raises(ConfigError, match=r"train\.precision.*fp8"):
        load_config(None, ["train.precision=fp8"])
    with pytest.raises(ConfigError, match=r"train\.epochs.*integer"):
        load_config(None, ["train.epochs=ten"])
    with pytest.raises(ConfigError, match=r"train\.checkpoint_every must be >= 1"):
        load_config(None, ["train.checkpoint_every=0"])
    with pytest.raises(ConfigError, match=r"train\.val_ids must be >= 0"):
        load_config(None, ["train.val_ids=-1"])


def test_cli_train_typo_exits_2_naming_key(tmp_path, capsys):
    code = main(["train", str(CONFIGS / "sysu.yaml"), "optim.lrr=0.05", "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "optim.lrr" in err
    assert not (tmp_path / "config.yaml").exists()


def test_cli_train_needs_config_or_resume(capsys):
    assert main(["train", "optim.lr=0.1"]) == 2
    assert "give a CONFIG file" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["sysu.yaml", "regdb.yaml", "llcm.yaml", "demo.yaml"])
def test_shipped_configs_load_and_roundtrip(tmp_path, name):
    cfg = load_config(CONFIGS / name)
    save_config(cfg, tmp_path / "config.yaml")
    assert config_to_dict(load_config(tmp_path / "config.yaml")) == config_to_dict(cfg)


def test_paper_recipe_values():
    """configs/sysu.yaml and regdb.yaml hold the recipe of paper §4.1 / method.md."""
    for name, dataset in (("sysu.yaml", "sysu"), ("regdb.yaml", "regdb")):
        cfg = load_config(CONFIGS / name)
        assert cfg.data.dataset == dataset
        assert (cfg.model.depth, cfg.model.pretrained, cfg.model.last_stride) == (50, "imagenet", 1)
        assert cfg.model.num_parts == 4
        assert (cfg.loss.lambda_df2, cfg.loss.zeta_affinity) == (1.1, 1.5)
        assert (cfg.sampler.num_ids, cfg.sampler.num_per_modality) == (8, 4)
        assert (cfg.data.height, cfg.data.width) == (256, 128)
        o = cfg.optim
        assert (o.lr, o.momentum, o.weight_decay, o.milestones, o.gamma) == (
            0.1, 0.9, 5e-4, [30, 50], 0.1,
        )
        assert cfg.train.epochs == 80
        assert cfg.train.val_ids == 0  # the last epoch is reported, never chosen on the test set


def test_model_options_are_validated_naming_the_key():
    cfg = load_config(
        None,
        ["model.part_pooling=adaptive", "model.part_attention=global_vector",
         "model.specific_stages=2"],
    )
    assert (cfg.model.part_pooling, cfg.model.part_attention) == ("adaptive", "global_vector")
    assert cfg.model.specific_stages == 2
    defaults = load_config(None).model
    assert (defaults.part_pooling, defaults.part_attention, defaults.specific_stages) == (
        "strict", "part", 0
    )
    for bad in (3, -1):
        with pytest.raises(ConfigError, match=rf"model\.specific_stages must be in 0\.\.2.*{bad}"):
            load_config(None, [f"model.specific_stages={bad}"])
    with pytest.raises(ConfigError, match=r"model\.part_pooling.*overlap"):
        load_config(None, ["model.part_pooling=overlap"])
