"""The training engine: the recipe of method.md ("Training recipe", paper §4.1) as one call.

Python API::

    from df2am.config import load_config
    from df2am.engine import train

    cfg = load_config("configs/sysu.yaml", ["data.root=/data/SYSU-MM01"])
    result = train(cfg, "runs/sysu")                 # fresh run (refuses a used run dir)
    result = train(cfg, "runs/sysu", resume=True)    # continue from checkpoints/last.pt
    result.results["rank1"], result.final_checkpoint  # test Rank-1 (%) and model_final.pt

The same code runs on one process or under ``torchrun --nproc_per_node=K`` (DDP).

Run directory (the contract in docs/architecture.md)::

    config.yaml           the resolved config (df2am.config.save_config)
    train.log             the log lines of rank 0
    metrics.jsonl         one JSON record per log step / epoch / evaluation (logging_utils)
    tb/                   TensorBoard event files
    checkpoints/last.pt   written after every epoch (what --resume continues from)
    checkpoints/epoch_XXX.pt   every ``train.checkpoint_every`` epochs and after the last
    checkpoints/best.pt   the best-on-validation epoch (only with ``train.val_ids > 0``)
    model_final.pt        the reported model (checkpoint format of engine.checkpoint)
    results.json, cmc.png the final test evaluation of model_final.pt (engine.evaluator)

Choices, each documented where it is made:

* Learning rate: SGD per parameter group (backbone ×``optim.backbone_lr_mult``), warm-up and
  step decay set **per epoch** (:mod:`df2am.engine.optim`).
* The reported model is the **last epoch**, or — with ``train.val_ids = N > 0`` — the epoch
  with the best validation mAP on the last N training identities (carved out of training: IR
  images query the RGB images, image-level CMC without camera filtering). The test set is never
  used for model selection; it is evaluated once, at the end, on ``model_final.pt``.
* Resume: ``checkpoints/last.pt`` holds model, optimizer, scheduler, sampler, RNG (every
  rank's) and GradScaler state; the sampler and the loader's augmentation are functions of
  (seed, epoch, rank), so a resumed run reproduces the uninterrupted one (bitwise on the CPU in
  ``train.deterministic`` mode). Resuming uses the config saved in the run directory; only
  :data:`RESUME_OVERRIDABLE` keys may differ (``train.epochs`` extends a run; the others say
  where it runs and do not change the arithmetic).
* Host syncs: loss terms are accumulated as device tensors and read (``.item()``) only every
  ``train.log_every`` iterations and at the end of each epoch.
* DDP: every rank trains on its own identities of each batch step (the identity-sharding
  sampler); rank 0 alone writes logs/checkpoints and runs validation and the final test
  evaluation on its full model copy (features are not sharded across ranks: evaluation is a
  small share of the time). At the end every rank takes rank 0's BN statistics and the ranks'
  weight digests are compared (a ``ddp_check`` record).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from df2am.config import (
    Config,
    complete_config_dict,
    config_from_dict,
    config_to_dict,
    save_config,
)
from df2am.data.records import ImageRecord
from df2am.engine.checkpoint import (
    FORMAT_VERSION,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from df2am.engine.distributed import (
    DistContext,
    barrier,
    broadcast_buffers,
    gather_objects,
    init_distributed,
    shutdown,
    state_digest,
)
from df2am.engine.logging_utils import MetricsLogger
from df2am.engine.optim import build_optimizer, build_scheduler
from df2am.engine.precision import (
    autocast_context,
    configure_determinism,
    make_grad_scaler,
    resolve_device,
    seed_everything,
)
from df2am.errors import ConfigError, Df2amError
from df2am.evaluation import AlignmentReport

__all__ = [
    "TrainResult",
    "train",
    "RESUME_OVERRIDABLE",
    "run_status",
    "split_validation",
    "resolve_cache_dir",
    "train_trials",
]

logger = logging.getLogger(__name__)

#: Config keys that may differ between a run directory's config.yaml and a resumed run.
RESUME_OVERRIDABLE: tuple[str, ...] = (
    "train.epochs",
    "train.device",
    "train.log_every",
    "data.root",
    "data.num_workers",
    "data.cache_dir",
)


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

    def __init__(self, model: nn.Module, criterion: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.criterion = criterion

    def forward(
        self, rgb: torch.Tensor, ir: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = self.criterion(self.model(rgb, ir), labels)
        return out.total, dict(out.parts)


# --------------------------------------------------------------------------- run directory


def run_status(run_dir: str | Path) -> str:
    """``"empty"`` (nothing there), ``"partial"`` (checkpoints but no final model) or
    ``"finished"`` (``model_final.pt`` or ``results.json`` present)."""
    d = Path(run_dir)
    if (d / "model_final.pt").is_file() or (d / "results.json").is_file():
        return "finished"
    if (d / "checkpoints" / "last.pt").is_file() or (d / "config.yaml").is_file():
        return "partial"
    return "empty"


def resolve_cache_dir(cfg: Config, run_dir: Path) -> str:
    """``data.cache_dir``: "" → ``<run_dir>/cache``, "none" → no disk cache, else the path."""
    if cfg.data.cache_dir == "":
        return str(run_dir / "cache")
    return cfg.data.cache_dir


def _config_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += _config_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k}")
    return keys


def _check_resume_config(cfg: Config, run_dir: Path, saved: dict[str, Any]) -> None:
    saved = complete_config_dict(saved, source=f"{run_dir} checkpoint")
    diff = [k for k in _config_diff(config_to_dict(cfg), saved) if k not in RESUME_OVERRIDABLE]
    if diff:
        raise ConfigError(
            f"{run_dir}: cannot resume with a different config; changed keys: {', '.join(diff)} "
            f"(only {', '.join(RESUME_OVERRIDABLE)} may change on --resume)"
        )


# --------------------------------------------------------------------------- validation split


def split_validation(
    records: list[ImageRecord], val_ids: int
) -> tuple[list[ImageRecord], list[ImageRecord], list[ImageRecord]]:
    """Carve the last ``val_ids`` training identities (highest labels) out of ``records``.

    Returns ``(train, val_query, val_gallery)``: the remaining training records (labels stay
    0..N-val_ids-1, still contiguous), the IR images of the held-out ids as queries and their
    RGB images as the gallery (the SYSU-MM01 / RegDB v2t-like cross-modality direction).
    """
    labels = sorted({r.label for r in records})
    if val_ids <= 0:
        return records, [], []
    if val_ids >= len(labels):
        raise ConfigError(
            f"train.val_ids={val_ids} must be smaller than the number of training ids "
            f"({len(labels)})"
        )
    cut = labels[-val_ids]
    train = [r for r in records if r.label < cut]
    held = [r for r in records if r.label >= cut]
    query = [r for r in held if r.modality == "ir"]
    gallery = [r for r in held if r.modality == "rgb"]
    if not query or not gallery:
        raise ConfigError(
            f"train.val_ids={val_ids}: the held-out ids need images of both modalities"
        )
    return train, query, gallery


def _known_cams(records: list[ImageRecord]) -> np.ndarray | None:
    """Cameras of ``records``, or None when some are unknown (0: LLCM training lines carry no
    camera), so the alignment's within-modality retrieval does not skip same-camera pairs."""
    cams = np.asarray([r.cam for r in records])
    return None if (cams <= 0).any() else cams


