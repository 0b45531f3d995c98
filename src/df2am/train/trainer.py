"""The training loop: the recipe of method.md ("Training recipe", paper §4.1) as one call.

Python API::

    from df2am.config import load_config
    from df2am.train import train

    cfg = load_config("configs/sysu.yaml", ["data.root=/data/SYSU-MM01"])
    result = train(cfg, "runs/sysu")                 # fresh run (refuses a used run dir)
    result = train(cfg, "runs/sysu", resume=True)    # continue from checkpoints/last.pt
    result.results["rank1"], result.final_checkpoint  # test Rank-1 (%) and model_final.pt

The same code runs on one process or under ``torchrun --nproc_per_node=K`` (DDP).

Run directory (the contract in docs/architecture.md)::

    config.yaml           the resolved config (df2am.config.save_config)
    train.log             the log lines of rank 0
    metrics.jsonl         one JSON record per log step / epoch / evaluation (train.metrics_log)
    tb/                   TensorBoard event files
    checkpoints/last.pt   written after every epoch (what --resume continues from)
    checkpoints/epoch_XXX.pt   every ``train.checkpoint_every`` epochs and after the last
    checkpoints/best.pt   the best-on-validation epoch (only with ``train.val_ids > 0``)
    model_final.pt        the reported model (checkpoint format of train.checkpoint)
    results.json, cmc.png the final test evaluation of model_final.pt (train.final_test)

The loop: :func:`train` holds the run directory (:func:`df2am.train.rundir.claim_run_dir`: the
lock, the fresh/resume checks of :mod:`df2am.train.resume`, ``config.yaml``, ``train.log``),
then ``_train`` reads build → restore → (epoch → validate → checkpoint)* → finish, as
fast-reid's trainer does; what the phases share is one ``_Run`` (fixed) and one
:class:`TrainState`. Choices, each documented where it is made:

* Learning rate: SGD per parameter group (backbone ×``optim.backbone_lr_mult``), warm-up and
  step decay set **per epoch** (:mod:`df2am.train.optim`).
* The reported model is the **last epoch**, or — with ``train.val_ids = N > 0`` — the epoch
  with the best validation mAP on the last N training identities (:mod:`df2am.train.validate`).
  The test set is never used for model selection; it is evaluated once, at the end, on
  ``model_final.pt`` (:mod:`df2am.train.final_test`).
* Resume: ``checkpoints/last.pt`` holds model, optimizer, scheduler, sampler, RNG (every
  rank's) and GradScaler state; the sampler and the loader's augmentation are functions of
  (seed, epoch, rank), so a resumed run reproduces the uninterrupted one (bitwise on the CPU in
  ``train.deterministic`` mode). What a resume refuses: :mod:`df2am.train.resume`.
* Before epoch 1: the precision is resolved (``precision=auto``; emulated bf16 refused unless
  ``train.allow_slow_bf16``: :mod:`df2am.train.precision`), the final test split is built (a
  missing test folder fails now, not after training) and train/test identities must not
  overlap (:func:`df2am.train.final_test.check_test_split`).
* Safety: one process per run directory, debris of killed writes removed
  (:mod:`df2am.train.rundir`); a disk-full write names the file and keeps the previous
  checkpoint (:mod:`df2am.train.checkpoint`); a non-finite or exploding loss stops the run
  naming epoch, step and learning rate, and non-finite weights are never checkpointed
  (:mod:`df2am.train.divergence`).
* Host syncs: loss terms are accumulated as device tensors and read (``.item()``) only every
  ``train.log_every`` iterations and at the end of each epoch.
* DDP: every rank trains on its own identities of each batch step (the identity-sharding
  sampler); rank 0 alone writes logs/checkpoints and runs validation and the final test
  evaluation on its full model copy (features are not sharded across ranks: evaluation is a
  small share of the time). At the end every rank takes rank 0's BN statistics and the ranks'
  weight digests are compared (a ``ddp_check`` record). What rank 0 does alone (the run lock,
  the fresh/resume checks, the test-split check, the image cache, validation, checkpoints, the
  final test) runs inside :func:`~df2am.train.distributed.main_decides`: a refusal there stops
  every rank with the same message instead of leaving the others at a barrier. The divergence
  check reads the step losses averaged over the ranks, so every rank stops at the same step.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from df2am.assess.results import read_results, summary_metrics
from df2am.config import Config, config_from_dict, config_to_dict
from df2am.data.records import ImageRecord
from df2am.data.validation import split_validation
from df2am.device import resolve_device
from df2am.errors import ConfigError, Df2amError
from df2am.train.checkpoint import (
    load_checkpoint,
    make_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from df2am.train.distributed import (
    DistContext,
    barrier,
    broadcast_buffers,
    env_world,
    gather_objects,
    init_distributed,
    main_decides,
    mean_over_ranks,
    shutdown,
    state_digest,
)
from df2am.train.divergence import LossHistory, check_divergence, check_finite_weights
from df2am.train.final_test import check_test_split, run_final_test
from df2am.train.metrics_log import MetricsLogger
from df2am.train.optim import build_optimizer, build_scheduler
from df2am.train.precision import (
    autocast_context,
    configure_determinism,
    make_grad_scaler,
    resolve_precision,
    seed_everything,
)
from df2am.train.resume import check_weights, rewrite_epoch_checkpoint
from df2am.train.rundir import check_path_text, claim_run_dir, resolve_cache_dir, run_status
from df2am.train.validate import validate

if TYPE_CHECKING:  # the networks import torchvision: not needed at import time
    from df2am.models import ReIDNet

__all__ = ["TrainResult", "TrainState", "train"]

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`train` returns (on every rank; ``results`` only on rank 0).

    Attributes:
        run_dir: the run directory.
        epochs_completed: epochs trained in total (including those before a resume).
        final_checkpoint: ``run_dir/model_final.pt``.
        selected_by: ``"last_epoch"`` or ``"validation"``.
        selected_epoch: the epoch (1-based) of the reported model.
        results: the final test summary (percent; ``rank1``, ``mAP``, ... and ``_std`` twins),
            or None when no test evaluation ran.
        val_history: ``{"epoch", "rank1", "mAP", "mINP"}`` per validation evaluation.
        resumed_from: epochs completed when the run was resumed (0 for a fresh run).
        digest: SHA-256 of the final weights on this rank (equal on all ranks).
    """

    run_dir: Path
    epochs_completed: int
    final_checkpoint: Path
    selected_by: str
    selected_epoch: int
    results: dict[str, Any] | None = None
    val_history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int = 0
    digest: str = ""


