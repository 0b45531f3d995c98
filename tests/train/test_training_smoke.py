"""End-to-end smoke test: a depth-18 DF²AM net trained with the full Eq. 4 loss learns.

A tiny fixed batch (4 identities × (2 RGB + 2 IR) images of 64×32, fixed seed) is fitted for a
few SGD steps; the loss must drop substantially. This exercises models → losses → autograd
together (shapes, the [RGB; IR] row order, gradients reaching every term) in a few seconds.
"""

from __future__ import annotations

import torch

from df2am.config import LossConfig, ModelConfig
from df2am.losses import build_loss
from df2am.models import build_model

NUM_IDS = 4
PER_MODALITY = 2
STEPS = 10


def test_full_loss_decreases_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(depth=18, pretrained="none"), num_classes=NUM_IDS)
    model.train()
    criterion = build_loss(LossConfig())  # full Eq. 4: L_B + λ·L_D + ζ·L_A
    g = torch.Generator().manual_seed(0)
    rgb = torch.randn(NUM_IDS * PER_MODALITY, 3, 64, 32, generator=g)
    ir = torch.randn(NUM_IDS * PER_MODALITY, 3, 64, 32, generator=g)
    ids = torch.arange(NUM_IDS).repeat_interleave(PER_MODALITY)  # 0,0,1,1,2,2,3,3
    labels = torch.cat([ids, ids])  # rows [RGB; IR]
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    history = []
    for _ in range(STEPS):
        res = criterion(model(rgb, ir), labels)
        assert set(res.parts) == {"id", "triplet", "df2", "affinity"}
        assert torch.isfinite(res.total)
        opt.zero_grad(set_to_none=True)
        res.total.backward()
        opt.step()
        history.append(res.total.item())

    first = sum(history[:3]) / 3
    last = sum(history[-3:]) / 3
    assert last < 0.7 * first, f"loss did not drop enough: {history}"