def _validate(
    model: nn.Module,
    cfg: Config,
    query: list[ImageRecord],
    gallery: list[ImageRecord],
    *,
    device: torch.device,
    cache_dir: str,
) -> tuple[dict[str, Any], AlignmentReport]:
    """IR → RGB retrieval on the validation ids (``rank1``, ``mAP``, ``mINP``; the model
    selection criterion) and, under ``align``, the modality-alignment report of the same
    features (:func:`df2am.evaluation.modality_alignment`: within-RGB, within-IR and
    cross-modality Rank-1/mAP, the cross-modality positive/negative distance gap); the report
    itself is returned beside, for the log line."""
    from df2am.engine.evaluator import extract_records
    from df2am.evaluation import evaluate_features, modality_alignment

    def feats(records: list[ImageRecord]) -> torch.Tensor:
        return extract_records(
            model,
            records,
            cfg.data.root,
            cfg.data,
            device=device,
            batch_size=cfg.eval.batch_size,
            cache_dir=cache_dir,
        )

    q, g = feats(query), feats(gallery)
    q_ids = np.asarray([r.pid for r in query])
    g_ids = np.asarray([r.pid for r in gallery])
    res = evaluate_features(
        q,
        g,
        q_ids,
        g_ids,
        None,
        None,
        protocol="regdb",  # image-level CMC, no camera filter: query and gallery differ anyway
        metric=cfg.eval.metric,
        max_rank=min(cfg.eval.max_rank, len(gallery)),
    )
    d = res.to_dict()
    align = modality_alignment(g, q, g_ids, q_ids, _known_cams(gallery), _known_cams(query))
    metrics = {"rank1": d["rank1"], "mAP": d["mAP"], "mINP": d["mINP"], "align": align.to_json()}
    return metrics, align


