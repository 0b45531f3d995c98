"""The training engine: the recipe of method.md ("Training recipe", paper §4.1) as one call.

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
  :data:`RESUME_OVERRIDABLE` keys may differ (the others say where it runs and do not change
  the arithmetic). A resume refuses a ``config.yaml`` edited by hand (naming the keys), weights
  that do not fit the config, and a shorter schedule; a longer ``train.epochs`` needs
  ``extend=True`` (``df2am train --resume RUN --extend train.epochs=N``) and is recorded in
  train.log, metrics.jsonl and the checkpoints' ``history``.
* Phases: ``_train`` reads build → restore → (epoch → validate → checkpoint)* → finish, as
  fast-reid's trainer does; what they share is one ``_Run`` (fixed) and one ``TrainState``.
* Before epoch 1: the precision is resolved (``precision=auto``; emulated bf16 refused unless
  ``train.allow_slow_bf16``), the final test split is built (a missing test folder fails now,
  not after training) and train/test identities must not overlap.
* Safety: a run lock (``RUN/.lock``, pid + host; a stale one is replaced) refuses a second
  process on one run directory; leftover ``.*.tmp`` files are removed at start and an epoch
  checkpoint a kill interrupted is rewritten on resume; checkpoints get the umask's
  permissions; a disk-full write names the file and keeps the previous checkpoint; a
  non-finite loss, or one above ``train.divergence_factor`` × the running median, stops the
  run naming epoch, step and learning rate, and non-finite weights are never checkpointed.
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
import logging
import math
import os
import statistics
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from df2am.assess.results import (
    read_results,
    summary_metrics,
    trial_result,
    write_results,
)
from df2am.atomic import TMP_GLOB
from df2am.config import (
    Config,
    complete_config_dict,
    config_from_dict,
    config_to_dict,
    save_config,
)
from df2am.data.records import ImageRecord
from df2am.data.validation import split_validation
from df2am.device import resolve_device
from df2am.errors import CheckpointError, ConfigError, DatasetError, Df2amError
from df2am.evaluation import AlignmentReport
from df2am.train import runlock
from df2am.train.checkpoint import (
    first_non_finite,
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
    gather_objects,
    init_distributed,
    shutdown,
    state_digest,
)
from df2am.train.metrics_log import MetricsLogger
from df2am.train.optim import build_optimizer, build_scheduler
from df2am.train.precision import (
    autocast_context,
    configure_determinism,
    make_grad_scaler,
    resolve_precision,
    seed_everything,
)
from df2am.train.rundir import run_status

__all__ = [
    "TrainResult",
    "TrainingDivergedError",
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


#: Steps of finite losses the divergence check's running median needs before it judges.
DIVERGENCE_WARMUP_STEPS = 20
#: How many recent step losses the running median is taken over.
DIVERGENCE_WINDOW = 200


class TrainingDivergedError(Df2amError):
    """The training loss became non-finite or exploded (``train.divergence_factor``), or the
    weights to checkpoint are non-finite; nothing non-finite is written."""


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


# --------------------------------------------------------------------------- validation


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
    from df2am.assess.evaluator import extract_records
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
    model: nn.Module
    step_module: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    iters_per_epoch: int = 0
    imgs_per_iter: int = 0
    group_names: list[str] = field(default_factory=list)
    recent_losses: deque[float] = field(default_factory=lambda: deque(maxlen=DIVERGENCE_WINDOW))

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
            for :data:`RESUME_OVERRIDABLE` keys (the CLI loads it from there).
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
        RunLocked: another live process trains in ``run_dir`` (``run_dir/.lock``).
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
    _check_path_text(run_dir)
    device = resolve_device(cfg.train.device, _local_rank())
    # The hardware rule of train.precision, before anything is written. The run records the
    # concrete value (config.yaml, checkpoints): a resume on other hardware re-checks it
    # instead of letting "auto" pick another precision mid-run.
    requested = cfg.train.precision
    precision, reason = resolve_precision(
        requested, device, allow_slow_bf16=cfg.train.allow_slow_bf16
    )
    cfg.train.precision = precision
    ctx = init_distributed(device.type)
    file_handler: logging.Handler | None = None
    lock: Path | None = None
    notes: list[dict[str, Any]] = []
    try:
        if ctx.is_main:
            lock = runlock.acquire(run_dir)
            file_handler, notes = _prepare_run_dir(
                cfg, run_dir, resume, requested=requested, extend=extend
            )
            logger.info("precision: %s", reason)
            notes.insert(0, {"event": "precision", "requested": requested,
                             "precision": precision, "reason": reason})
        barrier(ctx)
        return _train(cfg, run_dir, resume, device, ctx, notes)
    finally:
        if file_handler is not None:
            logging.getLogger("df2am").removeHandler(file_handler)
            file_handler.close()
        if lock is not None:
            runlock.release(lock)
        shutdown(ctx)


def _check_path_text(run_dir: Path) -> None:
    """Spaces and any Unicode are fine; a name that is not valid UTF-8 (an undecodable byte,
    which Python holds as a surrogate) is refused: TensorBoard, the logs and results.json
    store the path as text."""
    try:
        str(run_dir.absolute()).encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(
            f"run directory {os.fsencode(run_dir)!r}: the name is not valid UTF-8 (TensorBoard, "
            "train.log and results.json store it as text); choose another --out"
        ) from None


def _local_rank() -> int:
    from df2am.train.distributed import env_world

    return env_world()[2]


def _prepare_run_dir(
    cfg: Config, run_dir: Path, resume: bool, *, requested: str, extend: bool
) -> tuple[logging.Handler, list[dict[str, Any]]]:
    """Rank 0, holding the run lock: the fresh/resume checks, ``config.yaml``, ``train.log``,
    the removal of a killed writer's temp files; the records for ``metrics.jsonl``."""
    status = run_status(run_dir)
    finished = status in ("trained", "finished")
    notes: list[dict[str, Any]] = []
    if resume:
        if status == "empty":
            raise ConfigError(f"--resume {run_dir}: no run there (no config.yaml / checkpoints)")
        notes = _check_resume(cfg, run_dir, requested=requested, extend=extend)
    elif status != "empty":
        what = "a finished run" if finished else "an unfinished run"
        raise ConfigError(
            f"run directory {run_dir} already holds {what}; pass --resume {run_dir} to "
            "continue it or choose another --out"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    handler = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    df2am_logger = logging.getLogger("df2am")
    df2am_logger.addHandler(handler)
    if df2am_logger.getEffectiveLevel() > logging.INFO:
        df2am_logger.setLevel(logging.INFO)
    _remove_debris(run_dir)
    for note in notes:
        if note["event"] == "extend":
            logger.warning(
                "%s: extending the run from %d to %d epochs (--extend), after epoch %d",
                run_dir, note["from_epochs"], note["to_epochs"], note["at_epoch"],
            )
    return handler, notes


def _remove_debris(run_dir: Path) -> None:
    """Remove the ``.<name>.tmp`` files a killed write left in the run dir and checkpoints/
    (we hold the run lock: no writer of this run is alive)."""
    for folder in (run_dir, run_dir / "checkpoints"):
        for tmp in sorted(folder.glob(TMP_GLOB)) if folder.is_dir() else []:
            if tmp.is_file():
                tmp.unlink()
                logger.warning("removed %s (left by an interrupted write)", tmp)


def _saved_config(path: Path, what: str) -> dict[str, Any]:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the run's {what} ({exc})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the run's {what} is not a mapping")
    return doc


def _check_resume(
    cfg: Config, run_dir: Path, *, requested: str, extend: bool
) -> list[dict[str, Any]]:
    """The resume checks: ``cfg`` vs ``config.yaml``, ``config.yaml`` vs ``last.pt``'s config
    (a hand edit), the schedule (never shorter than trained; longer only with ``extend``).
    Returns the ``extend`` record when the run is extended."""
    saved_path = run_dir / "config.yaml"
    last_path = run_dir / "checkpoints" / "last.pt"
    saved: dict[str, Any] | None = None
    if saved_path.is_file():
        saved = _saved_config(saved_path, "config.yaml")
        train_sec = saved.get("train")
        # A run from before precision was recorded resolved: its "auto" is what was asked.
        if isinstance(train_sec, dict) and train_sec.get("precision") == requested:
            saved = {**saved, "train": {**train_sec, "precision": cfg.train.precision}}
        _check_resume_config(cfg, run_dir, saved)
    ckpt = load_checkpoint(last_path) if last_path.is_file() else None
    if ckpt is None:
        return []
    if saved is not None:
        yaml_cfg = complete_config_dict(saved, source=str(saved_path))
        ckpt_cfg = complete_config_dict(dict(ckpt["config"]), source=str(last_path))
        # Keys a resume may change legitimately were rewritten in config.yaml by an earlier
        # resume that crashed before its first checkpoint.
        edited = [k for k in _config_diff(yaml_cfg, ckpt_cfg) if k not in RESUME_OVERRIDABLE]
        if edited:
            raise ConfigError(
                f"{saved_path} differs from the config the run trained with "
                f"({last_path}) in: {', '.join(edited)} — was config.yaml edited by hand? "
                "Restore it, or start a new run (another --out) with the new settings"
            )
    trained = int(ckpt["epoch"])
    planned = int(ckpt["config"].get("train", {}).get("epochs", trained))
    want = cfg.train.epochs
    if want < trained:
        raise ConfigError(
            f"{run_dir}: train.epochs={want} but the run has already trained {trained} "
            "epochs; a schedule cannot be shortened on resume (the epoch_XXX.pt checkpoints "
            "hold earlier epochs)"
        )
    if want > planned:
        if not extend:
            raise ConfigError(
                f"{run_dir}: train.epochs={want} extends the run's schedule of {planned} "
                f"epochs ({trained} trained); pass --extend to do so (it is recorded in the "
                "run), or resume with the run's own train.epochs"
            )
        return [{"event": "extend", "from_epochs": planned, "to_epochs": want,
                 "at_epoch": trained, "time": time.time()}]
    return []


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


def _build(cfg: Config, run_dir: Path, device: torch.device, ctx: DistContext) -> _Run:
    """Build phase: the data (training records less the validation ids, the loader), then the
    model, loss, optimizer, scheduler and grad scaler."""
    from df2am.data.protocol import train_records

    if not cfg.data.root:
        raise ConfigError("data.root is empty: give the dataset folder, e.g. data.root=/data/SYSU")
    records = train_records(cfg.data.dataset, cfg.data.root, trial=cfg.data.trial)
    if cfg.train.final_eval and ctx.is_main:
        _check_test_split(cfg, records, device)
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


def _check_test_split(cfg: Config, records: list[ImageRecord], device: torch.device) -> None:
    """The final evaluation's test split, built now (a missing test folder or a bad split file
    fails before epoch 1), and the train/test identity overlap check.

    Identities are compared by the dataset's ``identity_key`` (SYSU-MM01: the id; RegDB, whose
    idx labels are per split: the person folder); a dataset whose training records carry no
    comparable identity (LLCM's labels) is not checked.
    """
    from df2am.assess.evaluator import build_eval_splits
    from df2am.data.datasets import get_dataset

    test = build_eval_splits(cfg, device=device)
    ds = get_dataset(cfg.data.dataset)
    train_ids = {k for r in records if (k := ds.identity_key(r)) is not None}
    if not train_ids:
        logger.debug("%s: training records carry no comparable identity; no train/test "
                     "overlap check", ds.title)
        return
    test_ids = {ds.identity_key(r) for q, g in test.splits for r in (*q, *g)}
    common = sorted(train_ids & test_ids, key=str)
    if common:
        shown = ", ".join(map(str, common[:5])) + (" ..." if len(common) > 5 else "")
        what = f"{ds.identity_name}(s)"
        raise DatasetError(
            f"{ds.title} at {cfg.data.root}: {len(common)} training {what} also in the test "
            f"split (trials {test.trial_ids}): {shown}; the training and test identities "
            "must be disjoint (check the split files)"
        )


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
    loader = make_loader() if ctx.is_main else None
    barrier(ctx)
    return make_loader() if loader is None else loader


def _build_model(
    cfg: Config, num_classes: int, device: torch.device, ctx: DistContext
) -> tuple[nn.Module, nn.Module]:
    """The model and the module that trains it (model + loss, DDP-wrapped under DDP)."""
    from df2am.losses import build_loss
    from df2am.models import build_model

    model = build_model(cfg.model, num_classes).to(device)
    if cfg.train.channels_last:
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
    _check_weights(run, ckpt["model"])
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
    if run.ctx.is_main:
        _rewrite_epoch_checkpoint(run, ckpt)
    return state


def _check_weights(run: _Run, saved: dict[str, Any]) -> None:
    """The checkpoint's weights against a model built from the config: the first key that is
    missing, unexpected or of another shape is named."""
    built = run.model.state_dict()
    for key, value in built.items():
        if key not in saved:
            problem = f"lacks '{key}'"
        elif tuple(saved[key].shape) != tuple(value.shape):
            problem = (f"has '{key}' of shape {tuple(saved[key].shape)}, the config's model "
                       f"{tuple(value.shape)}")
        else:
            continue
        break
    else:
        extra = [k for k in saved if k not in built]
        if not extra:
            return
        problem = f"has '{extra[0]}', which the config's model does not"
    raise CheckpointError(
        f"{run.last_path}: the weights do not match the config's model (ResNet-"
        f"{run.cfg.model.depth}, {run.num_classes} classes): the checkpoint {problem}; "
        "resume with the config the run was trained with"
    )


def _rewrite_epoch_checkpoint(run: _Run, ckpt: dict[str, Any]) -> None:
    """A kill between ``last.pt`` and ``epoch_XXX.pt`` leaves the latter missing (or, from
    older writers, truncated): write it again from ``last.pt``'s state."""
    done = int(ckpt["epoch"])
    planned = int(ckpt["config"].get("train", {}).get("epochs", done))
    if done % max(run.cfg.train.checkpoint_every, 1) != 0 and done != planned:
        return
    path = run.ckpt_dir / f"epoch_{done:03d}.pt"
    if path.is_file():
        try:
            if int(load_checkpoint(path)["epoch"]) == done:
                return
        except CheckpointError as exc:
            logger.warning("%s", exc)
    save_checkpoint(path, ckpt)
    logger.warning("rewrote %s from %s (its write was interrupted)", path, run.last_path)


def _log_plan(run: _Run) -> None:
    """The iterations per epoch and images per iteration (into ``run``), and their log line."""
    cfg, tc = run.cfg, run.cfg.train
    run.iters_per_epoch = len(run.loader)
    if tc.max_iters_per_epoch > 0:
        run.iters_per_epoch = min(run.iters_per_epoch, tc.max_iters_per_epoch)
    run.imgs_per_iter = (
        2 * cfg.sampler.num_ids * cfg.sampler.num_per_modality * run.ctx.world_size
    )
    run.group_names = [str(g.get("name", i)) for i, g in enumerate(run.optimizer.param_groups)]
    logger.info(
        "training %d epochs x %d iterations (batch %d images on %d process(es)), %s, %s on %s",
        tc.epochs,
        run.iters_per_epoch,
        run.imgs_per_iter,
        run.ctx.world_size,
        f"ResNet-{cfg.model.depth}",
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
    steps = torch.stack(window.steps).tolist() if window.steps else [window.total.item()]
    _check_divergence(run, mlog, steps, epoch, it - len(steps) + 1, lrs)
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


def _check_divergence(
    run: _Run,
    mlog: MetricsLogger,
    steps: list[float],
    epoch: int,
    first_it: int,
    lrs: dict[str, float],
) -> None:
    """:class:`TrainingDivergedError` on a non-finite step loss, or (``train.divergence_factor``
    f > 0) one above f × the running median of the last :data:`DIVERGENCE_WINDOW` step losses
    (judged after :data:`DIVERGENCE_WARMUP_STEPS` steps; the median restarts on resume)."""
    factor = float(run.cfg.train.divergence_factor)
    recent = run.recent_losses
    for i, value in enumerate(steps):
        if not math.isfinite(value):
            why = f"the loss became {value}"
        elif factor > 0 and len(recent) >= DIVERGENCE_WARMUP_STEPS and (
            value > factor * (median := statistics.median(recent))
        ):
            why = (f"the loss {value:.4g} exceeds train.divergence_factor={factor:g} x its "
                   f"running median {median:.4g}")
        else:
            recent.append(value)
            continue
        it = first_it + i
        lr = ", ".join(f"{k} {v:.3g}" for k, v in lrs.items())
        hint = (f"; with train.precision={run.cfg.train.precision} also try fp32"
                if run.cfg.train.precision != "fp32" else "")
        mlog.write({"event": "diverged", "epoch": epoch + 1, "iter": it, "loss": value,
                    "lr": lrs}, step=epoch * run.iters_per_epoch + it)
        raise TrainingDivergedError(
            f"training diverged at epoch {epoch + 1}, step {it}/{run.iters_per_epoch}: {why}. "
            f"Likely cause: a learning rate too high for this run (current lr: {lr}; "
            f"optim.lr={run.cfg.optim.lr:g}): lower optim.lr or lengthen "
            f"optim.warmup_epochs{hint}. Epoch {epoch + 1} was not checkpointed; "
            f"{run.last_path} holds the last finished epoch"
        )


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
    if not due or not run.ctx.is_main:
        return
    metrics, align = _validate(
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
    done = state.epoch
    if run.ctx.is_main:
        bad = first_non_finite(run.model.state_dict())
        if bad is not None:
            raise TrainingDivergedError(
                f"epoch {done}: the model's '{bad}' holds NaN/inf values; not writing a "
                f"checkpoint of non-finite weights ({run.last_path} keeps epoch {done - 1}). "
                f"Lower optim.lr (now {run.cfg.optim.lr:g})"
            )
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
            {"val_best": state.best, "val_history": state.val_history,
             "history": state.history},
        )
        save_checkpoint(run.last_path, ckpt)
        if done % max(run.cfg.train.checkpoint_every, 1) == 0 or done == run.cfg.train.epochs:
            save_checkpoint(run.ckpt_dir / f"epoch_{done:03d}.pt", ckpt)
        if state.improved:
            save_checkpoint(run.ckpt_dir / "best.pt", ckpt)
    barrier(run.ctx)


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
    if ctx.is_main:
        _write_final(run.model, run.num_classes, run.cfg, run.run_dir, run.last_path, result)
        result.results = _final_test(run.cfg, run.run_dir, run.device, result, mlog)
    return result


def _write_final(
    model: nn.Module,
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
    """Evaluate ``model_final.pt`` on the test protocol of ``cfg.eval`` → ``results.json``."""
    if not cfg.train.final_eval:
        logger.info("train.final_eval=false: no test evaluation")
        return None
    from df2am.assess.evaluator import evaluate_model, write_eval_outputs
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
            result.results = summary_metrics(read_results(results_path))
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
    from df2am.train.distributed import env_world

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
            res, row = trial_result(trial_dir / "results.json", t)
            results.append(res)
            per_trial.append(row)
    summary_path = run_dir / "results.json"  # written by results.write_results
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
        write_results(run_dir, doc)
        logger.info("wrote %s (mean over %d trial(s))", summary_path, len(trials))
    return summary_path
