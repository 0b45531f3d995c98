"""Run logs: ``metrics.jsonl`` (one JSON object per line) and TensorBoard scalars.

Record kinds written by the trainer (``"event"`` key):

* ``"train"`` — every ``train.log_every`` iterations and at the end of each epoch:
  ``epoch`` (1-based), ``iter`` (in the epoch, 1-based), ``global_iter``, ``lr`` (dict group
  name → rate), ``loss`` (mean total over the logged window), ``parts`` (dict name → mean of
  that weighted loss term), ``img_per_s`` (images of both modalities per second);
* ``"epoch"`` — once per epoch: ``epoch``, ``iters``, ``loss``, ``parts``, ``lr``,
  ``img_per_s``, ``seconds``;
* ``"val"`` — validation metrics (percent) after an evaluation epoch;
* ``"ddp_check"`` — the per-rank SHA-256 of the final weights (multi-process runs);
* ``"test"`` — the final test summary.

Usage::

    with MetricsLogger(run_dir, enabled=is_rank0) as log:
        log.write({"event": "train", "epoch": 1, "loss": 3.2}, step=10)
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from types import TracebackType
from typing import Any

from df2am.config import flatten

__all__ = ["MetricsLogger", "read_metrics"]

logger = logging.getLogger(__name__)


class MetricsLogger:
    """Appends records to ``<run_dir>/metrics.jsonl`` and mirrors numbers to TensorBoard.

    Args:
        run_dir: the run directory.
        enabled: False on non-zero ranks: every method is then a no-op.
        tensorboard: write ``<run_dir>/tb`` event files (imported lazily; requires the
            ``tensorboard`` package, a declared dependency).
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self._fh = None
        self._tb: Any = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Append: a resumed run continues the same log.
        self._fh = self.path.open("a", encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # lazy: slow import

            self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tb"))

    def write(self, record: dict[str, Any], step: int | None = None) -> None:
        """Append ``record`` as one JSON line; with ``step``, its numbers go to TensorBoard
        as ``<event>/<key>`` (nested dicts flattened with ``/``)."""
        if not self.enabled or self._fh is None:
            return
        self._fh.write(json.dumps(record, sort_keys=False) + "\n")
        self._fh.flush()
        if self._tb is not None and step is not None:
            prefix = str(record.get("event", "metrics"))
            for key, value in _flatten(record).items():
                if key in ("event", "epoch", "iter", "global_iter"):
                    continue
                is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
                if is_number and math.isfinite(value):
                    self._tb.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """TensorBoard tags of a record: nested keys joined by ``/``."""
    return flatten(record, "/", prefix)


def read_metrics(run_dir: str | Path, event: str | None = None) -> list[dict[str, Any]]:
    """The records of ``<run_dir>/metrics.jsonl`` (only those of ``event`` when given)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if event is not None:
        records = [r for r in records if r.get("event") == event]
    return records
