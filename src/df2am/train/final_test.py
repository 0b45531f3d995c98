"""The final test: checked before epoch 1, run once on the reported model at the end.

* :func:`check_test_split` (rank 0, before training): the test split of ``cfg.eval`` is built
  now (:func:`df2am.assess.build_eval_splits`), so a missing test folder or a bad split file
  fails before epoch 1, not after training; and training and test identities must not overlap.
* :func:`run_final_test`: ``model_final.pt`` through the test protocol of ``cfg.eval``
  (:func:`df2am.assess.evaluate_model`) → ``results.json`` + ``cmc.png`` in the run directory
  and a ``test`` record in ``metrics.jsonl``. The test set is evaluated once, at the end; it
  never selects a model.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from df2am.config import Config
from df2am.data.records import ImageRecord
from df2am.errors import DatasetError
from df2am.train.checkpoint import load_checkpoint
from df2am.train.metrics_log import MetricsLogger
from df2am.train.rundir import resolve_cache_dir

__all__ = ["check_test_split", "run_final_test"]

logger = logging.getLogger(__name__)


def check_test_split(cfg: Config, records: list[ImageRecord], device: torch.device) -> None:
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


def run_final_test(
    cfg: Config,
    run_dir: Path,
    device: torch.device,
    *,
    checkpoint: Path,
    selected_by: str,
    selected_epoch: int,
    mlog: MetricsLogger | None,
) -> dict[str, Any] | None:
    """Evaluate ``checkpoint`` (``model_final.pt``, the model selected ``selected_by`` at
    ``selected_epoch``) on the test protocol of ``cfg.eval`` → ``results.json``; the summary
    metrics (percent), or None with ``train.final_eval=false``."""
    if not cfg.train.final_eval:
        logger.info("train.final_eval=false: no test evaluation")
        return None
    from df2am.assess.evaluator import evaluate_model, write_eval_outputs
    from df2am.models import build_model

    state = load_checkpoint(checkpoint)
    # pretrained="none": the trained weights replace the backbone's initialisation anyway.
    model_cfg = dataclasses.replace(cfg.model, pretrained="none")
    final_model = build_model(model_cfg, state["num_classes"])
    final_model.load_state_dict(state["model"])
    final_model.to(device)
    report = evaluate_model(
        final_model, cfg, cfg.data.root, device=device, cache_dir=resolve_cache_dir(cfg, run_dir)
    )
    extra = {
        "checkpoint": str(checkpoint),
        "selected_by": selected_by,
        "selected_epoch": selected_epoch,
    }
    write_eval_outputs(report, run_dir, extra=extra)
    metrics = report.metrics()
    if mlog is not None:
        mlog.write({"event": "test", **metrics})
    logger.info("test: rank1 %.2f%%, mAP %.2f%%, mINP %.2f%%", metrics["rank1"], metrics["mAP"],
                metrics["mINP"])
    return metrics
