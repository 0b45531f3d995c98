"""Evaluation run: extract test features once, evaluate every trial, aggregate, report.

::

    from df2am.deploy.api import load_model
    from df2am.assess.evaluator import evaluate_model, format_table, write_eval_outputs

    model, cfg = load_model("runs/sysu/model_final.pt")
    report = evaluate_model(model, cfg, "/data/SYSU-MM01", mode="all", trials=10)
    print(format_table(report))
    write_eval_outputs(report, "runs/sysu/eval_sysu_all")   # results.json + cmc.png

Protocols (``protocols.md``):

* **SYSU-MM01**: the query (every test image of IR cameras 3 and 6) is the same in every trial,
  so its features are extracted once; the gallery (RGB cameras 1, 2, 4, 5 for all-search, 1, 2
  for indoor-search) changes per trial. The galleries of all trials are merged and every
  distinct gallery image is extracted once, then each trial indexes its rows. The reported
  number is the mean (± std) over the trials.
* **RegDB**: a model is tested on the test split of the trial it was trained on
  (``cfg.data.trial``); testing it on another trial would leak training identities. One call
  therefore evaluates one trial, and the published 10-trial mean needs 10 models
  (``df2am train --trials`` trains and aggregates them). The direction picks the modalities:
  ``v2t`` = visible query (extracted with the RGB stem) against the thermal gallery (IR stem);
  ``t2v`` swaps them.
* **LLCM**: like SYSU-MM01, one model on trials 0..9 (a seeded gallery each). ``i2v`` = all NIR
  test images against a sampled visible gallery; ``v2i`` the reverse; ``v2i_transposed`` the
  reference code's VIS→IR (sampled NIR probes against every visible image), where the query
  changes per trial and the gallery is fixed — both sides are extracted once over all trials.

Each dataset object (:mod:`df2am.data.datasets`) gives the trials, lists and metric rule; this
module names none. Every printed table and ``results.json`` states the test feature, flip
averaging and re-ranking (``eval.rerank``: k-reciprocal, :func:`df2am.evaluation.rerank`).

Features come from :meth:`df2am.models.ReIDNet.extract` (L2-normalised, fp32), distances and
metrics from :func:`df2am.evaluation.evaluate_features`, and the trial mean/std from
:func:`df2am.evaluation.aggregate_trials`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from df2am.assess.plots import plot_cmc
from df2am.assess.results import METRIC_KEYS, write_results
from df2am.config import Config, DataConfig, EvalConfig
from df2am.data.cache import NO_CACHE
from df2am.data.datasets import TestOptions, get_dataset
from df2am.data.loader import build_test_loader
from df2am.data.records import ImageRecord
from df2am.device import resolve_device
from df2am.errors import ConfigError, DatasetError, EvaluationError
from df2am.evaluation import (
    CMC_RANKS,
    AlignmentReport,
    EvalResult,
    TrialSummary,
    aggregate_trials,
    evaluate,
    evaluate_features,
    modality_alignment,
    rerank_features,
)

if TYPE_CHECKING:  # the networks import torchvision: not needed at import time
    from df2am.models import ReIDNet

__all__ = [
    "EvalReport",
    "EvalSplits",
    "build_eval_splits",
    "evaluate_model",
    "extract_records",
    "format_table",
    "write_eval_outputs",
    "resolve_device",
    "METRIC_KEYS",
]

logger = logging.getLogger(__name__)

_TABLE_ROWS = (
    ("Rank-1", "rank1"),
    ("Rank-5", "rank5"),
    ("Rank-10", "rank10"),
    ("Rank-20", "rank20"),
    ("mAP", "mAP"),
    ("mINP", "mINP"),
)


@dataclass
class EvalReport:
    """Everything one evaluation run produced.

    Attributes:
        dataset: the dataset's registry name (df2am.data.datasets.DATASETS).
        mode: SYSU search mode ("all" | "indoor"); None for the others.
        direction: RegDB ("v2t" | "t2v") or LLCM ("i2v" | "v2i" | "v2i_transposed") direction;
            None for SYSU.
        sampler: SYSU gallery sampler ("seeded" | "official"); None for the others.
        shots: SYSU gallery shots (1 | 10); None for the others.
        trials: the trial numbers evaluated (SYSU 0..9, RegDB the model's trial 1..10).
        metric: distance ("cosine" | "euclidean").
        feature: test feature ("fused" | "global" | "bn_global").
        flip: whether flipped images were averaged in.
        max_rank: length of every CMC curve.
        results: one :class:`~df2am.evaluation.EvalResult` per trial (fractions).
        summary: their mean/std (:class:`~df2am.evaluation.TrialSummary`).
        num_query: query images (the same in every trial).
        num_gallery: gallery images per trial.
        num_gallery_extracted: distinct gallery images whose features were computed.
        seconds: wall time of the whole run (extraction + metrics).
        alignment: with ``diagnose=True``, the modality-alignment report
            (:func:`df2am.evaluation.modality_alignment`) of the query images and the distinct
            gallery images of all trials; None otherwise.
        rerank: the k-reciprocal re-ranking parameters (``k1``, ``k2``, ``lambda``) when it
            was on, None when off (results.json ``protocol.rerank`` / ``rerank_params``).
    """

    dataset: str
    mode: str | None
    direction: str | None
    sampler: str | None
    shots: int | None
    trials: list[int]
    metric: str
    feature: str
    flip: bool
    max_rank: int
    results: list[EvalResult]
    summary: TrialSummary
    num_query: int
    num_gallery: list[int]
    num_gallery_extracted: int
    seconds: float
    alignment: dict[str, float] | None = None
    rerank: dict[str, float] | None = None

    @property
    def title(self) -> str:
        """A one-line description of the protocol, e.g. ``SYSU-MM01 all-search, seeded ...``."""
        options = TestOptions(mode=self.mode, sampler=self.sampler, shots=self.shots,
                              direction=self.direction)
        return get_dataset(self.dataset).describe(options, self.trials)

    @property
    def options_line(self) -> str:
        """The evaluation options that change numbers, always stated: feature, flip
        averaging and re-ranking, e.g. ``fused feature, flip off, re-ranking off``."""
        rr = "off" if self.rerank is None else (
            f"on (k1={self.rerank['k1']}, k2={self.rerank['k2']}, λ={self.rerank['lambda']})")
        return f"{self.feature} feature, flip {'on' if self.flip else 'off'}, re-ranking {rr}"

    def metrics(self) -> dict[str, float]:
        """The summary in percent: ``rank1``, ``rank5``, ``rank10``, ``rank20``, ``mAP``,
        ``mINP`` and their ``_std`` twins (std over the trials)."""
        summary = self.summary.to_dict()
        out: dict[str, float] = {}
        for key in METRIC_KEYS:
            out[key] = float(summary[key])
            out[f"{key}_std"] = float(summary[f"{key}_std"])
        return out

    def cmc_curve(self) -> tuple[list[float], list[float]]:
        """Mean and population std (over trials, as the summary) of the CMC, in percent."""
        mean = np.asarray(self.summary.cmc_mean, dtype=np.float64) * 100.0
        std = np.asarray(self.summary.cmc_std, dtype=np.float64) * 100.0
        return mean.tolist(), std.tolist()

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of ``results.json`` (see :func:`write_eval_outputs`)."""
        mean, std = self.cmc_curve()
        per_trial = []
        for trial, res in zip(self.trials, self.results, strict=True):
            cmc = np.asarray(res.cmc, dtype=np.float64)
            row: dict[str, Any] = {"trial": trial}
            for rank in CMC_RANKS:
                row[f"rank{rank}"] = float(cmc[rank - 1]) * 100.0 if len(cmc) >= rank else None
            row["mAP"] = float(res.mAP) * 100.0
            row["mINP"] = float(res.mINP) * 100.0
            row["num_valid_queries"] = int(res.num_valid_queries)
            per_trial.append(row)
        return {
            **self.metrics(),
            "protocol": {
                "dataset": self.dataset,
                "mode": self.mode,
                "direction": self.direction,
                "sampler": self.sampler,
                "shots": self.shots,
                "trials": list(self.trials),
                "metric": self.metric,
                "feature": self.feature,
                "flip": self.flip,
                "rerank": self.rerank is not None,
                "rerank_params": self.rerank,
                "metric_rule": get_dataset(self.dataset).metric_rule,
                "max_rank": self.max_rank,
                "num_query": self.num_query,
                "num_gallery": list(self.num_gallery),
                "num_gallery_extracted": self.num_gallery_extracted,
            },
            "per_trial": per_trial,
            "cmc": {"rank": list(range(1, len(mean) + 1)), "mean": mean, "std": std},
            "seconds": round(self.seconds, 3),
            **({} if self.alignment is None
               else {"alignment": AlignmentReport(self.alignment).to_json()}),
        }


# --------------------------------------------------------------------------- extraction


def extract_records(
    model: ReIDNet,
    records: Sequence[ImageRecord],
    root: str | Path,
    data_cfg: DataConfig,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 128,
    cache_dir: str | Path | None = None,
    feature: str | None = None,
    flip: bool | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """Features (N, C) of ``records`` (one modality), in record order, on the CPU.

    ``cache_dir`` None decodes into memory (no disk cache); ``channels_last`` hands the
    network NHWC batches (faster convolutions on GPUs).

    The modality of the records picks the stem: visible/RGB images go through ``Conv1``,
    thermal/IR images through ``Conv2`` (method.md, "Network").
    """
    modalities = {r.modality for r in records}
    if len(modalities) != 1:
        raise DatasetError(
            f"extract_records expects images of one modality, got {sorted(modalities) or 'none'}"
        )
    (modality,) = modalities
    dev = resolve_device(device, key="device")
    loader = build_test_loader(
        list(records),
        root,
        data_cfg,
        batch_size=batch_size,
        cache_dir=NO_CACHE if cache_dir is None else cache_dir,
        channels_last=channels_last,
    )
    chunks: list[torch.Tensor] = []
    for batch in loader:
        feats = model.extract(
            batch.to(dev, non_blocking=True), modality, feature=feature, flip=flip
        )
        chunks.append(feats.float().cpu())
    feats = torch.cat(chunks) if chunks else torch.empty(0)
    if feats.shape[0] != len(records):
        raise DatasetError(
            f"the test loader yielded {feats.shape[0]} images for {len(records)} records"
        )
    bad = ~torch.isfinite(feats).all(dim=1) if feats.numel() else torch.zeros(0, dtype=bool)
    if bool(bad.any()):  # no metric, ranking or plot is computed from them
        first = int(torch.nonzero(bad)[0, 0])
        raise EvaluationError(
            f"the model gave non-finite features for {int(bad.sum())} of {len(records)} "
            f"{modality} images (first: {records[first].path}): its activations overflow (or "
            "its weights were damaged); it cannot be evaluated")
    return feats


def _ids_cams(records: Sequence[ImageRecord]) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.asarray([r.pid for r in records], dtype=np.int64),
        np.asarray([r.cam for r in records], dtype=np.int64),
    )


# --------------------------------------------------------------------------- evaluation


def evaluate_model(
    model: ReIDNet,
    cfg: Config,
    root: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    dataset: str | None = None,
    mode: str | None = None,
    sampler: str | None = None,
    shots: int | None = None,
    trials: int | None = None,
    split_file: str | None = None,
    direction: str | None = None,
    batch_size: int | None = None,
    cache_dir: str | Path | None = None,
    feature: str | None = None,
    flip: bool | None = None,
    diagnose: bool = False,
    rerank: bool | None = None,
    rerank_k1: int | None = None,
    rerank_k2: int | None = None,
    rerank_lambda: float | None = None,
) -> EvalReport:
    """Evaluate ``model`` with the test protocol of ``cfg.eval`` (overridable per argument).

    Args:
        model: any :class:`~df2am.models.ReIDNet` (any ``model.arch``, any mode; ``extract``
            switches to eval).
        cfg: the run's config; ``cfg.data`` gives the image size and normalisation,
            ``cfg.eval`` the protocol defaults, ``cfg.data.trial`` the RegDB trial.
        root: dataset root; ``None`` = ``cfg.data.root``.
        device: where the model runs ("auto", "cpu", "cuda", a ``torch.device``).
        dataset, mode, sampler, shots, trials, split_file, direction, batch_size: override
            ``cfg.data.dataset`` and the ``cfg.eval`` fields of the same names. ``trials`` is
            the number of SYSU trials (0..trials-1); for RegDB only the model's own trial is
            valid, so anything but 1 is an error there.
        cache_dir: decoded-image cache of the test loader (None = no cache).
        feature, flip: test feature and flip averaging; None = ``cfg.model`` values.
        rerank, rerank_k1, rerank_k2, rerank_lambda: k-reciprocal re-ranking and its
            parameters; None = ``cfg.eval`` values (off, 20, 6, 0.3 by default).
        diagnose: also compute the modality-alignment report (``EvalReport.alignment``) of
            the features already extracted: within-RGB, within-IR and cross-modality
            Rank-1/mAP and the cross-modality distance gap.

    Returns:
        An :class:`EvalReport`.
    """
    start = time.perf_counter()
    opts = _resolve_options(
        cfg, root, device=device, dataset=dataset, batch_size=batch_size, feature=feature,
        flip=flip, split_file=split_file,
        given={"rerank": rerank, "rerank_k1": rerank_k1, "rerank_k2": rerank_k2,
               "rerank_lambda": rerank_lambda},
    )
    model.check_feature(opts.feature)  # before any work: a feature the architecture lacks
    model.to(opts.device)
    test = _build_split(cfg, opts, mode=mode, sampler=sampler, shots=shots, trials=trials,
                        direction=direction, split_file=split_file)
    feats = _extract_once(model, cfg, opts, test, cache_dir)
    results = _score_trials(opts, test, feats)
    return _report(opts, test, feats, results, diagnose=diagnose, start=start)


@dataclass
class _Options:
    """The resolved settings of one evaluation (arguments over ``cfg``)."""

    dataset: str
    root: Path
    ev: EvalConfig
    feature: str
    flip: bool
    batch_size: int
    split_file: str
    device: torch.device


@dataclass
class EvalSplits:
    """The trials to evaluate and their (query, gallery) lists (:func:`build_eval_splits`).

    Attributes:
        ds: the dataset object (:func:`df2am.data.datasets.get_dataset`).
        options: its resolved test options.
        trial_ids: the trial numbers.
        splits: ``(query, gallery)`` records per trial, in ``trial_ids`` order.
    """

    ds: Any
    options: TestOptions
    trial_ids: list[int]
    splits: list[tuple[list[ImageRecord], list[ImageRecord]]]


@dataclass
class _Features:
    """Every distinct query and gallery image, extracted once, and each path's row."""

    query: list[ImageRecord]
    query_index: dict[str, int]
    query_feats: torch.Tensor
    gallery: list[ImageRecord]
    gallery_index: dict[str, int]
    gallery_feats: torch.Tensor


def _resolve_options(
    cfg: Config,
    root: str | Path | None,
    *,
    device: str | torch.device,
    dataset: str | None,
    batch_size: int | None,
    feature: str | None,
    flip: bool | None,
    split_file: str | None,
    given: dict[str, Any],
) -> _Options:
    """Resolve phase: the arguments over ``cfg.eval`` / ``cfg.model``, checked."""
    dataset = dataset or cfg.data.dataset
    root = Path(root if root is not None else cfg.data.root)
    if not str(root) or not root.is_dir():
        raise DatasetError(f"dataset root {str(root)!r} is not a folder (set --root or data.root)")
    ev = dataclasses.replace(cfg.eval, **{k: v for k, v in given.items() if v is not None})
    ev.check_rerank()
    tuning = [k for k in ("rerank_k1", "rerank_k2", "rerank_lambda") if given.get(k) is not None]
    if tuning and not ev.rerank:  # it would be ignored: numbers without the re-ranking asked
        raise ConfigError(f"--{tuning[0].replace('_', '-')} tunes re-ranking, which is off "
                          "(eval.rerank=false): add --rerank, or leave it out")
    feature = feature or cfg.model.test_feature
    flip = cfg.model.flip_test if flip is None else flip
    if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
        raise ConfigError(f"--batch-size (batch size) must be >= 1, got {batch_size}")
    batch_size = batch_size or ev.batch_size
    # The checkpoint's eval.* protocol options belong to the dataset it was trained on: on
    # another one (--dataset) the options not given take that dataset's defaults.
    own = dataset == cfg.data.dataset
    split = split_file if split_file is not None else (ev.split_file if own else "")
    if ev.max_rank < 20:
        raise ConfigError(f"eval.max_rank must be >= 20 (Rank-20 is reported), got {ev.max_rank}")
    return _Options(dataset=dataset, root=root, ev=ev, feature=feature, flip=flip,
                    batch_size=batch_size, split_file=split,
                    device=resolve_device(device, key="device"))


def _build_split(
    cfg: Config,
    opts: _Options,
    *,
    mode: str | None,
    sampler: str | None,
    shots: int | None,
    trials: int | None,
    direction: str | None,
    split_file: str | None = None,
) -> EvalSplits:
    """Split phase: the dataset's test options, trial numbers and per-trial lists. An option
    given here that the dataset does not have is refused (the rule of the config's
    ``eval.*`` keys, :meth:`~df2am.data.datasets.base.Dataset.check_applicable`)."""
    ev = opts.ev
    ds = get_dataset(opts.dataset)
    given = {"mode": mode, "sampler": sampler, "shots": shots, "direction": direction}
    ds.check_applicable({**given, "split_file": split_file})
    if opts.dataset == cfg.data.dataset:  # else: the dataset's defaults (see _resolve_options)
        given = {k: getattr(ev, k) if v is None else v for k, v in given.items()}
    options = ds.resolve_options(split_file=opts.split_file, **given)
    trial_ids = ds.eval_trials(trials if trials is not None or ds.trial_per_model
                               else ev.trials, cfg.data.trial)
    splits = [ds.test_split(opts.root, t, options) for t in trial_ids]
    if not splits[0][0]:
        raise DatasetError(f"{opts.dataset} at {opts.root}: the query set is empty")
    return EvalSplits(ds=ds, options=options, trial_ids=trial_ids, splits=splits)


def build_eval_splits(cfg: Config, *, device: str | torch.device = "cpu") -> EvalSplits:
    """The trials and (query, gallery) lists that ``evaluate_model(model, cfg)`` tests: the
    protocol of ``cfg.eval`` on ``cfg.data.root``, checked and built without a model.

    The trainer builds them before epoch 1, so that a missing test folder or a bad split file
    fails before training, and checks them against the training identities.
    """
    opts = _resolve_options(
        cfg, None, device=device, dataset=None, batch_size=None, feature=None, flip=None,
        split_file=None, given={},
    )
    return _build_split(cfg, opts, mode=None, sampler=None, shots=None, trials=None,
                        direction=None)


def _extract_once(
    model: ReIDNet,
    cfg: Config,
    opts: _Options,
    test: EvalSplits,
    cache_dir: str | Path | None,
) -> _Features:
    """Extract phase: one forward pass per distinct image.

    The trials' galleries overlap heavily (10-shot, indoor), and the query is the same in
    every trial (or, for a transposed protocol, the gallery is); extraction dominates the run
    time.
    """

    def extract(records: Sequence[ImageRecord]) -> torch.Tensor:
        return extract_records(
            model,
            records,
            opts.root,
            cfg.data,
            device=opts.device,
            batch_size=opts.batch_size,
            cache_dir=cache_dir,
            feature=opts.feature,
            flip=opts.flip,
            channels_last=cfg.train.channels_last and opts.device.type == "cuda",
        )

    t0 = time.perf_counter()
    query_union, query_index = _union(q for q, _ in test.splits)
    union, union_index = _union(g for _, g in test.splits)
    query_feats = extract(query_union)
    union_feats = extract(union)
    logger.info(
        "extracted %d query + %d gallery images (distinct) in %.1fs",
        len(query_union),
        len(union),
        time.perf_counter() - t0,
    )
    return _Features(query_union, query_index, query_feats, union, union_index, union_feats)


def _score_trials(opts: _Options, test: EvalSplits, feats: _Features) -> list[EvalResult]:
    """Score phase: each trial's metrics from its rows of the extracted features."""
    results: list[EvalResult] = []
    for t, (query, gallery) in zip(test.trial_ids, test.splits, strict=True):
        res = _score(
            feats.query_feats[_rows(query, feats.query_index)],
            feats.gallery_feats[_rows(gallery, feats.gallery_index)],
            query, gallery, test.ds.metric_rule, opts.ev)
        logger.info(
            "trial %d: Rank-1 %.2f%%  mAP %.2f%%  mINP %.2f%%",
            t,
            float(res.cmc[0]) * 100,
            float(res.mAP) * 100,
            float(res.mINP) * 100,
        )
        results.append(res)
    return results


def _report(
    opts: _Options,
    test: EvalSplits,
    feats: _Features,
    results: list[EvalResult],
    *,
    diagnose: bool,
    start: float,
) -> EvalReport:
    """Report phase: the trial mean/std, the alignment report when asked, the EvalReport."""
    summary = aggregate_trials(results)
    alignment = None
    if diagnose:
        alignment = _alignment(feats.query, feats.query_feats, feats.gallery, feats.gallery_feats)
        logger.info("modality alignment: %s", AlignmentReport(alignment).summary())
    return EvalReport(
        dataset=opts.dataset,
        mode=test.options.mode,
        direction=test.options.direction,
        sampler=test.options.sampler,
        shots=test.options.shots,
        trials=test.trial_ids,
        metric=opts.ev.metric,
        feature=opts.feature,
        flip=bool(opts.flip),
        max_rank=opts.ev.max_rank,
        results=results,
        summary=summary,
        num_query=len(test.splits[0][0]),
        num_gallery=[len(g) for _, g in test.splits],
        num_gallery_extracted=len(feats.gallery),
        seconds=time.perf_counter() - start,
        alignment=alignment,
        rerank=_rerank_params(opts.ev),
    )


def _union(lists: Iterable[Sequence[ImageRecord]]) -> tuple[list[ImageRecord], dict[str, int]]:
    """The distinct records of ``lists`` (first occurrence order) and each path's row."""
    index: dict[str, int] = {}
    union: list[ImageRecord] = []
    for records in lists:
        for rec in records:
            if rec.path not in index:
                index[rec.path] = len(union)
                union.append(rec)
    return union, index


def _rows(records: Sequence[ImageRecord], index: dict[str, int]) -> torch.Tensor:
    return torch.as_tensor([index[r.path] for r in records], dtype=torch.long)


def _rerank_params(ev: EvalConfig) -> dict[str, float] | None:
    """The re-ranking parameters when ``eval.rerank`` is on, else None."""
    if not ev.rerank:
        return None
    return {"k1": ev.rerank_k1, "k2": ev.rerank_k2, "lambda": ev.rerank_lambda}


def _score(query_feats: torch.Tensor, gallery_feats: torch.Tensor,
           query: Sequence[ImageRecord], gallery: Sequence[ImageRecord], rule: str,
           ev: EvalConfig) -> EvalResult:
    """Metrics of one trial under the dataset's metric ``rule``, re-ranked when asked."""
    q_ids, q_cams = _ids_cams(query)
    g_ids, g_cams = _ids_cams(gallery)
    if not ev.rerank:
        return evaluate_features(query_feats, gallery_feats, q_ids, g_ids, q_cams, g_cams,
                                 protocol=rule, metric=ev.metric, max_rank=ev.max_rank)
    dist = rerank_features(query_feats, gallery_feats, metric=ev.metric, k1=ev.rerank_k1,
                           k2=ev.rerank_k2, lambda_value=ev.rerank_lambda)
    return evaluate(dist, q_ids, g_ids, q_cams, g_cams, protocol=rule, max_rank=ev.max_rank)


def _alignment(
    query: Sequence[ImageRecord],
    query_feats: torch.Tensor,
    gallery: Sequence[ImageRecord],
    gallery_feats: torch.Tensor,
) -> dict[str, float]:
    """The alignment report of the query + distinct gallery images, split by modality."""
    recs = list(query) + list(gallery)
    feats = torch.cat([query_feats, gallery_feats])
    rows = {m: [i for i, r in enumerate(recs) if r.modality == m] for m in ("rgb", "ir")}
    if not rows["rgb"] or not rows["ir"]:
        raise DatasetError("--diagnose needs test images of both modalities")

    def pick(m: str) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        idx = rows[m]
        ids, cams = _ids_cams([recs[i] for i in idx])
        return feats[torch.as_tensor(idx)], ids, cams

    (rf, rid, rcam), (inf, iid, icam) = pick("rgb"), pick("ir")
    return modality_alignment(rf, inf, rid, iid, rcam, icam).to_dict()


# --------------------------------------------------------------------------- reporting


def format_table(report: EvalReport, *, label: str | None = None) -> str:
    """The printed result table: Rank-1/5/10/20, mAP, mINP as ``mean ± std`` in percent.

    ::

        SYSU-MM01 all-search, seeded sampler, single-shot, 10 trials (fused feature, flip off,
        re-ranking off)
          metric      mean ±  std (%)
          Rank-1     56.93 ± 1.20
          ...
    """
    m = report.metrics()
    head = f"{report.title} ({report.options_line})"
    if label:
        head = f"{label}: {head}"
    lines = [head, f"  {'metric':<8} {'mean':>7} ± {'std':>5} (%)"]
    for name, key in _TABLE_ROWS:
        lines.append(f"  {name:<8} {m[key]:7.2f} ± {m[key + '_std']:5.2f}")
    if report.alignment is not None:
        a = report.alignment
        lines += [
            "  modality alignment (all query + gallery images; Rank-1 / mAP %):",
            f"    within RGB  {a['rgb2rgb_rank1']:6.2f} / {a['rgb2rgb_mAP']:6.2f}",
            f"    within IR   {a['ir2ir_rank1']:6.2f} / {a['ir2ir_mAP']:6.2f}",
            f"    IR → RGB    {a['ir2rgb_rank1']:6.2f} / {a['ir2rgb_mAP']:6.2f}",
            f"    RGB → IR    {a['rgb2ir_rank1']:6.2f} / {a['rgb2ir_mAP']:6.2f}",
            f"    cross-modality distance: positives {a['cross_pos_dist']:.3f}, negatives "
            f"{a['cross_neg_dist']:.3f}, gap {a['cross_gap']:+.3f}; "
            f"RGB/IR centroid distance {a['centroid_dist']:.3f}",
        ]
    return "\n".join(lines)


def write_eval_outputs(
    report: EvalReport,
    out_dir: str | Path,
    name: str = "results",
    *,
    extra: dict[str, Any] | None = None,
    plot: bool = True,
) -> Path:
    """Write ``<out_dir>/<name>.json`` and (``plot=True``) ``<out_dir>/cmc.png``.

    The JSON holds the summary at the top level — ``rank1``, ``rank5``, ``rank10``,
    ``rank20``, ``mAP``, ``mINP`` in percent, each with a ``_std`` twin — plus ``protocol``
    (the settings), ``per_trial`` (each trial's metrics), ``cmc`` (mean/std curve over the
    trials, percent), ``seconds`` and any ``extra`` keys (e.g. the checkpoint path).

    Returns:
        The JSON path.
    """
    out = Path(out_dir)
    doc = report.to_dict()
    if extra:
        doc.update(extra)
    path = write_results(out, doc, name)
    if plot:
        mean, std = report.cmc_curve()
        plot_cmc({"mean ± std over trials": (mean, std)}, out / "cmc.png", title=report.title)
    logger.info("wrote %s", path)
    return path
