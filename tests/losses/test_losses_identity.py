"""identity_loss: cross-entropy with and without label smoothing, hand-computed."""

from __future__ import annotations

import math

import pytest
import torch

from df2am.losses import identity_loss

# One row of logits [0, ln 3] -> softmax [1/4, 3/4].
LOGITS = torch.tensor([[0.0, math.log(3.0)]])


def test_ce_true_class_one() -> None:
    # -ln p_1 = -ln(3/4) = ln(4/3)
    got = identity_loss(LOGITS, torch.tensor([1]))
    assert got.item() == pytest.approx(math.log(4.0 / 3.0), abs=1e-6)


def test_ce_batch_mean() -> None:
    # rows [0, ln3] with labels 1 and 0: (ln(4/3) + ln 4) / 2
    logits = LOGITS.repeat(2, 1)
    got = identity_loss(logits, torch.tensor([1, 0]))
    assert got.item() == pytest.approx((math.log(4 / 3) + math.log(4.0)) / 2, abs=1e-6)


def test_ce_label_smoothing() -> None:
    # eps = 0.2, N = 2: target = (1 - eps) * onehot + eps / N = [0.1, 0.9] for label 1.
    # loss = -(0.1 ln(1/4) + 0.9 ln(3/4)) = 0.1 ln 4 + 0.9 ln(4/3)
    got = identity_loss(LOGITS, torch.tensor([1]), label_smoothing=0.2)
    expected = 0.1 * math.log(4.0) + 0.9 * math.log(4.0 / 3.0)
    assert got.item() == pytest.approx(expected, abs=1e-6)
    assert expected != pytest.approx(math.log(4.0 / 3.0))  # smoothing really changes the value


def test_ce_bf16_logits_computed_in_fp32() -> None:
    got = identity_loss(LOGITS.bfloat16(), torch.tensor([1]))
    assert got.dtype == torch.float32
    # ln 3 rounded to bf16 is 1.1015625; CE = ln(1 + e^{-1.1015625})
    assert got.item() == pytest.approx(math.log1p(math.exp(-1.1015625)), abs=1e-6)
