"""Training: the loop and what keeps a run safe, resumable and reproducible.

::

    from df2am.config import load_config
    from df2am.train import train

    cfg = load_config("configs/sysu.yaml", ["data.root=/data/SYSU-MM01"])
    result = train(cfg, "runs/sysu")               # TrainResult; runs/sysu/model_final.pt

Modules:

* :mod:`~df2am.train.trainer`: the loop, in phases (build, restore, epoch, validate,
  checkpoint, finish);
* what keeps a run safe: :mod:`~df2am.train.rundir` (where a run stands, its lock, debris,
  ``config.yaml`` and ``train.log``), :mod:`~df2am.train.runlock` (the lock file),
  :mod:`~df2am.train.resume` (what a resume refuses), :mod:`~df2am.train.divergence` (a loss
  or weights that stop being numbers);
* what a run is made of: :mod:`~df2am.train.checkpoint` (the checkpoint format),
  :mod:`~df2am.train.optim`, :mod:`~df2am.train.precision`, :mod:`~df2am.train.distributed`,
  :mod:`~df2am.train.metrics_log` (``metrics.jsonl`` + TensorBoard);
* what it reports: :mod:`~df2am.train.validate` (model selection on held-out ids),
  :mod:`~df2am.train.final_test` (the test of the reported model), :mod:`~df2am.train.trials`
  (RegDB: one model per trial).

Names are imported lazily (``df2am.train.train`` does not import torchvision, TensorBoard or
the evaluator until used), so ``import df2am.train`` stays cheap for the CLI.
"""

from __future__ import annotations

from df2am.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "train": "df2am.train.trainer",
    "TrainResult": "df2am.train.trainer",
    "TrainState": "df2am.train.trainer",
    "train_trials": "df2am.train.trials",
    "TrainingDivergedError": "df2am.train.divergence",
    "RESUME_OVERRIDABLE": "df2am.train.resume",
    "run_status": "df2am.train.rundir",
    "resolve_cache_dir": "df2am.train.rundir",
    "save_checkpoint": "df2am.train.checkpoint",
    "load_checkpoint": "df2am.train.checkpoint",
    "FORMAT_VERSION": "df2am.train.checkpoint",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
