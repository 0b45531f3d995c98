"""The run directory: where a run stands (:func:`run_status`).

::

    from df2am.train.rundir import run_status

    run_status("runs/sysu")          # "empty" | "partial" | "trained" | "finished"

:func:`run_status` is the one rule for "this run is finished"; the trainer (``--resume``),
``df2am train --trials``, the demo and the sweep all ask it.
"""

from __future__ import annotations

from pathlib import Path

from df2am.assess.results import RESULTS_NAME

__all__ = ["RunStatus", "run_status"]

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
