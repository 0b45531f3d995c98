"""Validation before work starts (config.py): numeric ranges, YAML spellings of numbers,
duplicated keys, unreadable files and options that do not apply to the dataset."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from df2am.config import NUMERIC_RULES, Config, complete_config_dict, config_to_dict, load_config
from df2am.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# One hand-written bad value per rule of NUMERIC_RULES, with the message expected.
BAD_VALUES = [
    ("model.num_parts=0", r"model\.num_parts must be >= 1, got 0"),
    ("model.specific_stages=3", r"model\.specific_stages must be in 0\.\.2, got 3"),
    ("model.width=4", r"model\.width must be >= 8, got 4"),
    ("loss.affinity_margin=-0.1", r"loss\.affinity_margin must be >= 0, got -0\.1"),
    ("loss.affinity_delta=-1", r"loss\.affinity_delta must be >= 0, got -1"),
    ("loss.lambda_df2=-1.1", r"loss\.lambda_df2 must be >= 0"),
    ("loss.zeta_affinity=-2", r"loss\.zeta_affinity must be >= 0"),
    ("loss.triplet_margin=-0.3", r"loss\.triplet_margin must be >= 0"),
    ("loss.label_smoothing=1.0", r"loss\.label_smoothing expected a value in \[0, 1\), got 1\.0"),
    ("loss.center_weight=-1", r"loss\.center_weight must be >= 0, got -1"),
    ("loss.center_temperature=0", r"loss\.center_temperature must be > 0, got 0"),
    ("data.height=0", r"data\.height must be >= 1, got 0"),
    ("data.width=-128", r"data\.width must be >= 1, got -128"),
    ("data.pad=-1", r"data\.pad must be >= 0, got -1"),
    ("data.flip_prob=1.5", r"data\.flip_prob is a probability: expected a value in \[0, 1\]"),
    ("data.random_erasing=-0.1", r"data\.random_erasing is a probability"),
    ("data.channel_aug_prob=2", r"data\.channel_aug_prob is a probability.*got 2\.0"),
    ("data.tone_aug_prob=1.5", r"data\.tone_aug_prob is a probability.*got 1\.5"),
    ("data.tone_knots=1", r"data\.tone_knots must be >= 2, got 1"),
    ("data.num_workers=-2", r"data\.num_workers must be >= 0, got -2"),
    ("sampler.num_ids=0", r"sampler\.num_ids must be >= 1, got 0"),
    ("sampler.num_per_modality=-4", r"sampler\.num_per_modality must be >= 1, got -4"),
    ("optim.lr=0", r"optim\.lr must be > 0, got 0\.0"),
    ("optim.momentum=-0.9", r"optim\.momentum expected a value in \[0, 1\), got -0\.9"),
    ("optim.weight_decay=-5e-4", r"optim\.weight_decay must be >= 0, got -0\.0005"),
    ("optim.backbone_lr_mult=-0.1", r"optim\.backbone_lr_mult must be >= 0"),
    ("optim.warmup_epochs=-1", r"optim\.warmup_epochs must be >= 0, got -1"),
    ("optim.milestones=[50, 30]", r"optim\.milestones must be ascending.*\[50, 30\]"),
    ("optim.gamma=0", r"optim\.gamma must be > 0, got 0\.0"),
    ("train.epochs=0", r"train\.epochs must be >= 1, got 0"),
    ("train.seed=-1", r"train\.seed must be >= 0, got -1"),
    ("train.max_iters_per_epoch=-1", r"train\.max_iters_per_epoch must be >= 0"),
    ("train.checkpoint_every=0", r"train\.checkpoint_every must be >= 1"),
    ("train.log_every=0", r"train\.log_every must be >= 1"),
    ("train.eval_every=-1", r"train\.eval_every must be >= 0"),
    ("train.val_ids=-1", r"train\.val_ids must be >= 0"),
    ("train.divergence_factor=-2", r"train\.divergence_factor must be >= 0"),
    ("eval.trials=11", r"eval\.trials must be in 1\.\.10, got 11"),
    ("eval.batch_size=0", r"eval\.batch_size must be >= 1, got 0"),
    ("eval.max_rank=0", r"eval\.max_rank must be >= 1, got 0"),
    ("eval.rerank_k1=0", r"eval\.rerank_k1 must be >= 1, got 0"),
    ("eval.rerank_k2=0", r"eval\.rerank_k2 must be >= 1, got 0"),
    ("eval.rerank_lambda=1.5", r"eval\.rerank_lambda is a weight: expected a value in \[0, 1\]"),
]


@pytest.mark.parametrize(("override", "message"), BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_every_numeric_rule_rejects_a_bad_value_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_every_numeric_field_has_a_rule_and_a_test():
    numeric = set()
    for section in dataclasses.fields(Config):
        if not dataclasses.is_dataclass(section.default_factory):
            continue
        hints = typing.get_type_hints(section.default_factory)
        for f in dataclasses.fields(section.default_factory):
            if hints[f.name] in (int, float, list[int]):
                numeric.add(f"{section.name}.{f.name}")
    assert numeric == set(NUMERIC_RULES)
    tested = {o.split("=")[0] for o, _ in BAD_VALUES} | {"data.trial"}  # trial: dataset tests
    assert tested == set(NUMERIC_RULES)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.milestones=[0, 30]", r"optim\.milestones must be epochs >= 1"),
        ("optim.milestones=[30, 30]", r"optim\.milestones must be ascending"),
        ("optim.lr=.inf", r"optim\.lr.*expected a finite number"),
        ("optim.lr=.nan", r"optim\.lr.*expected a finite number"),
        ("optim.lr=fast", r"optim\.lr in command-line override: expected a number.*'fast'"),
        ("train.epochs=1e3", r"train\.epochs.*expected an integer, got '1e3'.*plain integer"),
        ("train.epochs=10.0", r"train\.epochs.*expected an integer, got 10\.0"),
        ("optim.milestones=[1e1]", r"optim\.milestones\[0\].*expected an integer"),
    ],
)
def test_more_bad_numbers(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_milestones_beyond_epochs_and_boundaries_are_valid():
    cfg = load_config(None, ["train.epochs=2", "optim.warmup_epochs=0", "data.pad=0",
                             "optim.momentum=0", "data.flip_prob=1", "optim.backbone_lr_mult=0"])
    assert cfg.optim.milestones == [30, 50] and cfg.train.epochs == 2
    assert load_config(None, ["train.epochs=1", "optim.milestones=[1]"]).optim.milestones == [1]
    assert load_config(None, ["optim.milestones=[]"]).optim.milestones == []


@pytest.mark.parametrize("spelling", ["1e-4", "1E-4", "0.0001", ".0001", "1.0e-4", '"1e-4"'])
def test_float_in_any_yaml_spelling(tmp_path, spelling):
    path = tmp_path / "c.yaml"
    path.write_text(f"optim:\n  lr: {spelling}\n  weight_decay: 5e-4\n")
    cfg = load_config(path)
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.weight_decay == 5e-4
    cfg = load_config(None, [f"optim.lr={spelling}", "loss.lambda_df2=1E3", "data.flip_prob=.5"])
    assert (cfg.optim.lr, cfg.loss.lambda_df2, cfg.data.flip_prob) == (1e-4, 1000.0, 0.5)


def test_not_a_number_in_a_file_names_key_and_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  weight_decay: 5e-4x\n")
    with pytest.raises(ConfigError, match=r"optim\.weight_decay in .*c\.yaml: expected a number"):
        load_config(path)


def test_duplicated_keys_name_key_and_both_lines(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("train:\n  epochs: 3\n  seed: 1\n  epochs: 5\n")
    with pytest.raises(ConfigError, match=r"dup\.yaml: duplicated key 'train\.epochs' at lines "
                                          r"2 and 4"):
        load_config(path)
    path.write_text("model:\n  depth: 18\noptim:\n  lr: 0.1\nmodel:\n  depth: 50\n")
    with pytest.raises(ConfigError, match=r"duplicated key 'model' at lines 1 and 5"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"override optim: duplicated key 'lr' at lines 1 and 1"):
        load_config(None, ["optim={lr: 0.1, lr: 0.2}"])


def test_yaml_merge_keys_may_be_overridden(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("model: &m\n  depth: 18\n  num_parts: 2\neval:\n  trials: 3\n"
                    "name: x\noutput_dir: runs\n")
    assert load_config(path).model.depth == 18
    path.write_text("optim:\n  <<: {lr: 0.1, gamma: 0.5}\n  lr: 0.2\n")
    cfg = load_config(path)
    assert (cfg.optim.lr, cfg.optim.gamma) == (0.2, 0.5)


def test_override_given_twice_later_wins():
    cfg = load_config(None, ["optim.lr=0.1", "optim.lr=0.05"])
    assert cfg.optim.lr == 0.05


def test_non_utf8_file_names_file_and_offset(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not UTF-8 text: byte 0xe9 at offset 9 "
                                          r"\(line 1\)"):
        load_config(path)
    path.write_bytes(b"\xef\xbb\xbfname: ok\n")  # a UTF-8 byte-order mark is fine
    assert load_config(path).name == "ok"


def test_missing_directory_and_syntax_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found: .*nope\.yaml"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"is a directory: expected a YAML config file"):
        load_config(tmp_path)
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: 3\n    seed: [1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml, line 3, column \d+: not valid YAML"):
        load_config(path)
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"config in .*bad\.yaml: expected a mapping"):
        load_config(path)


@pytest.mark.parametrize("dataset", ["regdb", "llcm"])
@pytest.mark.parametrize(
    "option", ["eval.mode=indoor", "eval.sampler=official", "eval.shots=10",
               "eval.split_file=x.mat"])
def test_sysu_only_options_are_errors_elsewhere(dataset, option):
    direction = "i2v" if dataset == "llcm" else "v2t"
    key = option.split("=")[0].replace(".", r"\.")
    with pytest.raises(ConfigError, match=rf"{key}=.* does not apply to .*leave {key} at its"):
        load_config(None, [f"data.dataset={dataset}", f"eval.direction={direction}", option])


def test_split_file_only_with_the_official_sampler():
    with pytest.raises(ConfigError, match=r"eval\.split_file='x\.mat' is the official "
                                          r"sampler's split, but eval\.sampler=seeded"):
        load_config(None, ["eval.split_file=x.mat"])
    cfg = load_config(None, ["eval.split_file=x.mat", "eval.sampler=official"])
    assert cfg.eval.split_file == "x.mat"


def test_data_trial_only_for_datasets_with_one_model_per_trial():
    for dataset, direction in (("sysu", "v2t"), ("llcm", "i2v")):
        with pytest.raises(ConfigError, match=r"data\.trial=3 does not apply to"):
            load_config(None, [f"data.dataset={dataset}", f"eval.direction={direction}",
                               "data.trial=3"])
    assert load_config(None, ["data.dataset=regdb", "data.trial=3"]).data.trial == 3
    for bad in (0, 11):
        with pytest.raises(ConfigError, match=rf"data\.trial must be in 1\.\.10 for RegDB.*{bad}"):
            load_config(None, ["data.dataset=regdb", f"data.trial={bad}"])


def test_direction_rules():
    with pytest.raises(ConfigError, match=r"eval\.direction: LLCM expects one of"):
        load_config(None, ["data.dataset=llcm", "eval.direction=t2v"])
    with pytest.raises(ConfigError, match=r"eval\.direction: RegDB expects one of"):
        load_config(None, ["data.dataset=regdb", "eval.direction=i2v"])
    assert load_config(None, ["data.dataset=sysu"]).eval.direction == "v2t"  # the default
    with pytest.raises(ConfigError, match=r"eval\.direction='t2v' does not apply to SYSU-MM01"):
        load_config(None, ["data.dataset=sysu", "eval.direction=t2v"])


def test_shipped_configs_keep_sysu_defaults_for_other_datasets():
    for name in ("regdb.yaml", "llcm.yaml"):
        cfg = load_config(CONFIGS / name)
        assert (cfg.eval.mode, cfg.eval.sampler, cfg.eval.shots, cfg.eval.split_file) == (
            "all", "seeded", 1, "")


def test_precision_auto_and_allow_slow_bf16_load():
    cfg = load_config(None, ["train.precision=auto"])
    assert cfg.train.precision == "auto" and cfg.train.allow_slow_bf16 is False
    assert load_config(None, ["train.allow_slow_bf16=true"]).train.allow_slow_bf16 is True


def test_old_run_config_without_new_keys_completes_with_defaults():
    old = config_to_dict(load_config(CONFIGS / "sysu.yaml"))
    del old["train"]["allow_slow_bf16"]
    completed = complete_config_dict(old)
    assert completed["train"]["allow_slow_bf16"] is False
    assert completed == config_to_dict(load_config(CONFIGS / "sysu.yaml"))


def test_narrow_network_refuses_pretrained_weights():
    with pytest.raises(ConfigError, match=r"model\.width=32 has no pretrained weights"):
        load_config(None, ["model.width=32", "model.pretrained=imagenet"])
    assert load_config(None, ["model.width=32"]).model.width == 32