# --------------------------------------------------------------------------- checkpoints


def _make_checkpoint(
    model: nn.Module,
    num_classes: int,
    cfg: Config,
    epoch: int,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    sampler_state: dict[str, Any],
    rngs: list[Any],
    scaler: Any,
    extra: dict[str, Any],
) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "num_classes": int(num_classes),
        "config": config_to_dict(cfg),
        "epoch": int(epoch),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "sampler": sampler_state,
        "rng": rngs[0],
        "rng_ranks": rngs,
        "scaler": scaler.state_dict() if scaler is not None else None,
        **extra,
    }


# --------------------------------------------------------------------------- the loop


def train(cfg: Config, run_dir: str | Path, resume: bool = False) -> TrainResult:
    """Train the model of ``cfg`` into ``run_dir``, then evaluate the reported model.

    Args:
        cfg: the resolved config. On ``resume`` it must equal ``run_dir/config.yaml`` except
            for :data:`RESUME_OVERRIDABLE` keys (the CLI loads it from there).
        run_dir: the run directory; a fresh run refuses one that already holds a run.
        resume: continue from ``run_dir/checkpoints/last.pt``. A finished run is left as is
            (only a missing final test evaluation is redone).

    Returns:
        A :class:`TrainResult`.

    Raises:
        ConfigError: a used run directory without ``resume``, a changed config on resume,
            ``device=cuda`` without CUDA, ``fp16`` on the CPU, ...
        DatasetError / CheckpointError: from the data and checkpoint layers.

    Example (a tiny synthetic run on the CPU)::

        from df2am.config import load_config
        from df2am.data.synthetic import write_synthetic
        from df2am.engine import train

        root = write_synthetic("/tmp/syn", "sysu", num_ids=12, size=(64, 32))
        cfg = load_config("configs/demo.yaml", [f"data.root={root}", "train.epochs=2"])
        result = train(cfg, "/tmp/run")
        print(result.results["rank1"], result.final_checkpoint)
    """
    cfg = config_from_dict(config_to_dict(cfg))  # private copy, re-validated
    run_dir = Path(run_dir)
    device = resolve_device(cfg.train.device, _local_rank())
    ctx = init_distributed(device.type)
    file_handler: logging.Handler | None = None
    try:
        if ctx.is_main:
            file_handler = _prepare_run_dir(cfg, run_dir, resume)
        barrier(ctx)
        return _train(cfg, run_dir, resume, device, ctx)
    finally:
        if file_handler is not None:
            logging.getLogger("df2am").removeHandler(file_handler)
            file_handler.close()
        shutdown(ctx)


def _local_rank() -> int:
    from df2am.engine.distributed import env_world

    return env_world()[2]


