"""DDP's ``find_unused_parameters`` rule comes from the model and the loss, for every
architecture: ``model.unused_parameters(criterion.used_outputs)`` names exactly the parameters
that get no gradient (checked against autograd on a real step), so the trainer never has to
know which architecture or loss term leaves a head idle."""

from __future__ import annotations

import pytest
import torch

from df2am.config import LossConfig, ModelConfig
from df2am.errors import ConfigError
from df2am.losses import build_loss
from df2am.models import ARCHITECTURES, build_model

H, W = 64, 32  # a 4 x 2 feature map (last stride 1): P = 2 and 4 both divide it

DF2AM = dict(arch="df2am", depth=18, num_parts=2, df2_module=True, pretrained="none",
             test_feature="fused")
BASELINE = dict(arch="baseline", depth=18, df2_module=False, pretrained="none",
                test_feature="bn_global")
AGW = dict(arch="agw", depth=18, df2_module=False, non_local=False, pooling="gem",
           pretrained="none", test_feature="bn_global")
AGW_LOSS = dict(use_df2=False, use_affinity=False, triplet_type="wrt", triplet_mode="joint",
                id_mode="joint")

CASES = {
    # (model options, loss options)
    "df2am_full": (DF2AM, {}),
    "df2am_no_baseline": (DF2AM, dict(use_baseline=False)),
    "df2am_without_ld": (DF2AM, dict(use_df2=False)),
    "df2am_only_affinity_bn": (DF2AM, dict(use_baseline=False, use_df2=False,
                                           affinity_feature="bn_global")),
    "df2am_global_vector": ({**DF2AM, "part_attention": "global_vector"}, {}),
    "df2am_global_vector_no_ld": ({**DF2AM, "part_attention": "global_vector"},
                                  dict(use_df2=False)),
    "df2am_module_off": ({**DF2AM, "df2_module": False, "test_feature": "bn_global"},
                         dict(use_df2=False)),
    "baseline": (BASELINE, dict(use_df2=False, use_affinity=False)),
    "baseline_affinity_only": (BASELINE, dict(use_baseline=False, use_df2=False)),
    "agw": (AGW, AGW_LOSS),
    "agw_bn_triplet": (AGW, {**AGW_LOSS, "triplet_feature": "bn_global"}),
    "caj": (AGW, {**AGW_LOSS, "triplet_type": "adp"}),
    "agw_affinity_only": (AGW, {**AGW_LOSS, "use_baseline": False, "use_affinity": True}),
}


def _no_gradient(model_opts: dict, loss_opts: dict) -> tuple[list[str], list[str]]:
    """(declared, measured): the parameters the rule names, and those autograd leaves at None."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(**model_opts), num_classes=4)
    criterion = build_loss(LossConfig(**loss_opts))
    labels = torch.tensor([0, 0, 1, 1])
    rgb, ir = torch.randn(4, 3, H, W), torch.randn(4, 3, H, W)
    criterion(model(rgb, ir), torch.cat([labels, labels])).total.backward()
    measured = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    return model.unused_parameters(criterion.used_outputs), measured


@pytest.mark.parametrize("case", sorted(CASES))
def test_declared_unused_parameters_are_exactly_those_without_gradient(case: str) -> None:
    declared, measured = _no_gradient(*CASES[case])
    assert declared == measured


def test_the_cases_cover_both_answers_and_every_architecture() -> None:
    """Some settings leave a head idle (DDP must search), the recipes leave none."""
    assert _no_gradient(*CASES["df2am_full"]) == ([], [])
    assert _no_gradient(*CASES["agw"]) == ([], [])
    declared, _ = _no_gradient(*CASES["df2am_without_ld"])
    assert declared and all(n.startswith("df2.") for n in declared)
    declared, _ = _no_gradient(*CASES["agw_affinity_only"])
    # L_A on the pooled feature alone: the BNNeck and the classifier get no gradient.
    assert declared == ["bnneck.weight", "classifier.weight"]
    assert {opts["arch"] for opts, _ in CASES.values()} == set(ARCHITECTURES)


def test_every_architecture_declares_the_outputs_it_produces() -> None:
    for arch, opts in (("df2am", DF2AM), ("baseline", BASELINE), ("agw", AGW)):
        model = build_model(ModelConfig(**opts), num_classes=4)
        out = model(torch.randn(2, 3, H, W), torch.randn(2, 3, H, W))
        produced = {k for k, v in vars(out).items() if isinstance(v, torch.Tensor)}
        assert set(type(model).OUTPUT_PARAMETERS) >= produced, arch


def test_an_output_the_model_lacks_is_an_error_naming_it() -> None:
    model = build_model(ModelConfig(**AGW), num_classes=4)
    with pytest.raises(ConfigError, match="fused_logits"):
        model.unused_parameters({"logits", "fused_logits"})
