"""CUDA checks (``pytest -m cuda``): skipped, with the reason, on a machine without a GPU.

Run on a GPU machine by ``benchmarks/gpu_check.py`` (step ``cuda_tests``):

* evaluation on CUDA tensors equals the CPU result for every protocol rule (sysu, regdb, llcm),
  on integer-valued distances (many ties: the tie order must match too);
* a depth-18 DF²AM net fitted for a few steps on a fixed batch in fp32, bf16 and fp16 (with a
  ``GradScaler``) through :mod:`df2am.train.precision`: the loss stays finite and drops, and
  channels_last weights and feature maps stay channels_last;
* a one-rank NCCL process group with a DDP-wrapped model (``torchrun --nproc_per_node=1`` does
  not create one: :func:`df2am.train.distributed.init_distributed` is a no-op at world size 1).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from df2am.config import LossConfig, ModelConfig
from df2am.evaluation import PROTOCOLS, evaluate
from df2am.losses import build_loss
from df2am.models import build_model
from df2am.train.precision import autocast_context, make_grad_scaler

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

# Cameras of each protocol (query, gallery): SYSU's IR queries 3/6 against RGB 1/2/4/5 (cam 3
# vs cam 2 is the rule that drops images), RegDB's two cameras, LLCM's shared camera numbers.
CAMS = {
    "sysu": ([3, 6], [1, 2, 4, 5]),
    "regdb": ([1], [2]),
    "llcm": ([1, 2, 3, 4], [1, 2, 3, 4]),
}
NUM_IDS = 4
PER_MODALITY = 2


# --------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_evaluation_on_cuda_equals_cpu(protocol, dtype):
    rng = np.random.default_rng(7)
    nq, ng = 97, 61
    dist = rng.integers(0, 6, size=(nq, ng)).astype(dtype)  # 6 values: ties everywhere
    q_ids, g_ids = rng.integers(0, 9, nq), rng.integers(0, 9, ng)
    qc, gc = CAMS[protocol]
    q_cams, g_cams = rng.choice(qc, nq), rng.choice(gc, ng)
    cpu = evaluate(dist, q_ids, g_ids, q_cams, g_cams, protocol=protocol, chunk_size=16)
    dev = torch.device("cuda")
    for chunk in (16, 1000):
        gpu = evaluate(
            torch.from_numpy(dist).to(dev), torch.from_numpy(q_ids).to(dev),
            torch.from_numpy(g_ids).to(dev), torch.from_numpy(q_cams).to(dev),
            torch.from_numpy(g_cams).to(dev), protocol=protocol, chunk_size=chunk,
        )
        np.testing.assert_array_equal(np.asarray(gpu.cmc), np.asarray(cpu.cmc))
        assert gpu.num_valid_queries == cpu.num_valid_queries > 0
        assert gpu.mAP == pytest.approx(cpu.mAP, abs=1e-12)
        assert gpu.mINP == pytest.approx(cpu.mINP, abs=1e-12)


# --------------------------------------------------------------------------- training


def _fixed_batch(device: torch.device, hw=(64, 32)):
    g = torch.Generator().manual_seed(0)
    rgb = torch.randn(NUM_IDS * PER_MODALITY, 3, *hw, generator=g)
    ir = torch.randn(NUM_IDS * PER_MODALITY, 3, *hw, generator=g)
    ids = torch.arange(NUM_IDS).repeat_interleave(PER_MODALITY)
    labels = torch.cat([ids, ids])  # rows [RGB; IR]
    mf = torch.channels_last
    return (rgb.to(device, memory_format=mf), ir.to(device, memory_format=mf),
            labels.to(device))


def fit_fixed_batch(device: torch.device, precision: str, steps: int = 20):
    """Fit a depth-18 DF²AM net on one fixed batch; returns (losses, skipped steps, model).

    ``skipped``: steps the fp16 ``GradScaler`` skipped (inf/NaN gradients at its scale).
    """
    torch.manual_seed(0)
    model = build_model(ModelConfig(depth=18, pretrained="none"), num_classes=NUM_IDS)
    model = model.to(device, memory_format=torch.channels_last).train()
    criterion = build_loss(LossConfig()).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = make_grad_scaler(device, precision)
    rgb, ir, labels = _fixed_batch(device)
    losses: list[float] = []
    skipped = 0
    for _ in range(steps):
        with autocast_context(device, precision):
            res = criterion(model(rgb, ir), labels)
        assert torch.isfinite(res.total), f"{precision}: loss {res.total.item()} after {losses}"
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            res.total.backward()
            opt.step()
        else:
            scale = scaler.get_scale()
            scaler.scale(res.total).backward()
            scaler.step(opt)
            scaler.update()
            skipped += scaler.get_scale() < scale
        losses.append(res.total.item())
    return losses, skipped, model


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_training_steps_on_cuda_stay_finite_and_reduce_the_loss(precision):
    device = torch.device("cuda")
    losses, skipped, model = fit_fixed_batch(device, precision)
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.7 * first, f"{precision}: loss did not drop enough: {losses}"
    assert skipped <= 5, f"{precision}: the GradScaler skipped {skipped} of {len(losses)} steps"
    for name, p in model.named_parameters():
        assert p.device.type == "cuda"
        assert torch.isfinite(p).all(), f"{precision}: {name} is not finite"
        if p.dim() == 4:
            assert p.is_contiguous(memory_format=torch.channels_last), name


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_runs_the_backbone_in_low_precision_and_keeps_channels_last(precision):
    device = torch.device("cuda")
    model = build_model(ModelConfig(depth=18, pretrained="none"), num_classes=NUM_IDS)
    model = model.to(device, memory_format=torch.channels_last).train()
    rgb, ir, _ = _fixed_batch(device)
    with autocast_context(device, precision):
        fmap = model.backbone(rgb, ir)
    want = torch.bfloat16 if precision == "bf16" else torch.float16
    assert fmap.dtype == want
    assert fmap.is_contiguous(memory_format=torch.channels_last)


def test_fp16_makes_a_grad_scaler_and_fp32_bf16_do_not():
    device = torch.device("cuda")
    assert isinstance(make_grad_scaler(device, "fp16"), torch.amp.GradScaler)
    assert make_grad_scaler(device, "bf16") is None
    assert make_grad_scaler(device, "fp32") is None


# --------------------------------------------------------------------------- NCCL


@pytest.mark.skipif(not torch.distributed.is_available() or
                    not torch.distributed.is_nccl_available(), reason="NCCL not available")
def test_one_rank_nccl_ddp_step(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    device = torch.device("cuda", 0)
    torch.cuda.set_device(device)
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("nccl", store=store, rank=0, world_size=1)
    try:
        t = torch.arange(4.0, device=device)
        dist.all_reduce(t)
        assert t.tolist() == [0.0, 1.0, 2.0, 3.0]
        torch.manual_seed(0)
        model = build_model(ModelConfig(depth=18, pretrained="none"), num_classes=NUM_IDS)
        model = model.to(device, memory_format=torch.channels_last).train()
        ddp = DistributedDataParallel(model, device_ids=[0])
        criterion = build_loss(LossConfig()).to(device)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)
        rgb, ir, labels = _fixed_batch(device)
        losses = []
        for _ in range(3):
            res = criterion(ddp(rgb, ir), labels)
            opt.zero_grad(set_to_none=True)
            res.total.backward()
            opt.step()
            losses.append(res.total.item())
        assert all(np.isfinite(losses)), losses
        dist.barrier()
    finally:
        dist.destroy_process_group()