def _prepare_run_dir(cfg: Config, run_dir: Path, resume: bool) -> logging.Handler:
    status = run_status(run_dir)
    if resume:
        if status == "empty":
            raise ConfigError(f"--resume {run_dir}: no run there (no config.yaml / checkpoints)")
        saved_path = run_dir / "config.yaml"
        if saved_path.is_file():
            import yaml

            saved = yaml.safe_load(saved_path.read_text()) or {}
            _check_resume_config(cfg, run_dir, saved)
    elif status != "empty":
        what = "a finished run" if status == "finished" else "an unfinished run"
        raise ConfigError(
            f"run directory {run_dir} already holds {what}; pass --resume {run_dir} to "
            "continue it or choose another --out"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    df2am_logger = logging.getLogger("df2am")
    df2am_logger.addHandler(handler)
    if df2am_logger.getEffectiveLevel() > logging.INFO:
        df2am_logger.setLevel(logging.INFO)
    return handler


def _train(
    cfg: Config, run_dir: Path, resume: bool, device: torch.device, ctx: DistContext
) -> TrainResult:
    from df2am.data.loader import build_train_loader
    from df2am.data.protocol import train_records
    from df2am.losses import build_loss
    from df2am.models import build_model

    tc = cfg.train
    configure_determinism(tc.deterministic)
    seed_everything(tc.seed)
    ckpt_dir = run_dir / "checkpoints"
    last_path = ckpt_dir / "last.pt"
    final_path = run_dir / "model_final.pt"

    ckpt: dict[str, Any] | None = None
    if resume and last_path.is_file():
        ckpt = load_checkpoint(last_path)
    start_epoch = int(ckpt["epoch"]) if ckpt is not None else 0
    finished = resume and final_path.is_file() and start_epoch >= tc.epochs
    if finished:
        logger.info("%s: run already finished (%d epochs); nothing to train", run_dir, start_epoch)
        return _finish_existing(cfg, run_dir, device, ctx, start_epoch)

    # ---- data
    if not cfg.data.root:
        raise ConfigError("data.root is empty: give the dataset folder, e.g. data.root=/data/SYSU")
    records = train_records(cfg.data.dataset, cfg.data.root, trial=cfg.data.trial)
    records, val_query, val_gallery = split_validation(records, tc.val_ids)
    cache_dir = resolve_cache_dir(cfg, run_dir)

    def make_loader() -> Any:
        return build_train_loader(
            records,
            cfg.data.root,
            cfg.data,
            cfg.sampler,
            seed=tc.seed,
            rank=ctx.rank,
            world_size=ctx.world_size,
            cache_dir=cache_dir,
            channels_last=tc.channels_last,
        )

    # Rank 0 builds the decoded-image cache first; the other ranks then only open it.
    loader = make_loader() if ctx.is_main else None
    barrier(ctx)
    if loader is None:
        loader = make_loader()
    num_classes = int(loader.num_classes)

    # ---- model, loss, optimizer
    model = build_model(cfg.model, num_classes).to(device)
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = build_loss(cfg.loss).to(device)
    step_module: nn.Module = _TrainStep(model, criterion)
    if ctx.distributed:
        # A head that no loss term reaches would stall DDP's gradient reduction.
        unused = not cfg.loss.use_baseline or (cfg.model.df2_module and not cfg.loss.use_df2)
        step_module = nn.parallel.DistributedDataParallel(
            step_module,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=unused,
        )
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim)
    scaler = make_grad_scaler(device, tc.precision)

    best: dict[str, Any] = {"epoch": 0, "mAP": -math.inf}
    val_history: list[dict[str, float]] = []
    if ckpt is not None:
        if int(ckpt["num_classes"]) != num_classes:
            raise Df2amError(
                f"{last_path}: checkpoint has {ckpt['num_classes']} classes, the data "
                f"{num_classes}; did data.root change to another dataset?"
            )
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("scaler") is not None:
            scaler.load_state_dict(ckpt["scaler"])
        if ckpt.get("sampler"):
            loader.load_state_dict(ckpt["sampler"])
        ranks = ckpt.get("rng_ranks") or [ckpt["rng"]]
        set_rng_state(ranks[ctx.rank] if len(ranks) == ctx.world_size else ranks[0])
        best = dict(ckpt.get("val_best") or best)
        val_history = list(ckpt.get("val_history") or [])
        logger.info("resuming %s after epoch %d", run_dir, start_epoch)
    elif resume:
        logger.info("%s: no checkpoints/last.pt yet; starting from epoch 1", run_dir)

    iters_per_epoch = len(loader)
    if tc.max_iters_per_epoch > 0:
        iters_per_epoch = min(iters_per_epoch, tc.max_iters_per_epoch)
    imgs_per_iter = 2 * cfg.sampler.num_ids * cfg.sampler.num_per_modality * ctx.world_size
    group_names = [str(g.get("name", i)) for i, g in enumerate(optimizer.param_groups)]
    logger.info(
        "training %d epochs x %d iterations (batch %d images on %d process(es)), %s, %s on %s",
        tc.epochs,
        iters_per_epoch,
        imgs_per_iter,
        ctx.world_size,
        f"ResNet-{cfg.model.depth}",
        tc.precision,
        device,
    )

    with MetricsLogger(run_dir, enabled=ctx.is_main) as mlog:
        for epoch in range(start_epoch, tc.epochs):
            ep_stats = _train_epoch(
                step_module,
                loader,
                optimizer,
                scaler,
                cfg,
                device,
                ctx,
                mlog,
                epoch=epoch,
                iters=iters_per_epoch,
                imgs_per_iter=imgs_per_iter,
                group_names=group_names,
            )
            scheduler.step()
            done = epoch + 1
            mlog.write({"event": "epoch", "epoch": done, **ep_stats}, step=done)

            val_due = tc.val_ids > 0 and (
                (tc.eval_every > 0 and done % tc.eval_every == 0) or done == tc.epochs
            )
            improved = False
            if val_due and ctx.is_main:
                metrics, align = _validate(
                    model, cfg, val_query, val_gallery, device=device, cache_dir=cache_dir
                )
                val_history.append({"epoch": done, **metrics})
                mlog.write({"event": "val", "epoch": done, **metrics}, step=done)
                logger.info(
                    "epoch %d validation: rank1 %.2f%% mAP %.2f%%; alignment: %s", done,
                    metrics["rank1"], metrics["mAP"], align.summary(),
                )
                if metrics["mAP"] > best["mAP"]:
                    best = {"epoch": done, "mAP": metrics["mAP"]}
                    improved = True

            # Every rank's RNG state, so a resumed DDP run continues every rank's streams.
            rngs = gather_objects(rng_state(), ctx)
            if ctx.is_main:
                state = _make_checkpoint(
                    model,
                    num_classes,
                    cfg,
                    done,
                    optimizer,
                    scheduler,
                    loader.state_dict(),
                    rngs,
                    scaler,
                    {"val_best": best, "val_history": val_history},
                )
                save_checkpoint(last_path, state)
                if done % max(tc.checkpoint_every, 1) == 0 or done == tc.epochs:
                    save_checkpoint(ckpt_dir / f"epoch_{done:03d}.pt", state)
                if improved:
                    save_checkpoint(ckpt_dir / "best.pt", state)
            barrier(ctx)

        # ---- the end: identical models on all ranks, the reported model, the test run
        broadcast_buffers(model, ctx)
        digest = state_digest(model)
        digests = gather_objects(digest, ctx)
        if ctx.distributed:
            mlog.write({"event": "ddp_check", "digests": digests, "agree": len(set(digests)) == 1})
            if len(set(digests)) != 1:
                raise RuntimeError(f"DDP ranks ended with different weights: {digests}")
        result = TrainResult(
            run_dir=run_dir,
            epochs_completed=tc.epochs,
            final_checkpoint=final_path,
            selected_by="last_epoch",
            selected_epoch=tc.epochs,
            val_history=val_history,
            resumed_from=start_epoch,
            digest=digest,
        )
        if ctx.is_main:
            _write_final(model, num_classes, cfg, run_dir, last_path, best, result)
            result.results = _final_test(cfg, run_dir, device, result, mlog)
    barrier(ctx)
    return result


