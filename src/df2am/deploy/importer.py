"""Checkpoints trained by other code, as df2am checkpoints: ``df2am import``.

::

    from df2am.deploy.importer import import_checkpoint

    result = import_checkpoint("sysu_agw_p4_n8_lr_0.1_seed_0_best.t", "agw_sysu.pt",
                               source="agw", dataset="sysu")
    print(result.report.summary())          # what was mapped, ignored, filled, assumed
    model, cfg = load_model("agw_sysu.pt")  # then every verb: eval, visualize, extract, ...

Command line::

    df2am import sysu_agw_p4_n8_lr_0.1_seed_0_best.t --from agw --out agw_sysu.pt
    df2am import regdb_agw_trial3_best.t --from agw --dataset regdb --out agw_regdb3.pt data.trial=3
    df2am eval agw_sysu.pt --root /data/SYSU-MM01 --mode indoor --rerank

**Sources** (:data:`SOURCES`, ``--from``): ``agw`` — the ``embed_net`` state dict of
mangye16/Cross-Modal-Re-ID-baseline and the repositories built on it (CAJ's ``ICCV21_CAJ``
saves the same network), read by :func:`df2am.models.read_reference_checkpoint` (``torch.load``
with ``weights_only=True``: a pickle that would run code is refused, never executed) and
converted by :func:`df2am.models.convert_reference_state_dict` (every key mapped, or reported
as one the reference's forward never uses, or the import fails naming the keys; a
DataParallel ``module.`` prefix is removed). Another format is one more entry.

**What is written** — the checkpoint format of :mod:`df2am.train.checkpoint` (model-only:
``optimizer``, ``scheduler``, ``sampler``, ``rng``, ``scaler`` are None, ``epoch`` 0,
``selected_by`` ``"imported"``) with:

* ``model``: the converted weights, loaded strictly into the ``agw`` network first;
* ``config``: the shipped AGW recipe of the dataset (``configs/agw_sysu.yaml``,
  ``configs/agw_regdb.yaml``; for a dataset without one, the SYSU recipe with that dataset's
  own ``data.dataset`` and ``eval`` section), its model section replaced by what the weights
  say (:meth:`~df2am.models.ConversionReport.model_options`: depth, non-local blocks, pooling,
  ``pretrained=none``), then the caller's ``key=value`` overrides. So the data and eval
  sections fit the dataset: the reference's test size (288 × 144), ImageNet normalisation, the
  dataset's protocol defaults;
* ``imported``: the record of the import — ``from`` (the source name), ``source`` (the file,
  absolute), ``sha256`` (of the file), ``entry`` (where the state dict sat, e.g. ``"net"``),
  ``summary`` (:meth:`~df2am.models.ConversionReport.summary`), ``mapped`` (count),
  ``ignored`` (group → keys), ``filled``, ``stripped_prefix``, ``pooling`` and
  ``pooling_assumed`` (the pooling has no weights: it is assumed from the non-local blocks
  unless given), ``df2am_version``.

Why here (``deploy/``) and not in ``train/checkpoint.py``: importing is *using* a model
trained elsewhere — it needs the networks (``models``) and writes the checkpoint format that
``train.checkpoint`` owns, which deploy may use; ``train.checkpoint`` knows no network and no
training run would ever call an importer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from df2am import __version__
from df2am.config import (
    Config,
    ModelConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
)
from df2am.data.datasets import DATASETS
from df2am.errors import CheckpointError, ConfigError
from df2am.train.checkpoint import FORMAT_VERSION, first_non_finite, save_checkpoint

if TYPE_CHECKING:
    from df2am.models import ConversionReport

__all__ = [
    "SOURCES",
    "ImportResult",
    "import_checkpoint",
    "file_sha256",
    "recipe_config",
    "foreign_format",
]


@dataclass(frozen=True)
class Source:
    """A checkpoint format df2am imports: how to read a file and convert its state dict."""

    title: str
    read: Callable[[Path], tuple[dict[str, torch.Tensor], str]]
    convert: Callable[[Mapping[str, torch.Tensor]], tuple[dict[str, torch.Tensor],
                                                         ConversionReport]]
    #: recipe file stem per dataset (``configs/paper/base/<stem>.yaml``); "*" = the fallback.
    recipes: Mapping[str, str]


# The networks import torchvision: imported when a file is read, not when the CLI starts.
def _read_agw(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    from df2am.models import read_reference_checkpoint

    return read_reference_checkpoint(path)


def _convert_agw(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    from df2am.models import convert_reference_state_dict

    return convert_reference_state_dict(state)


#: ``--from`` name → :class:`Source`.
SOURCES: dict[str, Source] = {
    "agw": Source(
        title="AGW reference code (mangye16/Cross-Modal-Re-ID-baseline embed_net; also CAJ)",
        read=_read_agw,
        convert=_convert_agw,
        recipes={"sysu": "agw_sysu", "regdb": "agw_regdb", "*": "agw_sysu"},
    ),
}


@dataclass
class ImportResult:
    """What :func:`import_checkpoint` did: the file written, its config and the record."""

    path: Path
    cfg: Config
    report: ConversionReport
    record: dict[str, Any] = field(default_factory=dict)


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _recipe_dir() -> Path:
    """The shipped recipes (package data: ``df2am/configs/paper/base``)."""
    return Path(__file__).resolve().parents[1] / "configs" / "paper" / "base"


def recipe_config(source: str, dataset: str) -> Config:
    """The shipped training recipe of ``source``'s architecture on ``dataset``: its own
    (``agw_sysu``, ``agw_regdb``), or the fallback recipe with the dataset's ``data.dataset``
    and the ``eval`` section of df2am's recipe for that dataset (``base/<dataset>.yaml``)."""
    if dataset not in DATASETS:
        raise ConfigError(f"--dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
    recipes = SOURCES[source].recipes
    base = _recipe_dir()
    own = recipes.get(dataset)
    cfg = load_config(base / f"{own or recipes['*']}.yaml")
    if own is None:
        doc = config_to_dict(cfg)
        doc["data"]["dataset"] = dataset
        doc["eval"] = config_to_dict(load_config(base / f"{dataset}.yaml"))["eval"]
        cfg = config_from_dict(doc, source=f"{base / (recipes['*'] + '.yaml')} on {dataset}")
    return cfg


def _imported_config(source: str, dataset: str, model_options: Mapping[str, Any],
                     overrides: Sequence[str]) -> Config:
    doc = config_to_dict(recipe_config(source, dataset))
    doc["name"] = f"imported_{source}_{dataset}"
    doc["data"]["root"] = ""
    doc["model"].update(model_options)
    try:
        return apply_overrides(config_from_dict(doc, source="imported config"), list(overrides))
    except ConfigError as exc:
        raise ConfigError(f"df2am import: {exc}") from None


def import_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    *,
    source: str = "agw",
    dataset: str = "sysu",
    pooling: str | None = None,
    overrides: Sequence[str] = (),
    force: bool = False,
) -> ImportResult:
    """Convert a checkpoint of other code into a df2am checkpoint at ``out``.

    Args:
        checkpoint: the file (e.g. the reference's ``*_best.t``).
        out: the df2am checkpoint to write (atomically).
        source: a name of :data:`SOURCES` ("agw").
        dataset: the dataset the model was trained on; picks the recipe whose data and eval
            sections the config gets.
        pooling: "gem" or "avg"; None = assumed from the weights (GeM with the non-local
            blocks, average pooling without: the reference switches them together).
        overrides: ``key=value`` config overrides applied last (e.g. ``data.trial=3`` for a
            RegDB model, ``model.flip_test=true``); a model option that does not fit the
            weights fails the strict load, naming the keys.
        force: overwrite an existing ``out``.

    Raises:
        CheckpointError: an unreadable file, a pickle that would run code, a key that cannot
            be placed, a missing or mis-shaped one (all named), weights that do not load into
            the configured network, an existing ``out`` without ``force``.
        ConfigError: an unknown source, dataset or pooling, or a bad override.
    """
    if source not in SOURCES:
        raise ConfigError(f"--from must be one of {sorted(SOURCES)}, got {source!r}")
    if pooling not in (None, "gem", "avg"):
        raise ConfigError(f"--pooling must be 'gem' or 'avg', got {pooling!r}")
    src, out = Path(checkpoint), Path(out)
    if out.exists() and not force:
        raise CheckpointError(f"{out} exists; choose another --out or pass --force")
    if out.exists() and out.resolve() == src.resolve():
        raise CheckpointError(f"{out}: --out is the file being imported")
    state, entry = SOURCES[source].read(src)
    try:
        converted, report = SOURCES[source].convert(state)
    except CheckpointError as exc:
        raise CheckpointError(f"{src}: {exc}") from None
    bad = first_non_finite(converted)
    if bad is not None:  # df2am would refuse to load the file written
        key = report.stripped_prefix + report.mapped.get(bad, bad)
        where = f" (in {entry!r})" if entry else ""
        raise CheckpointError(f"{src}: tensor {key!r}{where} holds NaN or infinite values "
                              f"(df2am's {bad}): the source model diverged or the file is "
                              "damaged; nothing was written")
    cfg = _imported_config(source, dataset, report.model_options(pooling), overrides)
    from df2am.models import build_model

    model = build_model(ModelConfig(**{**vars(cfg.model), "pretrained": "none"}),
                        report.num_classes)
    try:
        model.load_state_dict(converted, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{src}: the converted weights do not load into the network the config describes "
            f"(model.arch={cfg.model.arch}, ResNet-{cfg.model.depth}, non_local="
            f"{cfg.model.non_local}; an override of a model option?): {exc}"
        ) from None
    record = _record(source, src, entry, report, pooling)
    save_checkpoint(out, {
        "format_version": FORMAT_VERSION,
        "model": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "num_classes": int(report.num_classes),
        "config": config_to_dict(cfg),
        "epoch": 0,
        "optimizer": None, "scheduler": None, "sampler": None, "rng": None, "scaler": None,
        "selected_by": "imported",
        "imported": record,
    })
    return ImportResult(path=out, cfg=cfg, report=report, record=record)


def foreign_format(path: str | Path) -> str | None:
    """The :data:`SOURCES` name whose reader and converter accept ``path`` (a file df2am can
    import but not load), or None. Reads the file: meant for error messages."""
    for name, src in SOURCES.items():
        try:
            src.convert(src.read(Path(path))[0])
        except (CheckpointError, ConfigError):
            continue
        return name
    return None


def _record(source: str, src: Path, entry: str, report: ConversionReport,
            pooling: str | None) -> dict[str, Any]:
    """The ``imported`` entry of the written checkpoint (plain types: weights_only-safe)."""
    return {
        "from": source,
        "source": str(src.resolve()),
        "sha256": file_sha256(src),
        "entry": entry,
        "summary": report.summary(),
        "mapped": len(report.mapped),
        "ignored": {desc: list(keys) for desc, keys in report.ignored.items()},
        "filled": list(report.filled),
        "stripped_prefix": report.stripped_prefix,
        "pooling": report.model_options(pooling)["pooling"],
        "pooling_assumed": pooling is None,
        "df2am_version": __version__,
    }