class _TrainStep(nn.Module):
    """Model + loss in one module, so DDP sees the loss graph (needed to find parameters that a
    configuration leaves unused, e.g. the DF² head when ``loss.use_df2=false``)."""

    def __init__(self, model: ReIDNet, criterion: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.criterion = criterion

    def forward(
        self, rgb: torch.Tensor, ir: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = self.criterion(self.model(rgb, ir), labels)
        return out.total, dict(out.parts)


# --------------------------------------------------------------------------- the run's state


@dataclass
class _Run:
    """What the build phase made and every later phase uses (fixed for the whole run)."""

    cfg: Config
    run_dir: Path
    device: torch.device
    ctx: DistContext
    val_query: list[ImageRecord]
    val_gallery: list[ImageRecord]
    cache_dir: str
    loader: Any
    num_classes: int
    model: ReIDNet
    step_module: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    iters_per_epoch: int = 0
    imgs_per_iter: int = 0
    group_names: list[str] = field(default_factory=list)
    losses: LossHistory = field(default_factory=LossHistory)

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def last_path(self) -> Path:
        return self.ckpt_dir / "last.pt"


@dataclass
class TrainState:
    """What changes from epoch to epoch (and what a checkpoint restores)."""

    start_epoch: int = 0
    epoch: int = 0  # epochs completed
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": 0, "mAP": -math.inf})
    val_history: list[dict[str, Any]] = field(default_factory=list)
    improved: bool = False  # the last validation beat ``best``
    history: list[dict[str, Any]] = field(default_factory=list)  # e.g. ``extend`` records


# --------------------------------------------------------------------------- the loop


def train(
    cfg: Config, run_dir: str | Path, resume: bool = False, *, extend: bool = False
) -> TrainResult:
    """Train the model of ``cfg`` into ``run_dir``, then evaluate the reported model.

    Args:
        cfg: the resolved config. On ``resume`` it must equal ``run_dir/config.yaml`` except
            for :data:`~df2am.train.resume.RESUME_OVERRIDABLE` keys (the CLI loads it from
            there).
        run_dir: the run directory; a fresh run refuses one that already holds a run.
        resume: continue from ``run_dir/checkpoints/last.pt``. A finished run is left as is
            (only a missing final test evaluation is redone).
        extend: with ``resume``, allow ``train.epochs`` above the run's recorded schedule
            (the CLI's ``--extend``); the extension is recorded in ``train.log``,
            ``metrics.jsonl`` (an ``extend`` record) and the checkpoints' ``history``.

    Returns:
        A :class:`TrainResult`.

    Raises:
        ConfigError: a used run directory without ``resume``, a changed config on resume
            (also a hand-edited ``config.yaml``: it must match ``last.pt``'s config), a shorter
            schedule than already trained, a longer one without ``extend``, ``device=cuda``
            without CUDA, ``fp16`` on the CPU, emulated bf16 without
            ``train.allow_slow_bf16``, train/test identities that overlap, ...
        RunLockedError: another live process trains in ``run_dir`` (``run_dir/.lock``).
        TrainingDivergedError: a non-finite or exploding loss (nothing non-finite is saved).
        DatasetError / CheckpointError: from the data and checkpoint layers (a failed write,
            e.g. a full disk, names the file; the previous checkpoint stays intact).

    Example (a tiny synthetic run on the CPU)::

        from df2am.config import load_config
        from df2am.data.synthetic import write_synthetic
        from df2am.train import train

        root = write_synthetic("/tmp/syn", "sysu", num_ids=12, size=(64, 32))
        cfg = load_config("configs/demo.yaml", [f"data.root={root}", "train.epochs=2"])
        result = train(cfg, "/tmp/run")
        print(result.results["rank1"], result.final_checkpoint)
    """
    cfg = config_from_dict(config_to_dict(cfg))  # private copy, re-validated
    run_dir = Path(run_dir)
    check_path_text(run_dir)
    if not resume:  # before the run directory is claimed: a fresh run that failed in the
        _check_data_root(cfg)  # build left config.yaml, then the same command was refused
    device = resolve_device(cfg.train.device, env_world()[2])  # local rank: one GPU each
    # The hardware rule of train.precision, before anything is written. The run records the
    # concrete value (config.yaml, checkpoints): a resume on other hardware re-checks it
    # instead of letting "auto" pick another precision mid-run.
    requested = cfg.train.precision
    precision, reason = resolve_precision(
        requested, device, allow_slow_bf16=cfg.train.allow_slow_bf16
    )
    cfg.train.precision = precision
    ctx = init_distributed(device.type)
    try:
        with contextlib.ExitStack() as held:
            # The lock and the fresh/resume checks are rank 0's; a refusal stops every rank.
            with main_decides(ctx):
                notes = held.enter_context(claim_run_dir(
                    cfg, run_dir, resume, requested=requested, extend=extend, main=ctx.is_main))
            if ctx.is_main:
                logger.info("precision: %s", reason)
                notes.insert(0, {"event": "precision", "requested": requested,
                                 "precision": precision, "reason": reason})
            return _train(cfg, run_dir, resume, device, ctx, notes)
    finally:
        shutdown(ctx)


def _train(
    cfg: Config,
    run_dir: Path,
    resume: bool,
    device: torch.device,
    ctx: DistContext,
    notes: list[dict[str, Any]] | None = None,
) -> TrainResult:
    """The phases of a run: restore what a resume continues, build, restore the state, then
    per epoch train / validate / checkpoint, and finish (the reported model, the test)."""
    configure_determinism(cfg.train.deterministic)
    seed_everything(cfg.train.seed)
    ckpt = _load_last(run_dir, resume)
    start_epoch = int(ckpt["epoch"]) if ckpt is not None else 0
    status = run_status(run_dir, epochs=cfg.train.epochs, trained=start_epoch)
    if resume and status in ("trained", "finished"):
        logger.info("%s: run already finished (%d epochs); nothing to train", run_dir, start_epoch)
        return _finish_existing(cfg, run_dir, device, ctx, start_epoch)
    run = _build(cfg, run_dir, device, ctx)
    state = _restore(run, ckpt, resume)
    notes = notes or []
    state.history += [n for n in notes if n["event"] == "extend"]
    _log_plan(run)
    with MetricsLogger(run_dir, enabled=ctx.is_main) as mlog:
        for note in notes:
            mlog.write(note)
        for epoch in range(state.start_epoch, cfg.train.epochs):
            _epoch(run, state, mlog, epoch)
            _validate_epoch(run, state, mlog)
            _checkpoint(run, state)
        result = _finish(run, state, mlog)
    barrier(ctx)
    return result


# ---- phase: build


def _load_last(run_dir: Path, resume: bool) -> dict[str, Any] | None:
    """``checkpoints/last.pt`` of a resumed run (None for a fresh run or when there is none)."""
    last_path = run_dir / "checkpoints" / "last.pt"
    return load_checkpoint(last_path) if resume and last_path.is_file() else None


def _check_data_root(cfg: Config) -> None:
    """``data.root`` is set and holds the dataset's top-level layout (cheap: no listing)."""
    from df2am.data.datasets import get_dataset

    if not cfg.data.root:
        raise ConfigError("data.root is empty: give the dataset folder, e.g. data.root=/data/SYSU")
    get_dataset(cfg.data.dataset).check_layout(cfg.data.root)


def _build(cfg: Config, run_dir: Path, device: torch.device, ctx: DistContext) -> _Run:
    """Build phase: the data (training records less the validation ids, the loader), then the
    model, loss, optimizer, scheduler and grad scaler."""
    from df2am.data.protocol import train_records

    if not cfg.data.root:
        raise ConfigError("data.root is empty: give the dataset folder, e.g. data.root=/data/SYSU")
    records = train_records(cfg.data.dataset, cfg.data.root, trial=cfg.data.trial)
    with main_decides(ctx):  # a missing test split or shared ids stop every rank
        if cfg.train.final_eval and ctx.is_main:
            check_test_split(cfg, records, device)
    records, val_query, val_gallery = split_validation(records, cfg.train.val_ids)
    cache_dir = resolve_cache_dir(cfg, run_dir)
    loader = _build_loader(cfg, records, cache_dir, ctx)
    num_classes = int(loader.num_classes)
    model, step_module = _build_model(cfg, num_classes, device, ctx)
    optimizer = build_optimizer(model, cfg.optim)
    run = _Run(
        cfg=cfg, run_dir=run_dir, device=device, ctx=ctx, val_query=val_query,
        val_gallery=val_gallery, cache_dir=cache_dir, loader=loader, num_classes=num_classes,
        model=model, step_module=step_module, optimizer=optimizer,
        scheduler=build_scheduler(optimizer, cfg.optim),
        scaler=make_grad_scaler(device, cfg.train.precision),
    )
    return run


def _build_loader(
    cfg: Config, records: list[ImageRecord], cache_dir: str, ctx: DistContext
) -> Any:
    from df2am.data.loader import build_train_loader

    def make_loader() -> Any:
        return build_train_loader(
            records,
            cfg.data.root,
            cfg.data,
            cfg.sampler,
            seed=cfg.train.seed,
            rank=ctx.rank,
            world_size=ctx.world_size,
            cache_dir=cache_dir,
            channels_last=cfg.train.channels_last,
        )

    # Rank 0 builds the decoded-image cache first; the other ranks then only open it.
    with main_decides(ctx):  # an unreadable image on rank 0 stops every rank
        loader = make_loader() if ctx.is_main else None
    return make_loader() if loader is None else loader


def _build_model(
    cfg: Config, num_classes: int, device: torch.device, ctx: DistContext
) -> tuple[ReIDNet, nn.Module]:
    """The model and the module that trains it (model + loss, DDP-wrapped under DDP)."""
    from df2am.losses import build_loss
    from df2am.models import build_model

    model = build_model(cfg.model, num_classes).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = build_loss(cfg.loss).to(device)
    step_module: nn.Module = _TrainStep(model, criterion)
    if ctx.distributed:
        # Parameters that no loss term reaches would stall DDP's gradient reduction: the loss
        # says which outputs it reads, the model which parameters those depend on.
        unused = model.unused_parameters(criterion.used_outputs)
        if unused and ctx.is_main:
            logger.info("DDP: %d parameter tensors get no gradient with these loss settings "
                        "(%s%s); find_unused_parameters on", len(unused), ", ".join(unused[:3]),
                        ", ..." if len(unused) > 3 else "")
        step_module = nn.parallel.DistributedDataParallel(
            step_module,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=bool(unused),
        )
    return model, step_module


# ---- phase: restore


def _restore(run: _Run, ckpt: dict[str, Any] | None, resume: bool) -> TrainState:
    """Restore phase: model, optimizer, scheduler, scaler, sampler and RNG state from
    ``last.pt``; the :class:`TrainState` the epochs continue from."""
    state = TrainState()
    if ckpt is None:
        if resume:
            logger.info("%s: no checkpoints/last.pt yet; starting from epoch 1", run.run_dir)
        return state
    if int(ckpt["num_classes"]) != run.num_classes:
        raise Df2amError(
            f"{run.last_path}: checkpoint has {ckpt['num_classes']} classes, the data "
            f"{run.num_classes}; did data.root change to another dataset?"
        )
    check_weights(run.model.state_dict(), ckpt["model"], path=run.last_path,
                  depth=run.cfg.model.depth, num_classes=run.num_classes)
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    if run.scaler is not None and ckpt.get("scaler") is not None:
        run.scaler.load_state_dict(ckpt["scaler"])
    if ckpt.get("sampler"):
        run.loader.load_state_dict(ckpt["sampler"])
    ranks = ckpt.get("rng_ranks") or [ckpt["rng"]]
    set_rng_state(ranks[run.ctx.rank] if len(ranks) == run.ctx.world_size else ranks[0])
    state.start_epoch = state.epoch = int(ckpt["epoch"])
    state.best = dict(ckpt.get("val_best") or state.best)
    state.val_history = list(ckpt.get("val_history") or [])
    state.history = list(ckpt.get("history") or [])
    logger.info("resuming %s after epoch %d", run.run_dir, state.start_epoch)
    with main_decides(run.ctx):
        if run.ctx.is_main:
            rewrite_epoch_checkpoint(ckpt, ckpt_dir=run.ckpt_dir, last_path=run.last_path,
                                     checkpoint_every=run.cfg.train.checkpoint_every)
    return state


def _log_plan(run: _Run) -> None:
    """The iterations per epoch and images per iteration (into ``run``), and their log line."""
    cfg, tc = run.cfg, run.cfg.train
    run.iters_per_epoch = len(run.loader)
    if tc.max_iters_per_epoch > 0:
        run.iters_per_epoch = min(run.iters_per_epoch, tc.max_iters_per_epoch)
    # The loader counts its rows (CAJ's exchanged RGB copies included).
    run.imgs_per_iter = int(run.loader.images_per_batch) * run.ctx.world_size
    run.group_names = [str(g.get("name", i)) for i, g in enumerate(run.optimizer.param_groups)]
    logger.info(
        "training %d epochs x %d iterations (batch %d images on %d process(es)), %s, %s on %s",
        tc.epochs,
        run.iters_per_epoch,
        run.imgs_per_iter,
        run.ctx.world_size,
        f"{cfg.model.arch} ResNet-{cfg.model.depth}",
        tc.precision,
        run.device,
    )


# ---- phase: epoch


def _epoch(run: _Run, state: TrainState, mlog: MetricsLogger, epoch: int) -> None:
    """Epoch phase: one training epoch (``epoch`` 0-based), the scheduler step, its record."""
    ep_stats = _train_epoch(run, mlog, epoch=epoch)
    run.scheduler.step()
    state.epoch = epoch + 1
    mlog.write({"event": "epoch", "epoch": state.epoch, **ep_stats}, step=state.epoch)


class _LossSums:
    """Device-side sums of the loss and its parts: no host sync until they are read."""

    def __init__(self, device: torch.device, keep_steps: bool = False) -> None:
        self.device = device
        self.total = torch.zeros((), device=device)
        self.parts: dict[str, torch.Tensor] = {}
        self.n = 0
        self.steps: list[torch.Tensor] | None = [] if keep_steps else None

    def add(self, total: torch.Tensor, parts: dict[str, torch.Tensor]) -> None:
        self.total += total
        if self.steps is not None:
            self.steps.append(total)
        for k, v in parts.items():
            self.parts[k] = self.parts.get(k, torch.zeros((), device=self.device)) + v
        self.n += 1

    def mean_parts(self) -> dict[str, float]:
        return {k: v.item() / self.n for k, v in self.parts.items()}


def _train_epoch(run: _Run, mlog: MetricsLogger, *, epoch: int) -> dict[str, Any]:
    """One epoch; returns the epoch record (mean loss and parts, lr, img/s, seconds)."""
    from tqdm import tqdm

    step_module, iters = run.step_module, run.iters_per_epoch
    step_module.train()
    run.loader.set_epoch(epoch)
    lrs = {n: g["lr"] for n, g in zip(run.group_names, run.optimizer.param_groups, strict=True)}
    bar = tqdm(
        total=iters,
        desc=f"epoch {epoch + 1}/{run.cfg.train.epochs}",
        # Off when stderr is not a terminal (sweep logs, CI): the per-epoch log line carries
        # the same numbers without hundreds of redrawn bars.
        disable=not run.ctx.is_main or not sys.stderr.isatty(),
        dynamic_ncols=True,
        leave=False,
    )
    window, ep = _LossSums(run.device, keep_steps=True), _LossSums(run.device)
    start = time.perf_counter()
    win_start = start
    for batch in run.loader:
        if ep.n >= iters:
            break
        total, parts = _train_step(run, batch)
        window.add(total, parts)
        ep.add(total, parts)
        bar.update(1)
        if ep.n % max(run.cfg.train.log_every, 1) == 0 or ep.n == iters:
            now = time.perf_counter()
            loss, img_s = _log_window(run, mlog, window, epoch, ep.n, lrs, now - win_start)
            bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{img_s:.0f}")
            window = _LossSums(run.device, keep_steps=True)
            win_start = now
    bar.close()
    if ep.n == 0:
        raise Df2amError(f"epoch {epoch + 1}: the training loader yielded no batch")
    return _epoch_stats(run, ep, lrs, epoch, time.perf_counter() - start)


def _train_step(
    run: _Run, batch: Any
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward, backward and optimizer step on one batch; the detached fp32 loss and parts."""
    device, tc = run.device, run.cfg.train
    non_blocking = device.type == "cuda"
    mem = torch.channels_last if tc.channels_last else torch.contiguous_format
    rgb = batch.rgb.to(device, non_blocking=non_blocking).contiguous(memory_format=mem)
    ir = batch.ir.to(device, non_blocking=non_blocking).contiguous(memory_format=mem)
    labels = torch.cat([batch.rgb_labels, batch.ir_labels])
    labels = labels.to(device, non_blocking=non_blocking)
    with autocast_context(device, tc.precision):
        total, parts = run.step_module(rgb, ir, labels)
    run.optimizer.zero_grad(set_to_none=True)
    if run.scaler is not None:
        run.scaler.scale(total).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        total.backward()
        run.optimizer.step()
    return total.detach().float(), {k: v.detach().float() for k, v in parts.items()}


def _log_window(
    run: _Run,
    mlog: MetricsLogger,
    window: _LossSums,
    epoch: int,
    it: int,
    lrs: dict[str, float],
    seconds: float,
) -> tuple[float, float]:
    """The ``train`` record of one log window (the window's one host sync: its per-step
    losses, which the divergence check reads); (loss, img/s)."""
    # Under DDP every rank judges the same numbers (the mean over ranks, folded into this one
    # sync), so a divergence stops all ranks at the same step instead of leaving some waiting.
    stacked = torch.stack(window.steps) if window.steps else window.total.reshape(1)
    steps = mean_over_ranks(stacked, run.ctx).tolist()
    check_divergence(run.losses, steps, cfg=run.cfg, mlog=mlog, epoch=epoch,
                     first_it=it - len(steps) + 1, iters=run.iters_per_epoch, lrs=lrs,
                     last_path=run.last_path)
    loss = math.fsum(steps) / window.n
    iters = run.iters_per_epoch
    rec = {
        "event": "train",
        "epoch": epoch + 1,
        "iter": it,
        "global_iter": epoch * iters + it,
        "lr": lrs,
        "loss": loss,
        "parts": window.mean_parts(),
        "img_per_s": window.n * run.imgs_per_iter / max(seconds, 1e-9),
    }
    mlog.write(rec, step=epoch * iters + it)
    return loss, rec["img_per_s"]


def _epoch_stats(
    run: _Run, ep: _LossSums, lrs: dict[str, float], epoch: int, seconds: float
) -> dict[str, Any]:
    """The epoch record (mean loss and parts, lr, img/s, seconds) and its log line."""
    it = ep.n
    stats = {
        "iters": it,
        "loss": ep.total.item() / it,
        "parts": ep.mean_parts(),
        "lr": lrs,
        "img_per_s": it * run.imgs_per_iter / max(seconds, 1e-9),
        "seconds": seconds,
    }
    logger.info(
        "epoch %d/%d: loss %.4f (%s), %.0f img/s, %.1f s",
        epoch + 1,
        run.cfg.train.epochs,
        stats["loss"],
        ", ".join(f"{k} {v:.4f}" for k, v in stats["parts"].items()),
        stats["img_per_s"],
        seconds,
    )
    return stats


# ---- phase: validate


def _validate_epoch(run: _Run, state: TrainState, mlog: MetricsLogger) -> None:
    """Validate phase (rank 0, when due): IR → RGB on the held-out ids; updates ``best``."""
    tc, done = run.cfg.train, state.epoch
    state.improved = False
    every = tc.eval_every > 0 and done % tc.eval_every == 0
    due = tc.val_ids > 0 and (every or done == tc.epochs)
    if not due:
        return
    with main_decides(run.ctx):
        if run.ctx.is_main:
            _validate_main(run, state, mlog, done)


def _validate_main(run: _Run, state: TrainState, mlog: MetricsLogger, done: int) -> None:
    """Rank 0's validation after epoch ``done``: the record, the log line, ``best``."""
    metrics, align = validate(
        run.model, run.cfg, run.val_query, run.val_gallery, device=run.device,
        cache_dir=run.cache_dir,
    )
    state.val_history.append({"epoch": done, **metrics})
    mlog.write({"event": "val", "epoch": done, **metrics}, step=done)
    logger.info(
        "epoch %d validation: rank1 %.2f%% mAP %.2f%%; alignment: %s", done,
        metrics["rank1"], metrics["mAP"], align.summary(),
    )
    if metrics["mAP"] > state.best["mAP"]:
        state.best = {"epoch": done, "mAP": metrics["mAP"]}
        state.improved = True


# ---- phase: checkpoint


def _checkpoint(run: _Run, state: TrainState) -> None:
    """Checkpoint phase: ``last.pt`` every epoch, ``epoch_XXX.pt`` every
    ``train.checkpoint_every`` epochs and after the last, ``best.pt`` on a better validation."""
    # Every rank's RNG state, so a resumed DDP run continues every rank's streams.
    rngs = gather_objects(rng_state(), run.ctx)
    with main_decides(run.ctx):  # non-finite weights, a full disk: every rank stops
        if run.ctx.is_main:
            _write_checkpoints(run, state, rngs)


def _write_checkpoints(run: _Run, state: TrainState, rngs: list[object]) -> None:
    """Rank 0: ``last.pt``, ``epoch_XXX.pt`` when due, ``best.pt`` after a better validation."""
    done = state.epoch
    check_finite_weights(run.model, epoch=done, cfg=run.cfg, last_path=run.last_path)
    ckpt = make_checkpoint(
        run.model,
        run.num_classes,
        run.cfg,
        done,
        run.optimizer,
        run.scheduler,
        run.loader.state_dict(),
        rngs,
        run.scaler,
        {"val_best": state.best, "val_history": state.val_history, "history": state.history},
    )
    save_checkpoint(run.last_path, ckpt)
    if done % max(run.cfg.train.checkpoint_every, 1) == 0 or done == run.cfg.train.epochs:
        save_checkpoint(run.ckpt_dir / f"epoch_{done:03d}.pt", ckpt)
    if state.improved:
        save_checkpoint(run.ckpt_dir / "best.pt", ckpt)


# ---- phase: finish


def _finish(run: _Run, state: TrainState, mlog: MetricsLogger) -> TrainResult:
    """Finish phase: identical models on all ranks, the reported model, the test run."""
    ctx, tc = run.ctx, run.cfg.train
    broadcast_buffers(run.model, ctx)
    digest = state_digest(run.model)
    digests = gather_objects(digest, ctx)
    if ctx.distributed:
        mlog.write({"event": "ddp_check", "digests": digests, "agree": len(set(digests)) == 1})
        if len(set(digests)) != 1:
            raise RuntimeError(f"DDP ranks ended with different weights: {digests}")
    result = TrainResult(
        run_dir=run.run_dir,
        epochs_completed=tc.epochs,
        final_checkpoint=run.run_dir / "model_final.pt",
        selected_by="last_epoch",
        selected_epoch=tc.epochs,
        val_history=state.val_history,
        resumed_from=state.start_epoch,
        digest=digest,
    )
    with main_decides(ctx):
        if ctx.is_main:
            _write_final(run.model, run.num_classes, run.cfg, run.run_dir, run.last_path, result)
            result.results = _final_test(run.cfg, run.run_dir, run.device, result, mlog)
    return result


def _write_final(
    model: ReIDNet,
    num_classes: int,
    cfg: Config,
    run_dir: Path,
    last_path: Path,
    result: TrainResult,
) -> None:
    """``model_final.pt``: best-on-validation (``train.val_ids > 0``) or the last epoch."""
    best_path = run_dir / "checkpoints" / "best.pt"
    if cfg.train.val_ids > 0 and best_path.is_file():
        state = load_checkpoint(best_path)
        result.selected_by = "validation"
        result.selected_epoch = int(state["epoch"])
    else:
        state = load_checkpoint(last_path)
        # The BN statistics broadcast from rank 0 at the end are what every rank holds now.
        state["model"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    state["selected_by"] = result.selected_by
    save_checkpoint(run_dir / "model_final.pt", state)
    logger.info(
        "wrote %s (epoch %d, selected by %s)",
        run_dir / "model_final.pt",
        result.selected_epoch,
        result.selected_by,
    )


def _final_test(
    cfg: Config,
    run_dir: Path,
    device: torch.device,
    result: TrainResult,
    mlog: MetricsLogger | None,
) -> dict[str, Any] | None:
    """The test of the reported model (:func:`df2am.train.final_test.run_final_test`)."""
    return run_final_test(cfg, run_dir, device, checkpoint=result.final_checkpoint,
                          selected_by=result.selected_by, selected_epoch=result.selected_epoch,
                          mlog=mlog)


def _finish_existing(
    cfg: Config, run_dir: Path, device: torch.device, ctx: DistContext, epochs: int
) -> TrainResult:
    """A finished run: report it; redo only a missing final test evaluation."""
    final_path = run_dir / "model_final.pt"
    state = load_checkpoint(final_path)
    result = TrainResult(
        run_dir=run_dir,
        epochs_completed=epochs,
        final_checkpoint=final_path,
        selected_by=str(state.get("selected_by", "last_epoch")),
        selected_epoch=int(state["epoch"]),
        val_history=list(state.get("val_history") or []),
        resumed_from=epochs,
    )
    results_path = run_dir / "results.json"
    with main_decides(ctx):
        if ctx.is_main:
            if results_path.is_file():
                result.results = summary_metrics(read_results(results_path))
            else:
                result.results = _final_test(cfg, run_dir, device, result, None)
    return result
