"""The one module that reads and writes a run's ``results.json`` (and its ``metrics.json``).

::

    from df2am.assess.results import read_metrics, read_results, write_results

    write_results("runs/sysu", doc)                 # runs/sysu/results.json, atomically
    read_metrics("runs/sysu/results.json")         # {"rank1": ..., "rank1_std": ..., ...}

The file (written by :func:`df2am.assess.evaluator.write_eval_outputs`, the trainer's final
test, ``df2am train --trials`` and the demo): the summary at the top level — the
:data:`METRIC_KEYS` in percent, each with a ``_std`` twin — plus ``protocol``, ``per_trial``,
``cmc`` (``rank``/``mean``/``std``, percent), ``seconds`` and the writer's extra keys.

Whether a run directory is finished is :func:`df2am.train.rundir.run_status` (it reads
``results.json``'s presence and the training checkpoint, whose format the training owns).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from df2am.atomic import atomic_write_text
from df2am.errors import Df2amError
from df2am.evaluation.metrics import METRIC_KEYS

__all__ = [
    "METRIC_KEYS",
    "RESULTS_NAME",
    "read_metrics",
    "read_results",
    "summary_metrics",
    "trial_result",
    "write_json",
    "write_results",
]

# The metric keys of ``results.json`` / ``metrics.json`` (percent), each with a ``_std`` twin:
# owned by the evaluation room, which defines the metrics.

#: A run directory's test result.
RESULTS_NAME = "results.json"

# --------------------------------------------------------------------------- writing


def write_json(path: str | Path, doc: dict[str, Any]) -> Path:
    """``doc`` as indented JSON (one trailing newline) at ``path``, atomically."""
    p = Path(path)
    atomic_write_text(p, json.dumps(doc, indent=2) + "\n")
    return p


def write_results(out_dir: str | Path, doc: dict[str, Any], name: str = "results") -> Path:
    """Write ``<out_dir>/<name>.json`` (the folder is created); returns the path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return write_json(out / f"{name}.json", doc)


# --------------------------------------------------------------------------- reading


def read_results(path: str | Path) -> dict[str, Any]:
    """The whole document of a ``results.json`` (json errors propagate)."""
    return json.loads(Path(path).read_text())  # type: ignore[no-any-return]


def summary_metrics(doc: dict[str, Any]) -> dict[str, Any]:
    """The top-level numbers of a results document (the summary; ``selected_epoch``, ...)."""
    return {k: v for k, v in doc.items() if isinstance(v, (int, float))}


def read_metrics(path: str | Path, error: type[Exception] = Df2amError) -> dict[str, float]:
    """The metrics (percent) of one results JSON of ``df2am train`` / ``df2am eval``.

    The metrics sit at the top level (or, in a ``summary`` mapping) as ``rank1``, ``rank5``,
    ``rank10``, ``rank20``, ``mAP``, ``mINP`` with ``_std`` twins. ``rank1`` and ``mAP`` are
    required; other keys are read when present (booleans are not numbers here).

    Raises:
        ``error`` (default :class:`~df2am.errors.Df2amError`; the sweep passes its
        ``SweepError``): the file is unreadable, not JSON, or has no numeric rank1/mAP.
    """
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise error(f"{p}: cannot read results ({exc})") from None
    if isinstance(doc, dict) and isinstance(doc.get("summary"), dict):
        doc = doc["summary"]
    if not isinstance(doc, dict) or not all(
        isinstance(doc.get(k), (int, float)) for k in ("rank1", "mAP")
    ):
        raise error(f"{p}: not a df2am results file (no numeric rank1/mAP)")
    out: dict[str, float] = {}
    for key in METRIC_KEYS:
        for k in (key, f"{key}_std"):
            if isinstance(doc.get(k), (int, float)) and not isinstance(doc.get(k), bool):
                out[k] = float(doc[k])
    return out


def trial_result(path: str | Path, trial: int) -> tuple[Any, dict[str, Any]]:
    """The :class:`~df2am.evaluation.EvalResult` of one RegDB trial rebuilt from its
    results.json, and its ``per_trial`` row (``trial``, metrics, ``num_valid_queries``,
    ``run_dir``)."""
    import numpy as np

    from df2am.evaluation import EvalResult

    path = Path(path)
    if not path.is_file():
        raise Df2amError(f"{path}: missing; trial {trial} has no test result")
    doc = read_results(path)
    try:
        cmc = np.asarray(doc["cmc"]["mean"], dtype=np.float64) / 100.0
        nv = int(doc["per_trial"][0]["num_valid_queries"])
        res = EvalResult(cmc, float(doc["mAP"]) / 100.0, float(doc["mINP"]) / 100.0, nv)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise Df2amError(f"{path}: not a results.json of df2am ({exc!r})") from None
    row = {"trial": trial, **res.to_dict(), "num_valid_queries": nv, "run_dir": str(path.parent)}
    return res, row
