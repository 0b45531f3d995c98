"""Resume checks: what ``df2am train --resume RUN`` refuses, and the one repair it makes.

Resuming uses the config saved in the run directory; only :data:`RESUME_OVERRIDABLE` keys may
differ (the others say where it runs and do not change the arithmetic). A resume refuses

* a config that differs from ``config.yaml`` in another key (:func:`check_resume_config`);
* a ``config.yaml`` edited by hand: it must match the config of ``checkpoints/last.pt``
  (:func:`check_resume`, naming the keys);
* a shorter schedule than already trained, and a longer one without ``extend`` (the CLI's
  ``--extend``; the extension is returned as an ``extend`` record that the trainer writes to
  train.log, metrics.jsonl and the checkpoints' ``history``);
* weights that do not fit the config's model (:func:`check_weights`, naming the first key).

The repair: a kill between ``last.pt`` and ``epoch_XXX.pt`` leaves the latter missing, and
:func:`rewrite_epoch_checkpoint` writes it again from ``last.pt``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from df2am.config import Config, complete_config_dict, config_to_dict
from df2am.errors import CheckpointError, ConfigError
from df2am.train.checkpoint import load_checkpoint, save_checkpoint

__all__ = [
    "RESUME_OVERRIDABLE",
    "check_resume",
    "check_resume_config",
    "check_weights",
    "config_diff",
    "read_saved_config",
    "resume_config_changes",
    "rewrite_epoch_checkpoint",
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


def config_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two config dicts (sorted, recursive)."""
    keys: list[str] = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += config_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k}")
    return keys


def resume_config_changes(cfg: Config, saved: dict[str, Any], source: str) -> list[str]:
    """The dotted keys where ``cfg`` differs from a run's ``saved`` config (completed with the
    defaults; ``source`` names it in errors), other than :data:`RESUME_OVERRIDABLE`."""
    saved = complete_config_dict(saved, source=source)
    return [k for k in config_diff(config_to_dict(cfg), saved) if k not in RESUME_OVERRIDABLE]


def check_resume_config(cfg: Config, run_dir: Path, saved: dict[str, Any]) -> None:
    """:class:`ConfigError` naming the keys where ``cfg`` differs from the run's ``saved``
    config, other than :data:`RESUME_OVERRIDABLE`."""
    diff = resume_config_changes(cfg, saved, source=f"{run_dir} checkpoint")
    if diff:
        raise ConfigError(
            f"{run_dir}: cannot resume with a different config; changed keys: {', '.join(diff)} "
            f"(only {', '.join(RESUME_OVERRIDABLE)} may change on --resume)"
        )


def read_saved_config(path: Path, what: str) -> dict[str, Any]:
    """The mapping of a run's YAML file ``path`` (``what`` names it in errors)."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the run's {what} ({exc})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the run's {what} is not a mapping")
    return doc


def check_resume(
    cfg: Config, run_dir: Path, *, requested: str, extend: bool
) -> list[dict[str, Any]]:
    """The resume checks: ``cfg`` vs ``config.yaml``, ``config.yaml`` vs ``last.pt``'s config
    (a hand edit), the schedule (never shorter than trained; longer only with ``extend``).
    ``requested`` is the ``train.precision`` asked for (``cfg`` holds the resolved one).
    Returns the ``extend`` record when the run is extended."""
    saved_path = run_dir / "config.yaml"
    last_path = run_dir / "checkpoints" / "last.pt"
    saved: dict[str, Any] | None = None
    if saved_path.is_file():
        saved = read_saved_config(saved_path, "config.yaml")
        train_sec = saved.get("train")
        # A run from before precision was recorded resolved: its "auto" is what was asked.
        if isinstance(train_sec, dict) and train_sec.get("precision") == requested:
            saved = {**saved, "train": {**train_sec, "precision": cfg.train.precision}}
        check_resume_config(cfg, run_dir, saved)
    ckpt = load_checkpoint(last_path) if last_path.is_file() else None
    if ckpt is None:
        return []
    if saved is not None:
        _check_not_edited(saved, saved_path, ckpt, last_path)
    return _check_schedule(cfg, run_dir, ckpt, extend=extend)


def _check_not_edited(
    saved: dict[str, Any], saved_path: Path, ckpt: dict[str, Any], last_path: Path
) -> None:
    """``config.yaml`` must equal the config ``last.pt`` trained with (but for the keys a
    resume may change legitimately, rewritten by an earlier resume that crashed before its
    first checkpoint)."""
    yaml_cfg = complete_config_dict(saved, source=str(saved_path))
    ckpt_cfg = complete_config_dict(dict(ckpt["config"]), source=str(last_path))
    edited = [k for k in config_diff(yaml_cfg, ckpt_cfg) if k not in RESUME_OVERRIDABLE]
    if edited:
        raise ConfigError(
            f"{saved_path} differs from the config the run trained with "
            f"({last_path}) in: {', '.join(edited)} — was config.yaml edited by hand? "
            "Restore it, or start a new run (another --out) with the new settings"
        )


def _check_schedule(
    cfg: Config, run_dir: Path, ckpt: dict[str, Any], *, extend: bool
) -> list[dict[str, Any]]:
    """Never shorter than trained; longer than planned only with ``extend`` (its record)."""
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


def check_weights(
    built: dict[str, Any], saved: dict[str, Any], *, path: Path, depth: int, num_classes: int
) -> None:
    """The checkpoint's weights ``saved`` (from ``path``) against the state dict ``built`` of
    a model built from the config (ResNet-``depth``, ``num_classes`` classes): a
    :class:`CheckpointError` names the first key that is missing, unexpected or of another
    shape."""
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
        f"{path}: the weights do not match the config's model (ResNet-"
        f"{depth}, {num_classes} classes): the checkpoint {problem}; "
        "resume with the config the run was trained with"
    )


def rewrite_epoch_checkpoint(
    ckpt: dict[str, Any], *, ckpt_dir: Path, checkpoint_every: int, last_path: Path
) -> None:
    """A kill between ``last.pt`` and ``epoch_XXX.pt`` leaves the latter missing (or, from
    older writers, truncated): write it again from ``last.pt``'s state ``ckpt``."""
    done = int(ckpt["epoch"])
    planned = int(ckpt["config"].get("train", {}).get("epochs", done))
    if done % max(checkpoint_every, 1) != 0 and done != planned:
        return
    path = ckpt_dir / f"epoch_{done:03d}.pt"
    if path.is_file():
        try:
            if int(load_checkpoint(path)["epoch"]) == done:
                return
        except CheckpointError as exc:
            logger.warning("%s", exc)
    save_checkpoint(path, ckpt)
    logger.warning("rewrote %s from %s (its write was interrupted)", path, last_path)
