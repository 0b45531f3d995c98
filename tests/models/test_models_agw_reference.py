"""Converting AGW reference checkpoints: every key mapped, reported as unused or an error naming
it; a ``module.`` prefix is accepted; layout facts are inferred; files are read weights-only."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from reference_agw import EmbedNet

from df2am.config import ModelConfig
from df2am.errors import CheckpointError
from df2am.models import build_model, convert_reference_state_dict, read_reference_checkpoint

NUM_CLASSES = 5


@pytest.fixture(scope="module")
def state_nl() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return EmbedNet(NUM_CLASSES, no_local="on").state_dict()


@pytest.fixture(scope="module")
def state_plain() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return EmbedNet(NUM_CLASSES, no_local="off").state_dict()


def test_every_key_is_mapped_or_reported(state_nl) -> None:
    converted, report = convert_reference_state_dict(state_nl)
    assert (report.depth, report.non_local, report.num_classes, report.feat_dim) == (
        50, True, NUM_CLASSES, 2048)
    assert report.stripped_prefix == "" and report.filled == []
    ignored = [k for keys in report.ignored.values() for k in keys]
    # Each reference key exactly once: mapped or ignored.
    assert sorted([*report.mapped.values(), *ignored]) == sorted(state_nl)
    assert report.num_ignored == len(ignored) == 630
    counts = {desc.split(" ")[0]: len(keys) for desc, keys in report.ignored.items()}
    assert counts == {"visible_module.visible.layer1-4/fc": 312,
                      "thermal_module.thermal.layer1-4/fc": 312,
                      "base_resnet.base.conv1/bn1/fc": 6}
    assert "visible_module.visible.layer3.2.conv1.weight" in ignored
    assert "base_resnet.base.bn1.running_var" in ignored
    summary = report.summary()
    assert "ignored 630 tensors" in summary and ": 312" in summary and ": 6" in summary
    # The mapping, spot-checked, and the values carried over.
    expected = {
        "backbone.stem_rgb.conv1.weight": "visible_module.visible.conv1.weight",
        "backbone.stem_ir.bn1.running_mean": "thermal_module.thermal.bn1.running_mean",
        "backbone.layer4.2.conv3.weight": "base_resnet.base.layer4.2.conv3.weight",
        "backbone.non_local.layer3.2.g.weight": "NL_3.2.g.0.weight",
        "backbone.non_local.layer2.1.out_bn.weight": "NL_2.1.W.1.weight",
        "backbone.non_local.layer2.0.out_conv.bias": "NL_2.0.W.0.bias",
        "bnneck.running_var": "bottleneck.running_var",
    }
    for ours, theirs in expected.items():
        assert report.mapped[ours] == theirs
    assert converted["classifier.weight"] is state_nl["classifier.weight"]
    # It loads strictly into the network the report describes.
    model = build_model(ModelConfig(**report.model_options()), report.num_classes)
    model.load_state_dict(converted, strict=True)
    assert model.cfg.pooling == "gem" and model.cfg.non_local


def test_without_non_local_blocks_and_the_pooling_override(state_plain) -> None:
    converted, report = convert_reference_state_dict(state_plain)
    assert report.non_local is False
    assert not any("non_local" in k for k in converted)
    assert report.model_options()["pooling"] == "avg"  # the reference's method=base
    options = report.model_options(pooling="gem")
    assert options["pooling"] == "gem" and options["non_local"] is False
    build_model(ModelConfig(**options), report.num_classes).load_state_dict(converted)


def test_data_parallel_prefix_is_accepted(state_nl) -> None:
    plain, _ = convert_reference_state_dict(state_nl)
    prefixed, report = convert_reference_state_dict({f"module.{k}": v for k, v in state_nl.items()})
    assert report.stripped_prefix == "module."
    assert list(prefixed) == list(plain)
    assert all(prefixed[k] is plain[k] for k in plain)
    assert "'module.' removed" in report.summary()


def test_mixed_prefix_is_an_error_naming_the_keys(state_nl) -> None:
    mixed = {f"module.{k}": v for k, v in state_nl.items()}
    mixed["classifier.weight"] = mixed.pop("module.classifier.weight")
    with pytest.raises(CheckpointError, match=r"Keys without it: classifier\.weight"):
        convert_reference_state_dict(mixed)


def test_missing_keys_are_named(state_nl) -> None:
    broken = dict(state_nl)
    del broken["NL_3.1.theta.weight"]
    del broken["base_resnet.base.layer2.0.downsample.1.bias"]
    with pytest.raises(CheckpointError) as err:
        convert_reference_state_dict(broken)
    msg = str(err.value)
    assert "2 key(s) missing" in msg
    assert "NL_3.1.theta.weight (for backbone.non_local.layer3.1.theta.weight)" in msg
    assert ("base_resnet.base.layer2.0.downsample.1.bias (for "
            "backbone.layer2.0.downsample.1.bias)") in msg


def test_extra_keys_are_named(state_nl) -> None:
    broken = dict(state_nl)
    broken["NL_3.3.phi.weight"] = torch.zeros(1, 1024, 1, 1)  # a 4th layer3 block
    broken["NL_4.0.g.0.weight"] = torch.zeros(1, 2048, 1, 1)  # a block the reference never has
    broken["projection.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as err:
        convert_reference_state_dict(broken)
    msg = str(err.value)
    assert "3 key(s) that the df2am agw network (ResNet-50, non-local on) has no place for" in msg
    for key in ("NL_3.3.phi.weight", "NL_4.0.g.0.weight", "projection.weight"):
        assert key in msg


def test_mis_shaped_keys_are_named_with_both_shapes(state_nl) -> None:
    broken = dict(state_nl)
    broken["NL_2.0.g.0.weight"] = torch.zeros(256, 512, 1, 1)  # inner width 256, not 1
    with pytest.raises(CheckpointError,
                       match=r"NL_2\.0\.g\.0\.weight \(256, 512, 1, 1\) \(df2am "
                             r"backbone\.non_local\.layer2\.0\.g\.weight \(1, 512, 1, 1\)\)"):
        convert_reference_state_dict(broken)


def test_unused_fc_is_ignored_and_missing_counters_are_filled(state_plain) -> None:
    state = {k: v for k, v in state_plain.items() if not k.endswith("num_batches_tracked")}
    state["visible_module.visible.fc.weight"] = torch.zeros(1000, 2048)
    state["base_resnet.base.fc.bias"] = torch.zeros(1000)
    converted, report = convert_reference_state_dict(state)
    ignored = [k for keys in report.ignored.values() for k in keys]
    assert "visible_module.visible.fc.weight" in ignored and "base_resnet.base.fc.bias" in ignored
    assert "backbone.stem_rgb.bn1.num_batches_tracked" in report.filled
    assert "bnneck.num_batches_tracked" in report.filled
    assert int(converted["bnneck.num_batches_tracked"]) == 0
    assert "filled" in report.summary()


def test_not_the_reference_layout() -> None:
    with pytest.raises(CheckpointError, match=r"missing key\(s\) classifier\.weight"):
        convert_reference_state_dict({"conv1.weight": torch.zeros(64, 3, 7, 7)})
    with pytest.raises(CheckpointError, match=r"not tensors: epoch"):
        convert_reference_state_dict({"epoch": 3})  # type: ignore[dict-item]


def test_depth_is_inferred_from_the_blocks() -> None:
    from df2am.models.agw_reference import _infer_depth

    def keys(blocks: list[int], bottleneck: bool) -> dict[str, torch.Tensor]:
        out = {}
        for s, n in enumerate(blocks, start=1):
            for i in range(n):
                out[f"base_resnet.base.layer{s}.{i}.conv1.weight"] = torch.zeros(1)
                if bottleneck:
                    out[f"base_resnet.base.layer{s}.{i}.conv3.weight"] = torch.zeros(1)
        return out

    assert _infer_depth(keys([3, 4, 23, 3], True)) == 101
    assert _infer_depth(keys([3, 4, 6, 3], False)) == 34
    assert _infer_depth(keys([2, 2, 2, 2], False)) == 18
    with pytest.raises(CheckpointError, match=r"blocks per stage: \[3, 4, 5, 3\]"):
        _infer_depth(keys([3, 4, 5, 3], True))


# --------------------------------------------------------------------------- files


def test_reference_file_with_numpy_metrics_is_read(tmp_path, state_plain) -> None:
    path = tmp_path / "sysu_agw_p4_n8_lr_0.1_seed_0_best.t"
    torch.save({"net": state_plain, "cmc": np.linspace(0, 1, 20), "mAP": np.float64(0.47),
                "mINP": np.float32(0.35), "epoch": 40}, path)
    state, where = read_reference_checkpoint(path)
    assert where == "net" and list(state) == list(state_plain)


def test_legacy_format_and_numpy1_module_names_are_read(tmp_path) -> None:
    path = tmp_path / "old.t"
    torch.save({"net": {"classifier.weight": torch.ones(2, 3)}, "cmc": np.zeros(3)}, path,
               _use_new_zipfile_serialization=False)
    # A file written under numpy 1 names numpy.core.multiarray, not numpy._core.
    path.write_bytes(path.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    state, where = read_reference_checkpoint(path)
    assert where == "net" and torch.equal(state["classifier.weight"], torch.ones(2, 3))
    bare = tmp_path / "bare.pth"
    torch.save({"classifier.weight": torch.ones(1)}, bare)
    assert read_reference_checkpoint(bare)[1] == ""


class _Payload:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.makedirs, (self.target,))


def test_a_pickle_that_runs_code_is_refused(tmp_path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.t"
    with open(path, "wb") as fh:
        pickle.dump({"net": {"w": torch.ones(1)}, "x": _Payload(str(marker))}, fh, protocol=2)
    torch.save({"net": {"w": torch.ones(1)}, "x": _Payload(str(marker))}, tmp_path / "evil2.t")
    for p in (path, tmp_path / "evil2.t"):
        with pytest.raises(CheckpointError, match=r"refused or unreadable.*weights_only=True"):
            read_reference_checkpoint(p)
    assert not marker.exists()


def test_file_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(CheckpointError, match=r"nope\.t: no such file"):
        read_reference_checkpoint(tmp_path / "nope.t")
    path = tmp_path / "odd.t"
    torch.save({"epoch": 3, "cmc": [1, 2]}, path)
    with pytest.raises(CheckpointError, match=r"odd\.t: no state dict inside \(top-level keys: "
                                              r"epoch, cmc\)"):
        read_reference_checkpoint(path)
    torch.save([torch.ones(1)], path)
    with pytest.raises(CheckpointError, match=r"odd\.t: expected a dict, got list"):
        read_reference_checkpoint(path)
