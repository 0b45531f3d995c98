"""The ``agw`` network equals the AGW reference network (an independent re-implementation of
its published ``embed_net``, tests/models/reference_agw.py) once the reference's weights are
converted, for both modalities, with and without non-local blocks and GeM; the network keeps
channels_last, puts its non-local blocks in the backbone group and loads ImageNet weights
around them."""

from __future__ import annotations

import copy

import pytest
import torch
from reference_agw import EmbedNet, calibrate_, randomize_

from df2am.config import ModelConfig
from df2am.errors import ConfigError
from df2am.models import AGWNet, build_model, convert_reference_state_dict, load_backbone_weights
from df2am.models.agw import NonLocal, gem_pool

NUM_CLASSES = 7
TOL = 1e-5


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 64, 32, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def reference_nl() -> EmbedNet:
    """The reference with non-local blocks, every parameter and buffer random."""
    torch.manual_seed(0)
    ref = randomize_(EmbedNet(NUM_CLASSES, no_local="on", gm_pool="on"), seed=1)
    return calibrate_(ref, _images(8, seed=9))


@pytest.fixture(scope="module")
def reference_plain(reference_nl: EmbedNet) -> EmbedNet:
    """The same weights without the non-local blocks (the reference's ``no_local='off'``)."""
    ref = copy.deepcopy(reference_nl)
    ref.non_local = "off"
    for k in range(1, 5):
        delattr(ref, f"NL_{k}")
    return ref


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


def _converted(reference: EmbedNet, gem: bool) -> AGWNet:
    state, report = convert_reference_state_dict(reference.state_dict())
    model = build_model(ModelConfig(**report.model_options("gem" if gem else "avg")),
                        report.num_classes)
    model.load_state_dict(state, strict=True)
    assert isinstance(model, AGWNet)
    return model.eval()


@pytest.mark.parametrize("gem", [True, False], ids=["gem", "avg"])
@pytest.mark.parametrize("non_local", [True, False], ids=["nonlocal", "plain"])
def test_agw_features_equal_the_reference(request, non_local: bool, gem: bool) -> None:
    reference = request.getfixturevalue("reference_nl" if non_local else "reference_plain")
    reference.gm_pool = "on" if gem else "off"
    model = _converted(reference, gem)
    assert model.cfg.non_local is non_local
    x = _images(3, seed=2)
    with torch.no_grad():
        for modal, modality in ((1, "rgb"), (2, "ir")):
            ref_pool, ref_bn = reference(x, x, modal)
            bn = model.extract(x, modality)  # the AGW default: BN(pooled), L2-normalised
            pool = model.extract(x, modality, feature="global")
            assert (bn - ref_bn).abs().max().item() <= TOL, modality
            assert (pool - ref_pool).abs().max().item() <= TOL, modality
            # Not a vacuous match: the rows are far apart and the modalities differ.
            assert torch.cdist(bn, bn).fill_diagonal_(1).min() > 0.2
        assert (model.extract(x, "rgb") - model.extract(x, "ir")).abs().max() > 0.05


def test_training_pass_equals_the_reference(reference_nl: EmbedNet) -> None:
    reference = copy.deepcopy(reference_nl).train()
    reference.gm_pool = "on"
    model = _converted(reference_nl, gem=True).train()
    rgb, ir = _images(4, seed=3), _images(4, seed=4)
    ref_pool, ref_logits = reference(rgb, ir, 0)
    out = model(rgb, ir)
    assert out.num_rgb == 4 and out.fused_logits is None and out.part_feat is None
    # Train-mode BatchNorm over 8 rows amplifies rounding: compare relative to the norm.
    assert _rel(out.global_feat, ref_pool) < 1e-5
    assert _rel(out.logits, ref_logits) < 1e-4
    # Same gradients into the shared trunk (one loss on both).
    ref_logits.square().sum().backward()
    out.logits.square().sum().backward()
    pairs = {
        "layer3.4.conv2": (model.backbone.layer3[4].conv2,
                           reference.base_resnet.base.layer3[4].conv2),
        "stem_ir.conv1": (model.backbone.stem_ir.conv1, reference.thermal_module.thermal.conv1),
        "non_local.layer2.1.theta": (model.backbone.non_local["layer2"][1].theta,
                                     reference.NL_2[1].theta),
    }
    for name, (ours, theirs) in pairs.items():
        assert _rel(ours.weight.grad, theirs.weight.grad) < 1e-4, name