def _train_epoch(
    step_module: nn.Module,
    loader: Any,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    cfg: Config,
    device: torch.device,
    ctx: DistContext,
    mlog: MetricsLogger,
    *,
    epoch: int,
    iters: int,
    imgs_per_iter: int,
    group_names: list[str],
) -> dict[str, Any]:
    """One epoch; returns the epoch record (mean loss and parts, lr, img/s, seconds)."""
    from tqdm import tqdm

    tc = cfg.train
    step_module.train()
    loader.set_epoch(epoch)
    lrs = {n: g["lr"] for n, g in zip(group_names, optimizer.param_groups, strict=True)}
    bar = tqdm(
        total=iters,
        desc=f"epoch {epoch + 1}/{tc.epochs}",
        # Off when stderr is not a terminal (sweep logs, CI): the per-epoch log line carries
        # the same numbers without hundreds of redrawn bars.
        disable=not ctx.is_main or not sys.stderr.isatty(),
        dynamic_ncols=True,
        leave=False,
    )
    non_blocking = device.type == "cuda"
    mem = torch.channels_last if tc.channels_last else torch.contiguous_format
    # Device-side accumulators: no host sync until a log step.
    win_total = torch.zeros((), device=device)
    win_parts: dict[str, torch.Tensor] = {}
    ep_total = torch.zeros((), device=device)
    ep_parts: dict[str, torch.Tensor] = {}
    win_n = 0
    start = time.perf_counter()
    win_start = start
    it = 0
    for batch in loader:
        if it >= iters:
            break
        rgb = batch.rgb.to(device, non_blocking=non_blocking).contiguous(memory_format=mem)
        ir = batch.ir.to(device, non_blocking=non_blocking).contiguous(memory_format=mem)
        labels = torch.cat([batch.rgb_labels, batch.ir_labels])
        labels = labels.to(device, non_blocking=non_blocking)
        with autocast_context(device, tc.precision):
            total, parts = step_module(rgb, ir, labels)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(total).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            total.backward()
            optimizer.step()
        total = total.detach().float()
        win_total += total
        ep_total += total
        for k, v in parts.items():
            v = v.detach().float()
            win_parts[k] = win_parts.get(k, torch.zeros((), device=device)) + v
            ep_parts[k] = ep_parts.get(k, torch.zeros((), device=device)) + v
        it += 1
        win_n += 1
        bar.update(1)
        if it % max(tc.log_every, 1) == 0 or it == iters:
            loss = win_total.item() / win_n  # the one host sync of a log window
            if not math.isfinite(loss):
                raise Df2amError(
                    f"the training loss became {loss} at epoch {epoch + 1}, iteration {it}; "
                    "lower optim.lr or use train.precision=fp32"
                )
            now = time.perf_counter()
            rec = {
                "event": "train",
                "epoch": epoch + 1,
                "iter": it,
                "global_iter": epoch * iters + it,
                "lr": lrs,
                "loss": loss,
                "parts": {k: v.item() / win_n for k, v in win_parts.items()},
                "img_per_s": win_n * imgs_per_iter / max(now - win_start, 1e-9),
            }
            mlog.write(rec, step=epoch * iters + it)
            bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{rec['img_per_s']:.0f}")
            win_total.zero_()
            win_parts = {}
            win_n = 0
            win_start = now
    bar.close()
    if it == 0:
        raise Df2amError(f"epoch {epoch + 1}: the training loader yielded no batch")
    seconds = time.perf_counter() - start
    stats = {
        "iters": it,
        "loss": ep_total.item() / it,
        "parts": {k: v.item() / it for k, v in ep_parts.items()},
        "lr": lrs,
        "img_per_s": it * imgs_per_iter / max(seconds, 1e-9),
        "seconds": seconds,
    }
    logger.info(
        "epoch %d/%d: loss %.4f (%s), %.0f img/s, %.1f s",
        epoch + 1,
        tc.epochs,
        stats["loss"],
        ", ".join(f"{k} {v:.4f}" for k, v in stats["parts"].items()),
        stats["img_per_s"],
        seconds,
    )
    return stats


