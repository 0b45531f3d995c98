"""load_backbone_weights: torchvision key mapping, strictness and the offline error."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
from torchvision.models import ResNet18_Weights, resnet18

from df2am.config import ModelConfig
from df2am.errors import CheckpointError
from df2am.models import DF2AMNet, build_model, load_backbone_weights


@pytest.fixture(scope="module")
def tv_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(123)
    net = resnet18(weights=None)
    # Non-trivial BN statistics so the buffers are checked too.
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    return {k: v.clone() for k, v in net.state_dict().items()}


def _model() -> DF2AMNet:
    torch.manual_seed(0)
    return DF2AMNet(ModelConfig(depth=18), num_classes=4)


def _save(obj: object, tmp_path: Path, name: str = "resnet18.pth") -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


def test_copies_stem_into_both_streams_and_layers_into_trunk(
    tv_state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    model = _model()
    head_before = model.classifier.weight.detach().clone()
    load_backbone_weights(model, _save(tv_state, tmp_path))
    bb = model.backbone
    for stem in (bb.stem_rgb, bb.stem_ir):
        torch.testing.assert_close(
            stem.conv1.weight.detach(), tv_state["conv1.weight"], rtol=0, atol=0
        )
        torch.testing.assert_close(stem.bn1.weight.detach(), tv_state["bn1.weight"])
        torch.testing.assert_close(stem.bn1.running_mean, tv_state["bn1.running_mean"])
    torch.testing.assert_close(
        bb.layer1[0].conv1.weight.detach(), tv_state["layer1.0.conv1.weight"]
    )
    torch.testing.assert_close(
        bb.layer4[0].downsample[0].weight.detach(), tv_state["layer4.0.downsample.0.weight"]
    )
    torch.testing.assert_close(bb.layer3[1].bn2.running_var, tv_state["layer3.1.bn2.running_var"])
    # The two stems are separate parameters, not one shared tensor.
    assert bb.stem_rgb.conv1.weight is not bb.stem_ir.conv1.weight
    # New layers are untouched.
    torch.testing.assert_close(model.classifier.weight.detach(), head_before)


def test_build_model_applies_cfg_pretrained(
    tv_state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    path = _save(tv_state, tmp_path)
    model = build_model(ModelConfig(depth=18, pretrained=str(path)), num_classes=3)
    torch.testing.assert_close(
        model.backbone.stem_ir.conv1.weight.detach(), tv_state["conv1.weight"]
    )


def test_missing_key_is_named_with_the_file(
    tv_state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    state = dict(tv_state)
    del state["layer2.0.conv1.weight"]
    path = _save(state, tmp_path)
    with pytest.raises(CheckpointError, match=r"missing keys: layer2\.0\.conv1\.weight") as ei:
        load_backbone_weights(_model(), path)
    assert str(path) in str(ei.value)


def test_missing_num_batches_tracked_is_tolerated(
    tv_state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    state = {k: v for k, v in tv_state.items() if not k.endswith("num_batches_tracked")}
    model = _model()
    load_backbone_weights(model, _save(state, tmp_path))
    torch.testing.assert_close(
        model.backbone.layer2[0].conv1.weight.detach(), tv_state["layer2.0.conv1.weight"]
    )


def test_fc_skipped_but_other_unexpected_keys_error(
    tv_state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    assert "fc.weight" in tv_state  # the torchvision file carries the ImageNet classifier
    load_backbone_weights(_model(), _save(tv_state, tmp_path))  # no error
    state = {**tv_state, "extra.weight": torch.zeros(3)}
    with pytest.raises(CheckpointError, match=r"unexpected keys: extra\.weight"):
        load_backbone_weights(_model(), _save(state, tmp_path, "extra.pth"))


def test_shape_mismatch_names_the_key(tv_state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    state = {**tv_state, "bn1.weight": torch.ones(32)}
    with pytest.raises(CheckpointError, match=r"shape mismatch: bn1\.weight"):
        load_backbone_weights(_model(), _save(state, tmp_path))


def test_depth_mismatch_is_an_error(tv_state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    model = DF2AMNet(ModelConfig(depth=34), num_classes=4)
    with pytest.raises(CheckpointError, match=r"ResNet-34.*missing keys: layer1\.2"):
        load_backbone_weights(model, _save(tv_state, tmp_path))


def test_wrapped_state_dict(tv_state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    model = _model()
    load_backbone_weights(model, _save({"state_dict": tv_state, "epoch": 3}, tmp_path))
    torch.testing.assert_close(
        model.backbone.stem_rgb.conv1.weight.detach(), tv_state["conv1.weight"]
    )
    ambiguous = _save({"state_dict": tv_state, "model": tv_state, "epoch": 1}, tmp_path, "a.pth")
    with pytest.raises(CheckpointError, match="not a torchvision ResNet state dict"):
        load_backbone_weights(_model(), ambiguous)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such file"):
        load_backbone_weights(_model(), tmp_path / "nope.pth")


def test_none_keeps_initialisation() -> None:
    model = _model()
    before = model.backbone.stem_rgb.conv1.weight.detach().clone()
    load_backbone_weights(model, "none")
    torch.testing.assert_close(model.backbone.stem_rgb.conv1.weight.detach(), before)


@pytest.mark.parametrize(
    "exc",
    [
        urllib.error.URLError("no route to host"),
        OSError("network unreachable"),
        RuntimeError("invalid hash value"),
    ],
)
def test_failed_imagenet_download_points_to_a_local_file(
    monkeypatch: pytest.MonkeyPatch, exc: Exception
) -> None:
    def fail(self: object, *args: object, **kwargs: object) -> dict[str, torch.Tensor]:
        raise exc

    monkeypatch.setattr(ResNet18_Weights, "get_state_dict", fail)
    with pytest.raises(CheckpointError) as ei:
        load_backbone_weights(_model(), "imagenet")
    msg = str(ei.value)
    assert "download" in msg and "failed" in msg
    assert "model.pretrained=/path/to/resnet18-" in msg
    assert ResNet18_Weights.IMAGENET1K_V1.url in msg
    assert type(exc).__name__ in msg


def test_imagenet_uses_the_weights_api(
    monkeypatch: pytest.MonkeyPatch, tv_state: dict[str, torch.Tensor]
) -> None:
    calls: list[object] = []

    def fake(self: object, *args: object, **kwargs: object) -> dict[str, torch.Tensor]:
        calls.append(self)
        return dict(tv_state)

    monkeypatch.setattr(ResNet18_Weights, "get_state_dict", fake)
    model = _model()
    load_backbone_weights(model, "imagenet")
    assert calls == [ResNet18_Weights.IMAGENET1K_V1]
    torch.testing.assert_close(
        model.backbone.stem_ir.conv1.weight.detach(), tv_state["conv1.weight"]
    )


@pytest.mark.parametrize("stages", [1, 2])
def test_specific_stages_load_into_both_modality_copies(
    tv_state: dict[str, torch.Tensor], tmp_path: Path, stages: int
) -> None:
    torch.manual_seed(0)
    model = DF2AMNet(ModelConfig(depth=18, specific_stages=stages), num_classes=4)
    load_backbone_weights(model, _save(tv_state, tmp_path))  # strict: every key used, none missing
    bb = model.backbone
    specific = ("layer1", "layer2")[:stages]
    for name in specific:
        for stem in (bb.stem_rgb, bb.stem_ir):
            for key, value in getattr(stem, name).state_dict().items():
                torch.testing.assert_close(value, tv_state[f"{name}.{key}"], rtol=0, atol=0)
        assert getattr(bb.stem_rgb, name)[0].conv1.weight is not getattr(
            bb.stem_ir, name
        )[0].conv1.weight
    for name in bb.shared_stages:
        for key, value in getattr(bb, name).state_dict().items():
            torch.testing.assert_close(value, tv_state[f"{name}.{key}"], rtol=0, atol=0)
    for stem in (bb.stem_rgb, bb.stem_ir):
        torch.testing.assert_close(stem.conv1.weight.detach(), tv_state["conv1.weight"])
    # A key of a specific stage missing from the file is still named.
    state = dict(tv_state)
    del state[f"{specific[-1]}.0.conv1.weight"]
    with pytest.raises(CheckpointError, match=rf"missing keys: {specific[-1]}\.0\.conv1\.weight"):
        load_backbone_weights(model, _save(state, tmp_path, "missing.pth"))
