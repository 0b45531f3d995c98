"""DF2AMNet: shapes, gradients, memory format, test features and optimiser groups."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from df2am.config import ModelConfig
from df2am.errors import ConfigError, Df2amError
from df2am.models import DF2AMNet, ModelOutput, build_model

NUM_CLASSES = 6


def _model(**kw: object) -> DF2AMNet:
    torch.manual_seed(0)
    cfg = ModelConfig(**{"depth": 18, **kw})  # type: ignore[arg-type]
    return build_model(cfg, NUM_CLASSES)


def _images(n: int, h: int = 64, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("depth", "channels"), [(18, 512), (50, 2048)])
@pytest.mark.parametrize("num_parts", [4, 2])
def test_output_shapes(depth: int, channels: int, num_parts: int) -> None:
    model = _model(depth=depth, num_parts=num_parts)
    out = model(_images(3), _images(2, seed=1))
    assert isinstance(out, ModelOutput)
    B = 5
    assert out.num_rgb == 3
    assert out.global_feat.shape == (B, channels)
    assert out.bn_feat.shape == (B, channels)
    assert out.logits.shape == (B, NUM_CLASSES)
    assert out.part_feat is not None and out.part_feat.shape == (B, num_parts, channels)
    assert out.part_weights is not None and out.part_weights.shape == (B, num_parts)
    assert out.fused_feat is not None and out.fused_feat.shape == (B, channels)
    assert out.fused_bn_feat is not None and out.fused_bn_feat.shape == (B, channels)
    assert out.fused_logits is not None and out.fused_logits.shape == (B, NUM_CLASSES)
    assert out.modality.tolist() == [0, 0, 0, 1, 1]


def test_three_parts_on_height_four_errors() -> None:
    model = _model(num_parts=3)
    with pytest.raises(Df2amError, match=r"num_parts=3.*H=4"):
        model(_images(2), _images(2))


def test_part_weights_positive_and_normalised() -> None:
    out = _model()(_images(2), _images(2, seed=1))
    assert out.part_weights is not None
    assert bool((out.part_weights > 0).all())
    torch.testing.assert_close(out.part_weights.sum(1), torch.ones(4))


@pytest.mark.parametrize("last_stride", [1, 2])
def test_last_stride_sets_feature_size(last_stride: int) -> None:
    for depth in (18, 50):
        model = _model(depth=depth, last_stride=last_stride)
        f = model.backbone(_images(1), _images(1))
        assert f.shape[2:] == ((4, 2) if last_stride == 1 else (2, 1))


def test_rows_are_rgb_then_ir_with_the_right_stem() -> None:
    model = _model().eval()  # eval: BN uses running stats, so rows are independent
    rgb, ir = _images(2), _images(3, seed=1)
    with torch.no_grad():
        out = model(rgb, ir)
        g_rgb = model.backbone.forward_single(rgb, "rgb").mean(dim=(2, 3))
        g_ir = model.backbone.forward_single(ir, "ir").mean(dim=(2, 3))
        g_ir_wrong_stem = model.backbone.forward_single(ir, "rgb").mean(dim=(2, 3))
    torch.testing.assert_close(out.global_feat[:2], g_rgb, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.global_feat[2:], g_ir, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(out.global_feat[2:], g_ir_wrong_stem, atol=1e-3)


def test_gradients_reach_stems_trunk_and_attention() -> None:
    model = _model()
    out = model(_images(4), _images(4, seed=1))
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    assert out.fused_logits is not None
    F.cross_entropy(out.fused_logits, labels).backward()
    bb = model.backbone
    assert model.df2 is not None
    params = {
        "stem_rgb": bb.stem_rgb.conv1.weight,
        "stem_ir": bb.stem_ir.conv1.weight,
        "layer1": bb.layer1[0].conv1.weight,
        "layer4": bb.layer4[-1].conv2.weight,
        "attention.0": model.df2.attention[0].weight,
        "attention.2": model.df2.attention[2].weight,
        "df2.classifier": model.df2.classifier.weight,
    }
    for name, p in params.items():
        assert p.grad is not None, name
        assert float(p.grad.abs().sum()) > 0, name
    # Frozen BNNeck shift gets no gradient.
    assert model.bnneck.bias.grad is None


def test_baseline_without_df2_has_none_fields() -> None:
    model = _model(df2_module=False, test_feature="bn_global")
    assert model.df2 is None
    out = model(_images(2), _images(2, seed=1))
    for name in ("part_feat", "part_weights", "fused_feat", "fused_bn_feat", "fused_logits"):
        assert getattr(out, name) is None, name
    assert out.logits.shape == (4, NUM_CLASSES)
    with pytest.raises(ConfigError, match="fused"):
        model.extract(_images(2), "rgb", feature="fused")


def test_channels_last_kept_through_the_trunk() -> None:
    model = _model().to(memory_format=torch.channels_last)
    rgb = _images(2).to(memory_format=torch.channels_last)
    ir = _images(2, seed=1).to(memory_format=torch.channels_last)
    fmap = model.backbone(rgb, ir)
    assert fmap.is_contiguous(memory_format=torch.channels_last)
    out = model(rgb, ir)
    ref = _model()(_images(2), _images(2, seed=1))  # same seed → same weights, contiguous
    torch.testing.assert_close(out.fused_logits, ref.fused_logits, atol=1e-5, rtol=1e-3)
    torch.testing.assert_close(out.global_feat, ref.global_feat, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("feature", ["fused", "global", "bn_global"])
def test_extract_unit_norm_fp32_and_restores_mode(feature: str) -> None:
    model = _model().train()
    feats = model.extract(_images(3), "ir", feature=feature)  # type: ignore[arg-type]
    assert feats.shape == (3, 512) and feats.dtype == torch.float32
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(3))
    assert not feats.requires_grad
    assert model.training
    model.eval()
    model.extract(_images(1), "rgb", feature=feature)  # type: ignore[arg-type]
    assert not model.training


def test_extract_flip_averages_before_normalising() -> None:
    model = _model()
    x = _images(3)
    plain = model.extract(x, "rgb", feature="bn_global", flip=False)
    flipped = model.extract(x, "rgb", feature="bn_global", flip=True)
    assert not torch.allclose(plain, flipped, atol=1e-4)
    # Manual: eval-mode BN(f^g) of the image and of its mirror, averaged, then L2-normalised.
    model.eval()
    with torch.no_grad():

        def bn_global(img: torch.Tensor) -> torch.Tensor:
            return model.bnneck(model.backbone.forward_single(img, "rgb").mean(dim=(2, 3)))

        manual = F.normalize((bn_global(x) + bn_global(torch.flip(x, dims=[3]))) / 2, dim=1)
    torch.testing.assert_close(flipped, manual, atol=1e-5, rtol=1e-4)


def test_extract_defaults_come_from_config() -> None:
    model = _model(test_feature="global", flip_test=True)
    x = _images(2)
    torch.testing.assert_close(model.extract(x, "ir"), model.extract(x, "ir", "global", True))
    with pytest.raises(ValueError, match="modality"):
        model.extract(x, "thermal")


def test_param_groups_split_backbone_and_head() -> None:
    model = _model()
    groups = model.param_groups(lr=0.1, backbone_lr_mult=0.1, weight_decay=5e-4)
    assert [g["name"] for g in groups] == ["backbone", "head"]
    assert groups[0]["lr"] == pytest.approx(0.01) and groups[0]["lr_mult"] == 0.1
    assert groups[1]["lr"] == pytest.approx(0.1) and groups[1]["lr_mult"] == 1.0
    assert all(g["weight_decay"] == 5e-4 for g in groups)
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    assert {id(p) for p in groups[0]["params"]} == backbone_ids
    head_ids = {id(p) for p in groups[1]["params"]}
    assert not head_ids & backbone_ids
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert head_ids | backbone_ids == trainable
    assert model.df2 is not None and id(model.df2.attention[0].weight) in head_ids
    torch.optim.SGD(groups, lr=0.1, momentum=0.9)  # accepted as-is by the optimiser


def test_no_unused_modules() -> None:
    model = _model()
    names = {n for n, _ in model.named_modules()}
    assert not any(n.endswith(("fc", "avgpool")) for n in names)
    # Every parameter takes part in a forward pass.
    out = model(_images(2), _images(2, seed=1))
    assert out.fused_logits is not None
    (out.fused_logits.square().sum() + out.logits.square().sum()).backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []


# --------------------------------------------------------------------------- part_pooling


def test_adaptive_pooling_runs_p_not_dividing_h() -> None:
    model = _model(num_parts=3, part_pooling="adaptive")
    out = model(_images(2), _images(2, seed=1))  # H = 4, P = 3
    assert out.part_feat is not None and out.part_feat.shape == (4, 3, 512)
    assert model.df2 is not None and model.df2.part_pooling == "adaptive"
    strict = _model(num_parts=4)
    adaptive = _model(num_parts=4, part_pooling="adaptive")  # same seed → same weights
    torch.testing.assert_close(
        adaptive(_images(2), _images(2, seed=1)).fused_logits,
        strict(_images(2), _images(2, seed=1)).fused_logits,
        rtol=0, atol=0,
    )


# --------------------------------------------------------------------------- global_vector


def test_global_vector_network_rows_identical_and_every_parameter_used() -> None:
    model = _model(part_attention="global_vector")
    assert model.df2 is not None and model.df2.attention is None
    assert not any(".attention." in n for n in model.state_dict())
    out = model(_images(2), _images(2, seed=1))
    assert out.part_weights is not None and out.part_weights.shape == (4, 4)
    torch.testing.assert_close(out.part_weights, torch.full((4, 4), 0.25))
    assert out.fused_logits is not None
    (out.fused_logits.square().sum() + out.logits.square().sum()).backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []  # what DDP needs
    groups = model.param_groups(lr=0.1, backbone_lr_mult=0.1, weight_decay=5e-4)
    assert id(model.df2.omega) in {id(p) for p in groups[1]["params"]}


# --------------------------------------------------------------------------- specific_stages


def _numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_default_state_dict_keys_are_the_two_stems_and_shared_layers() -> None:
    model = _model()
    assert model.backbone.shared_stages == ("layer1", "layer2", "layer3", "layer4")
    keys = list(model.state_dict())
    assert keys == list(_model(specific_stages=0).state_dict())
    assert "backbone.layer1.0.conv1.weight" in keys
    in_stems = ("backbone.stem_rgb.layer", "backbone.stem_ir.layer")
    assert not any(k.startswith(in_stems) for k in keys)
    stems = {k.split(".")[2] for k in keys if k.startswith("backbone.stem_")}
    assert stems == {"conv1", "bn1"}


@pytest.mark.parametrize("stages", [1, 2])
def test_specific_stages_add_exactly_one_copy_per_stage(stages: int) -> None:
    base, model = _model(), _model(specific_stages=stages)
    bb = model.backbone
    specific = ("layer1", "layer2")[:stages]
    extra = sum(_numel(getattr(base.backbone, name)) for name in specific)
    assert _numel(model) == _numel(base) + extra
    assert bb.shared_stages == ("layer1", "layer2", "layer3", "layer4")[stages:]
    for name in specific:
        assert not hasattr(bb, name)
        rgb, ir = getattr(bb.stem_rgb, name), getattr(bb.stem_ir, name)
        assert rgb is not ir and _numel(rgb) == _numel(ir)
        # IR copy: its own tensors, independently drawn with torchvision's scheme.
        for (n, pr), (_, pi) in zip(rgb.named_parameters(), ir.named_parameters(), strict=True):
            assert pr is not pi and pr.shape == pi.shape
            if n.endswith("conv1.weight"):
                assert not torch.equal(pr, pi), n
                fan_out = pi.shape[0] * pi.shape[2] * pi.shape[3]
                # kaiming_normal_(fan_out): std = sqrt(2 / fan_out)
                assert abs(float(pi.detach().std()) / (2 / fan_out) ** 0.5 - 1) < 0.2, n
        for m in ir.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                assert bool((m.weight == 1).all()) and bool((m.bias == 0).all())
                assert int(m.num_batches_tracked) == 0
    keys = set(model.state_dict())
    assert {f"backbone.stem_{m}.layer1.0.conv1.weight" for m in ("rgb", "ir")} <= keys
    assert not any(k.startswith("backbone.layer1.") for k in keys)


@pytest.mark.parametrize("stages", [1, 2])
def test_specific_pair_forward_equals_forward_single(stages: int) -> None:
    model = _model(specific_stages=stages).eval()
    rgb, ir = _images(2), _images(3, seed=1)
    with torch.no_grad():
        pair = model.backbone(rgb, ir)
        single_rgb = model.backbone.forward_single(rgb, "rgb")
        single_ir = model.backbone.forward_single(ir, "ir")
    torch.testing.assert_close(pair[:2], single_rgb, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pair[2:], single_ir, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("stages", [1, 2])
def test_perturbing_one_specific_copy_changes_only_that_modality(stages: int) -> None:
    model = _model(specific_stages=stages).eval()
    bb = model.backbone
    bb.stem_ir.load_state_dict(bb.stem_rgb.state_dict())  # equal streams: rgb == ir outputs
    x = _images(2)
    with torch.no_grad():
        before_rgb = bb.forward_single(x, "rgb")
        torch.testing.assert_close(bb.forward_single(x, "ir"), before_rgb, rtol=0, atol=0)
        last = getattr(bb.stem_ir, ("layer1", "layer2")[stages - 1])
        last[0].conv1.weight.add_(0.1)
        after_rgb, after_ir = bb.forward_single(x, "rgb"), bb.forward_single(x, "ir")
    torch.testing.assert_close(after_rgb, before_rgb, rtol=0, atol=0)
    assert not torch.allclose(after_ir, after_rgb, atol=1e-3)


def test_specific_stages_train_every_copy_and_stay_in_the_backbone_group() -> None:
    model = _model(specific_stages=2)
    out = model(_images(2), _images(2, seed=1))
    assert out.fused_logits is not None
    (out.fused_logits.square().sum() + out.logits.square().sum()).backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []
    bb = model.backbone
    for stem in (bb.stem_rgb, bb.stem_ir):
        for name in ("layer1", "layer2"):
            assert float(getattr(stem, name)[0].conv1.weight.grad.abs().sum()) > 0
    groups = model.param_groups(lr=0.1, backbone_lr_mult=0.1, weight_decay=5e-4)
    backbone_ids = {id(p) for p in bb.parameters()}
    assert {id(p) for p in groups[0]["params"]} == backbone_ids
    assert id(bb.stem_ir.layer2[0].conv1.weight) in backbone_ids
    assert not {id(p) for p in groups[1]["params"]} & backbone_ids


def test_specific_stages_out_of_range_is_an_error() -> None:
    with pytest.raises(ValueError, match="specific_stages"):
        _model(specific_stages=3)


# --- model.stem_init and model.width -------------------------------------------------------


@pytest.mark.parametrize("stages", [0, 1])
def test_stem_init_copy_starts_ir_as_rgb_and_leaves_the_trunk_draws(stages: int) -> None:
    torch.manual_seed(11)
    ind = DF2AMNet(ModelConfig(depth=18, specific_stages=stages), 5)
    torch.manual_seed(11)
    cop = DF2AMNet(ModelConfig(depth=18, specific_stages=stages, stem_init="copy"), 5)
    rgb, ir = cop.backbone.stem_rgb.state_dict(), cop.backbone.stem_ir.state_dict()
    assert rgb.keys() == ir.keys()
    assert all(torch.equal(rgb[k], ir[k]) for k in rgb)
    # Copies, not shared tensors: training can move them apart.
    bb = cop.backbone
    assert bb.stem_ir.conv1.weight.data_ptr() != bb.stem_rgb.conv1.weight.data_ptr()
    # Everything but the IR stem starts exactly as with independent draws (same seed).
    a, b = ind.state_dict(), cop.state_dict()
    differ = {k for k in a if not torch.equal(a[k], b[k])}
    assert differ and all(k.startswith("backbone.stem_ir.") for k in differ)


@pytest.mark.parametrize("width", [16, 32])
def test_narrow_resnet_channels_and_forward(width: int) -> None:
    model = build_model(ModelConfig(depth=18, width=width, num_parts=2, specific_stages=1), 3)
    bb = model.backbone
    assert bb.stem_rgb.conv1.out_channels == width
    assert bb.stem_ir.conv1.out_channels == width
    assert bb.layer4[-1].conv2.out_channels == 8 * width
    assert model.feat_dim == 8 * width
    out = model(torch.randn(2, 3, 32, 16), torch.randn(2, 3, 32, 16))
    assert out.fused_feat.shape == (4, 8 * width)
    # torchvision's initialisation rule: kaiming fan-out convolutions, BN weight 1 / bias 0.
    bn = bb.layer2[0].bn1
    assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and not bn.bias.any()
    conv = bb.layer3[0].conv1
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert abs(conv.weight.std().item() - (2.0 / fan_out) ** 0.5) < 0.2 * (2.0 / fan_out) ** 0.5


def test_width_64_is_torchvisions_network_and_bad_widths_fail() -> None:
    torch.manual_seed(5)
    a = DF2AMNet(ModelConfig(depth=18), 3).state_dict()
    torch.manual_seed(5)
    b = DF2AMNet(ModelConfig(depth=18, width=64), 3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises((ValueError, ConfigError), match="width"):
        DF2AMNet(ModelConfig(depth=18, width=20), 3)
