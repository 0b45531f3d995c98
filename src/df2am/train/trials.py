"""RegDB's protocol (datasets with ``trial_per_model``): one model per trial, then the mean.

::

    from df2am.config import load_config
    from df2am.train.trials import train_trials

    cfg = load_config("configs/regdb.yaml", ["data.root=/data/RegDB"])
    train_trials(cfg, "runs/regdb", list(range(1, 11)))   # runs/regdb/results.json

(``df2am train configs/regdb.yaml --trials 1-10``.) SYSU-MM01 and LLCM test one model on
gallery draws instead (``eval.trials``): :func:`df2am.train.train` does that itself.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from df2am.assess.results import trial_result, write_results
from df2am.config import Config, config_from_dict, config_to_dict
from df2am.errors import ConfigError
from df2am.train import trainer
from df2am.train.distributed import env_world
from df2am.train.rundir import run_status

__all__ = ["train_trials"]

logger = logging.getLogger(__name__)


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
        # Through the module, so that a test (or a wrapper) replacing trainer.train is used.
        trainer.train(cfg_t, trial_dir, resume=resume and run_status(trial_dir) != "empty")
        if env_world()[0] == 0:
            res, row = trial_result(trial_dir / "results.json", t)
            results.append(res)
            per_trial.append(row)
    summary_path = run_dir / "results.json"  # written by results.write_results
    if env_world()[0] == 0:
        write_results(run_dir, _summary(cfg, ds, trials, results, per_trial))
        logger.info("wrote %s (mean over %d trial(s))", summary_path, len(trials))
    return summary_path


def _summary(
    cfg: Config, ds: Any, trials: list[int], results: list[Any], per_trial: list[dict[str, Any]]
) -> dict[str, Any]:
    """The ``results.json`` of the trials: their mean ± std, the protocol, each trial, the CMC."""
    from df2am.evaluation import aggregate_trials

    summary = aggregate_trials(results)
    return {
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