def _write_final(
    model: nn.Module,
    num_classes: int,
    cfg: Config,
    run_dir: Path,
    last_path: Path,
    best: dict[str, Any],
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
    """Evaluate ``model_final.pt`` on the test protocol of ``cfg.eval`` → ``results.json``."""
    if not cfg.train.final_eval:
        logger.info("train.final_eval=false: no test evaluation")
        return None
    from df2am.engine.evaluator import evaluate_model, write_eval_outputs
    from df2am.models import build_model

    state = load_checkpoint(result.final_checkpoint)
    # pretrained="none": the trained weights replace the backbone's initialisation anyway.
    model_cfg = dataclasses.replace(cfg.model, pretrained="none")
    final_model = build_model(model_cfg, state["num_classes"])
    final_model.load_state_dict(state["model"])
    final_model.to(device)
    report = evaluate_model(
        final_model, cfg, cfg.data.root, device=device, cache_dir=resolve_cache_dir(cfg, run_dir)
    )
    extra = {
        "checkpoint": str(result.final_checkpoint),
        "selected_by": result.selected_by,
        "selected_epoch": result.selected_epoch,
    }
    write_eval_outputs(report, run_dir, extra=extra)
    metrics = report.metrics()
    if mlog is not None:
        mlog.write({"event": "test", **metrics})
    logger.info("test: rank1 %.2f%%, mAP %.2f%%, mINP %.2f%%", metrics["rank1"], metrics["mAP"],
                metrics["mINP"])
    return metrics


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
    if ctx.is_main:
        if results_path.is_file():
            doc = json.loads(results_path.read_text())
            result.results = {k: v for k, v in doc.items() if isinstance(v, (int, float))}
        else:
            result.results = _final_test(cfg, run_dir, device, result, None)
    barrier(ctx)
    return result


# --------------------------------------------------------------------------- RegDB trials


def train_trials(
    cfg: Config, run_dir: str | Path, trials: list[int], resume: bool = False
) -> Path:
    """RegDB's protocol (datasets with ``trial_per_model``): one model per trial, then the
    mean ± std over the trials.

    Trial t trains with ``data.trial=t`` into ``run_dir/trial_<t>`` (a finished trial is kept
    when ``resume``), is tested on its own ``test_*_<t>`` split, and the per-trial results are
    aggregated by :func:`df2am.evaluation.aggregate_trials` into ``run_dir/results.json``
    (``rank1`` … ``mINP`` in percent with ``_std`` twins, plus ``per_trial``).

    Example::

        cfg = load_config("configs/regdb.yaml", ["data.root=/data/RegDB"])
        train_trials(cfg, "runs/regdb", list(range(1, 11)))   # runs/regdb/results.json
    """
    from df2am.data.datasets import get_dataset
    from df2am.engine.distributed import env_world

    ds = get_dataset(cfg.data.dataset)
    if not ds.trial_per_model:
        raise ConfigError(
            f"--trials trains one model per trial of datasets with a training split per trial "
            f"(RegDB); for {ds.title} the trials are gallery draws of one model (eval.trials)"
        )
    if not cfg.train.final_eval:
        raise ConfigError("--trials aggregates test results: train.final_eval must be true")
    run_dir = Path(run_dir)
    results: list[Any] = []
    per_trial: list[dict[str, Any]] = []
    for t in trials:
        cfg_t = config_from_dict(config_to_dict(cfg))
        cfg_t.data.trial = t
        cfg_t.validate()
        trial_dir = run_dir / f"trial_{t}"
        logger.info("%s trial %d → %s", ds.title, t, trial_dir)
        train(cfg_t, trial_dir, resume=resume and run_status(trial_dir) != "empty")
        if env_world()[0] == 0:
            res, row = _trial_result(trial_dir / "results.json", t)
            results.append(res)
            per_trial.append(row)
    summary_path = run_dir / "results.json"
    if env_world()[0] == 0:
        from df2am.evaluation import aggregate_trials

        summary = aggregate_trials(results)
        doc: dict[str, Any] = {
            **summary.to_dict(),
            "protocol": {
                "dataset": ds.name,
                "direction": cfg.eval.direction,
                "trials": trials,
                "metric": cfg.eval.metric,
                "feature": cfg.model.test_feature,
                "flip": cfg.model.flip_test,
                "rerank": cfg.eval.rerank,
                "metric_rule": ds.metric_rule,
            },
            "per_trial": per_trial,
            "cmc": {
                "rank": list(range(1, len(summary.cmc_mean) + 1)),
                "mean": [float(x) * 100 for x in summary.cmc_mean],
                "std": [float(x) * 100 for x in summary.cmc_std],
            },
        }
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = summary_path.with_name(summary_path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        tmp.replace(summary_path)
        logger.info("wrote %s (mean over %d trial(s))", summary_path, len(trials))
    return summary_path


def _trial_result(path: Path, trial: int) -> tuple[Any, dict[str, Any]]:
    """Rebuild the :class:`~df2am.evaluation.EvalResult` of one trial from its results.json."""
    from df2am.evaluation import EvalResult

    if not path.is_file():
        raise Df2amError(f"{path}: missing; trial {trial} has no test result")
    doc = json.loads(path.read_text())
    try:
        cmc = np.asarray(doc["cmc"]["mean"], dtype=np.float64) / 100.0
        nv = int(doc["per_trial"][0]["num_valid_queries"])
        res = EvalResult(cmc, float(doc["mAP"]) / 100.0, float(doc["mINP"]) / 100.0, nv)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise Df2amError(f"{path}: not a results.json of df2am ({exc!r})") from None
    row = {"trial": trial, **res.to_dict(), "num_valid_queries": nv, "run_dir": str(path.parent)}
    return res, row