def test_the_comparison_sees_the_non_local_blocks(reference_nl: EmbedNet) -> None:
    """Swapping two non-local blocks of layer3 (a placement error) changes the features."""
    model = _converted(reference_nl, gem=True)
    x = _images(2, seed=5)
    before = model.extract(x, "ir")
    blocks = model.backbone.non_local["layer3"]
    state0, state2 = copy.deepcopy(blocks[0].state_dict()), copy.deepcopy(blocks[2].state_dict())
    blocks[0].load_state_dict(state2)
    blocks[2].load_state_dict(state0)
    assert (model.extract(x, "ir") - before).abs().max() > 1e-3


def test_non_local_block_is_the_reference_formula() -> None:
    """θ (φᵀ g) / N (df2am) equals (θᵀ φ / N) g (the reference), inner width 1."""
    torch.manual_seed(0)
    block = NonLocal(8).eval()
    with torch.no_grad():
        block.out_bn.weight.uniform_(0.5, 1.5)
        block.out_bn.bias.normal_()
    x = torch.randn(2, 8, 5, 3)
    n = 15
    t = block.theta(x).reshape(2, 1, n).transpose(1, 2)  # (B, N, 1)
    p = block.phi(x).reshape(2, 1, n)  # (B, 1, N)
    g = block.g(x).reshape(2, 1, n).transpose(1, 2)  # (B, N, 1)
    y = ((t @ p) / n @ g).transpose(1, 2).reshape(2, 1, 5, 3)
    want = block.out_bn(block.out_conv(y)) + x
    torch.testing.assert_close(block(x), want, rtol=1e-5, atol=1e-6)
    # Fresh blocks start as the identity (BN of W at weight 0, bias 0).
    torch.testing.assert_close(NonLocal(8)(x), x)


def test_gem_is_the_reference_formula() -> None:
    x = torch.rand(2, 3, 4, 2)
    want = (x.reshape(2, 3, -1).pow(3).mean(-1) + 1e-12).pow(1 / 3)
    torch.testing.assert_close(gem_pool(x), want)
    torch.testing.assert_close(gem_pool(torch.zeros(1, 2, 2, 2)), torch.full((1, 2), 1e-4))


def test_channels_last_kept_and_output_fields() -> None:
    model = build_model(ModelConfig(arch="agw", depth=34, non_local=True, pooling="gem",
                                    df2_module=False, test_feature="bn_global"), NUM_CLASSES)
    model = model.to(memory_format=torch.channels_last)
    rgb = _images(2, 0).to(memory_format=torch.channels_last)
    ir = _images(2, 1).to(memory_format=torch.channels_last)
    fmap = model.backbone(rgb, ir)
    assert fmap.is_contiguous(memory_format=torch.channels_last)
    out = model(rgb, ir)
    assert out.global_feat.shape == (4, 512) and out.bn_feat.shape == (4, 512)
    assert out.logits.shape == (4, NUM_CLASSES)
    for name in ("part_feat", "part_weights", "fused_feat", "fused_bn_feat", "fused_logits"):
        assert getattr(out, name) is None, name
    assert model.part_weights(rgb, "rgb") is None


def test_param_groups_put_non_local_blocks_in_the_backbone_group() -> None:
    model = build_model(ModelConfig(arch="agw", depth=34, non_local=True, pooling="gem",
                                    df2_module=False, test_feature="bn_global"), NUM_CLASSES)
    backbone, head = model.param_groups(lr=0.1, backbone_lr_mult=0.1, weight_decay=5e-4)
    nl = {id(p) for p in model.backbone.non_local.parameters()}
    assert nl and nl <= {id(p) for p in backbone["params"]}
    assert {id(p) for p in head["params"]} == {id(model.bnneck.weight),
                                               id(model.classifier.weight)}
    assert backbone["lr"] == pytest.approx(0.01) and head["lr"] == pytest.approx(0.1)


def test_imagenet_weights_load_around_the_non_local_blocks(tmp_path) -> None:
    from torchvision.models import resnet34

    torch.manual_seed(0)
    tv = resnet34(weights=None).state_dict()
    path = tmp_path / "resnet34.pth"
    torch.save(tv, path)
    model = build_model(ModelConfig(arch="agw", depth=34, non_local=True, pooling="gem",
                                    df2_module=False, test_feature="bn_global"), NUM_CLASSES)
    before = copy.deepcopy(model.backbone.non_local.state_dict())
    load_backbone_weights(model, path)
    torch.testing.assert_close(model.backbone.stem_ir.conv1.weight, tv["conv1.weight"])
    torch.testing.assert_close(model.backbone.layer3[5].conv2.weight, tv["layer3.5.conv2.weight"])
    for k, v in model.backbone.non_local.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_non_local_needs_enough_blocks() -> None:
    cfg = ModelConfig(arch="agw", depth=18, non_local=True, df2_module=False,
                      test_feature="bn_global")
    with pytest.raises(ConfigError, match=r"model\.non_local=true needs ResNet depth"):
        build_model(cfg, NUM_CLASSES)
