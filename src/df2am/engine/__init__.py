"""The engine: training loop, checkpoints, precision, DDP, logging; evaluation runs.

::

    from df2am.config import load_config
    from df2am.engine import train, load_model

    cfg = load_config("configs/sysu.yaml", ["data.root=/data/SYSU-MM01"])
    result = train(cfg, "runs/sysu")               # TrainResult; runs/sysu/model_final.pt
    model, cfg = load_model(result.final_checkpoint)

Names are imported lazily (``df2am.engine.train`` does not import torchvision, TensorBoard or
the evaluator until used), so ``import df2am.engine`` stays cheap for the CLI.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # training (engine.trainer)
    "train": "df2am.train.trainer",
    "TrainResult": "df2am.train.trainer",
    "run_status": "df2am.train.rundir",
    # checkpoints (engine.checkpoint)
    "save_checkpoint": "df2am.train.checkpoint",
    "load_checkpoint": "df2am.train.checkpoint",
    "FORMAT_VERSION": "df2am.train.checkpoint",
    # evaluation (engine.evaluator / engine.api)
    "evaluate_model": "df2am.assess.evaluator",
    "write_eval_outputs": "df2am.assess.evaluator",
    "EvalReport": "df2am.assess.evaluator",
    "format_table": "df2am.assess.evaluator",
    "load_model": "df2am.deploy.api",
    "extract_features": "df2am.deploy.api",
    "search": "df2am.deploy.api",
    "evaluate_checkpoint": "df2am.deploy.api",
    # the demo and sweeps
    "run_demo": "df2am.experiments.demo",
    "DemoResult": "df2am.experiments.demo",
    "run_sweep": "df2am.experiments.sweep",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'df2am.engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
