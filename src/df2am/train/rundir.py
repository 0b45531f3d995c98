"""The run directory: where a run stands, and what keeps it safe while a process trains in it.

::

    from df2am.train.rundir import run_status

    run_status("runs/sysu")          # "empty" | "partial" | "trained" | "finished"

* :func:`run_status` is the one rule for "this run is finished"; the trainer (``--resume``),
  ``df2am train --trials``, the demo and the sweep all ask it.
* :func:`claim_run_dir` is what the trainer holds for the whole run (rank 0): the run lock
  (``RUN/.lock``, pid + host; a stale one is replaced: :mod:`df2am.train.runlock`) refuses a
  second process on one run directory; a fresh run refuses a used directory and a resume
  runs the resume checks (:mod:`df2am.train.resume`); ``config.yaml`` is written and
  ``train.log`` attached; the ``.*.tmp`` files a killed writer left are removed
  (:func:`remove_debris`). Checkpoints and every other file get the umask's permissions
  (:mod:`df2am.atomic`).
* :func:`check_path_text`: a run directory whose name is not valid UTF-8 is refused before
  anything is written.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from df2am.assess.results import RESULTS_NAME
from df2am.atomic import TMP_GLOB
from df2am.config import Config, save_config
from df2am.errors import ConfigError
from df2am.train import runlock
from df2am.train.resume import check_resume

__all__ = [
    "RunStatus",
    "check_path_text",
    "claim_run_dir",
    "prepare_run_dir",
    "remove_debris",
    "resolve_cache_dir",
    "run_status",
]

logger = logging.getLogger(__name__)

#: What :func:`run_status` answers.
RunStatus = str


def run_status(
    run_dir: str | Path, *, epochs: int | None = None, trained: int | None = None
) -> RunStatus:
    """The one rule for where a run directory stands.

    * ``"finished"``: ``results.json`` is there (the run's last output);
    * ``"trained"``: ``model_final.pt`` is there but no ``results.json`` — the training
      ended, its final test did not run (``train.final_eval=false``) or was interrupted;
      ``df2am train --resume`` redoes only that test;
    * ``"partial"``: a started run (``config.yaml``, ``checkpoints/last.pt``);
    * ``"empty"``: none of these.

    With ``epochs`` (the ``train.epochs`` a resume asks for), a run trained for fewer epochs
    is ``"partial"`` — resuming extends it — and so is a ``results.json`` without a
    ``model_final.pt``. The epochs trained are ``trained`` when given (the caller has read
    ``checkpoints/last.pt`` already), else read from ``checkpoints/last.pt`` (0 without one).
    """
    d = Path(run_dir)
    has_results = (d / RESULTS_NAME).is_file()
    has_final = (d / "model_final.pt").is_file()
    started = (d / "checkpoints" / "last.pt").is_file() or (d / "config.yaml").is_file()
    if epochs is None:
        if has_results:
            return "finished"
        if has_final:
            return "trained"
    elif has_final and _epochs_trained(d, trained) >= epochs:
        return "finished" if has_results else "trained"
    if started or has_final or has_results:
        return "partial"
    return "empty"


def _epochs_trained(run_dir: Path, trained: int | None) -> int:
    if trained is not None:
        return trained
    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        return 0
    from df2am.train.checkpoint import load_checkpoint

    return int(load_checkpoint(last)["epoch"])


# --------------------------------------------------------------------------- safety


def resolve_cache_dir(cfg: Config, run_dir: Path) -> str:
    """``data.cache_dir``: "" → ``<run_dir>/cache``, "none" → no disk cache, else the path."""
    if cfg.data.cache_dir == "":
        return str(run_dir / "cache")
    return cfg.data.cache_dir


def check_path_text(run_dir: Path) -> None:
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


@contextlib.contextmanager
def claim_run_dir(
    cfg: Config, run_dir: Path, resume: bool, *, requested: str, extend: bool, main: bool
) -> Iterator[list[dict[str, Any]]]:
    """Hold ``run_dir`` for one training process (``main``: rank 0; the other ranks hold
    nothing): the run lock, then :func:`prepare_run_dir`; yields its records for
    ``metrics.jsonl``. On exit ``train.log`` is detached and the lock released."""
    if not main:
        yield []
        return
    lock = runlock.acquire(run_dir)
    handler: logging.Handler | None = None
    try:
        handler, notes = prepare_run_dir(cfg, run_dir, resume, requested=requested,
                                         extend=extend)
        yield notes
    finally:
        if handler is not None:
            logging.getLogger("df2am").removeHandler(handler)
            handler.close()
        runlock.release(lock)


def prepare_run_dir(
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
        notes = check_resume(cfg, run_dir, requested=requested, extend=extend)
    elif status != "empty":
        what = "a finished run" if finished else "an unfinished run"
        raise ConfigError(
            f"run directory {run_dir} already holds {what}; pass --resume {run_dir} to "
            "continue it or choose another --out"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    handler = _attach_train_log(run_dir)
    remove_debris(run_dir)
    for note in notes:
        if note["event"] == "extend":
            logger.warning(
                "%s: extending the run from %d to %d epochs (--extend), after epoch %d",
                run_dir, note["from_epochs"], note["to_epochs"], note["at_epoch"],
            )
    return handler, notes


def _attach_train_log(run_dir: Path) -> logging.Handler:
    """``train.log``: the df2am log lines of this process (INFO and up) from now on."""
    handler = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    df2am_logger = logging.getLogger("df2am")
    df2am_logger.addHandler(handler)
    if df2am_logger.getEffectiveLevel() > logging.INFO:
        df2am_logger.setLevel(logging.INFO)
    return handler


def remove_debris(run_dir: Path) -> None:
    """Remove the ``.<name>.tmp`` files a killed write left in the run dir and checkpoints/
    (we hold the run lock: no writer of this run is alive)."""
    for folder in (run_dir, run_dir / "checkpoints"):
        for tmp in sorted(folder.glob(TMP_GLOB)) if folder.is_dir() else []:
            if tmp.is_file():
                tmp.unlink()
                logger.warning("removed %s (left by an interrupted write)", tmp)
