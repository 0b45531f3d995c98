"""Features on ONNX Runtime: exported graphs (fp32 or int8) in place of the PyTorch model.

::

    from df2am.deploy.runtime import GraphModel

    graphs = GraphModel(["deploy/ir_int8.onnx", "deploy/rgb_int8.onnx"])   # one per modality
    feats = graphs.extract(batch, "ir")        # like ReIDNet.extract: (N, C) unit rows
    graphs.fingerprint, graphs.numerics        # the features fingerprint; ('onnxruntime', 'int8')

A :class:`GraphModel` has the parts of a :class:`~df2am.models.ReIDNet` that feature
extraction uses (``extract``, ``check_feature``, ``to``, ``eval``, ``run_config`` with the
graph's input size), so ``df2am extract`` / ``search`` / ``serve`` and
:func:`df2am.assess.evaluate_model` run it unchanged. Graphs come from ``df2am export``
(:mod:`df2am.deploy.export`, fp32) and ``df2am export --int8`` (:mod:`df2am.deploy.quantize`);
their metadata carries the features fingerprint of the checkpoint they were exported from, so
features computed by a graph are checked against an index exactly like PyTorch's.

**Numerics.** The fingerprint says *which embedding* (weights + preprocessing); the numerics
say *how it was computed*: ``runtime`` (``torch`` | ``onnxruntime``) and ``precision``
(``fp32`` | ``bf16`` | ``int8``). Feature sidecars and index sidecars record both.
:func:`check_numerics` is the one rule for mixing them: fp32 on either runtime is the same
numbers (the export's parity check holds them within 1e-4) and bf16 moves unit rows by
≈ 5e-4 (docs/benchmarks.md), so those mix; **int8** features are a calibrated approximation
(cosine ≈ 0.999 to fp32, per graph), so int8 queries against a float gallery, or float queries
against an int8 gallery, are refused unless the caller allows the mix explicitly (it is then
logged and recorded in the search output) — never silent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from df2am.config import Config
from df2am.deploy.export import INPUT_NAME, onnx_session, read_metadata
from df2am.errors import CheckpointError, ConfigError, Df2amError

__all__ = [
    "PRECISIONS",
    "RUNTIMES",
    "GraphModel",
    "MixedNumericsError",
    "QueryModel",
    "check_numerics",
    "check_threads",
    "load_query_model",
    "file_sha256",
    "is_graph",
]

logger = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnxruntime")
PRECISIONS = ("fp32", "bf16", "int8")


class MixedNumericsError(Df2amError):
    """Queries and gallery were (or would be) computed with incompatible numerics."""


def is_graph(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names an ONNX graph (by its ``.onnx`` suffix) rather than a checkpoint."""
    return Path(path).suffix.lower() == ".onnx"


def check_threads(threads: int | None, *, used: bool) -> None:
    """``--threads`` is ONNX Runtime's intra-op thread count: >= 1; given where no graph runs
    (a PyTorch checkpoint), a warning that it is ignored."""
    if threads is None:
        return
    if threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    if not used:
        logger.warning("--threads %d: ONNX Runtime's setting, but no .onnx graph runs here "
                       "(a PyTorch checkpoint): ignored", threads)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_numerics(gallery: tuple[str, str], query: tuple[str, str], *,
                   allow_mixed: bool = False, what: str = "the queries") -> str | None:
    """Refuse int8 mixed with float features (module docstring); the note to record, if any.

    ``gallery`` and ``query`` are ``(runtime, precision)``. Returns None when the numerics
    match (or differ only in ways that do not matter), else a one-line note of the mix that
    ``allow_mixed`` let through (log it and keep it with the results).

    Raises:
        MixedNumericsError: int8 on one side and not the other, without ``allow_mixed``.
    """
    (g_rt, g_prec), (q_rt, q_prec) = gallery, query
    if g_prec == q_prec or "int8" not in (g_prec, q_prec):
        if g_prec != q_prec:
            logger.info("%s are %s (%s), the gallery %s (%s): float precisions mix (bf16 "
                        "moves unit rows by ~5e-4)", what, q_prec, q_rt, g_prec, g_rt)
        return None
    note = (f"{what} are computed in {q_prec} on {q_rt} but the gallery features in "
            f"{g_prec} on {g_rt}")
    if not allow_mixed:
        fix = ("search with the int8 graph of the query modality (--onnx GRAPH)"
               if g_prec == "int8" else
               "extract the gallery with the same kind of graph (df2am extract GRAPH.onnx)")
        raise MixedNumericsError(
            f"{note}: int8 features are a calibrated approximation and are not mixed with "
            f"float ones silently; {fix}, or pass --allow-mixed-precision to accept the mix "
            "(it is recorded in the results)")
    logger.warning("mixed numerics (allowed): %s", note)
    return note


class _Graph:
    """One exported graph: its metadata and a lazily created ONNX Runtime session."""

    def __init__(self, path: Path, threads: int | None) -> None:
        if not path.is_file():
            raise ConfigError(f"ONNX graph not found: {path}")
        if threads is not None and threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {threads}")
        self.path = path
        self.meta = read_metadata(path)
        self.threads = threads
        self._session: Any = None
        for key in ("modality", "df2am_fingerprint", "input_height", "input_width"):
            if key not in self.meta:
                raise ConfigError(
                    f"{path}: the graph's metadata has no {key!r}; export it with this "
                    "df2am version (df2am export CHECKPOINT --onnx OUT --modality rgb|ir)")
        self.sha256 = file_sha256(path)

    @property
    def session(self) -> Any:
        if self._session is None:
            self._session = onnx_session(self.path, threads=self.threads)
        return self._session

    def record(self) -> dict[str, Any]:
        """What a features sidecar keeps about the graph."""
        keys = ("modality", "precision", "quantization", "per_channel", "reduce_range",
                "calibration_images", "checkpoint_sha256")
        return {"path": str(self.path.resolve()), "sha256": self.sha256,
                **{k: self.meta[k] for k in keys if k in self.meta}}


class GraphModel:
    """Exported graphs of one checkpoint (at most one per modality) behind ``extract``.

    Args:
        graphs: ``.onnx`` files from ``df2am export`` (fp32 or ``--int8``); all must carry the
            same features fingerprint (the same checkpoint, feature, flip and input size).
        threads: ONNX Runtime intra-op threads (None = physical cores).
        fallback: a PyTorch model used for a modality without a graph (None = refuse it);
            :func:`df2am.deploy.quantize.ranking_parity` uses this to test one int8 stream.

    Raises:
        ConfigError: a missing file, a graph without df2am metadata, two graphs of one
            modality, or graphs of different checkpoints.
    """

    def __init__(self, graphs: Sequence[str | os.PathLike[str]], *, threads: int | None = None,
                 fallback: torch.nn.Module | None = None) -> None:
        if not graphs:
            raise ConfigError("GraphModel needs at least one .onnx graph")
        self.graphs: dict[str, _Graph] = {}
        for g in (_Graph(Path(p), threads) for p in graphs):
            if g.meta["modality"] in self.graphs:
                raise ConfigError(f"two graphs of the {g.meta['modality']} stream: "
                                  f"{self.graphs[g.meta['modality']].path} and {g.path}")
            self.graphs[g.meta["modality"]] = g
        first = next(iter(self.graphs.values()))
        for g in self.graphs.values():
            if g.meta["df2am_fingerprint"] != first.meta["df2am_fingerprint"]:
                raise ConfigError(
                    f"{g.path} and {first.path} come from different models or preprocessing "
                    f"(fingerprints {g.meta['df2am_fingerprint'][:16]}… vs "
                    f"{first.meta['df2am_fingerprint'][:16]}…)")
        precisions = {g.meta.get("precision", "fp32") for g in self.graphs.values()}
        if len(precisions) > 1:
            raise ConfigError(f"graphs of one model must share a precision, got {precisions}")
        self.meta = first.meta
        self.fallback = fallback
        cfg = Config()
        cfg.data.height, cfg.data.width = int(self.meta["input_height"]),\
            int(self.meta["input_width"])
        #: What extraction reads from a run config: the input size (as ``load_model`` sets).
        self.run_config = cfg

    # ---- what a features sidecar records

    @property
    def fingerprint(self) -> str:
        return self.meta["df2am_fingerprint"]

    @property
    def weights_sha256(self) -> str:
        return self.meta.get("weights_sha256", "")

    @property
    def preprocessing(self) -> dict[str, Any]:
        return dict(json.loads(self.meta.get("preprocessing", "{}")))

    @property
    def checkpoint(self) -> str:
        return self.meta.get("checkpoint", "")

    @property
    def precision(self) -> str:
        return self.meta.get("precision", "fp32")

    @property
    def numerics(self) -> tuple[str, str]:
        return "onnxruntime", self.precision

    def record(self, modality: str) -> dict[str, Any]:
        return self.graphs[modality].record() if modality in self.graphs else {}

    def has(self, modality: str) -> bool:
        return modality in self.graphs or self.fallback is not None

    # ---- the model interface extraction uses

    @property
    def arch(self) -> str:
        return self.meta.get("arch", "")

    def check_feature(self, feature: str) -> str:
        """``feature`` when every graph computes it (a graph bakes one test feature in)."""
        for g in self.graphs.values():
            if g.meta.get("feature") != feature:
                raise ConfigError(f"{g.path} computes the {g.meta.get('feature')} feature, not "
                                  f"{feature!r}; export the graph with --feature {feature}")
        if self.fallback is not None:
            self.fallback.check_feature(feature)  # type: ignore[operator]
        return feature

    def to(self, *_: Any, **__: Any) -> GraphModel:
        return self  # ONNX Runtime's CPU provider: inputs are moved to the CPU in extract

    def eval(self) -> GraphModel:
        return self

    def parameters(self) -> Iterator[torch.Tensor]:
        yield torch.empty(0)  # on the CPU: callers that ask "where does it run" get the CPU

    def extract(self, images: torch.Tensor, modality: str, feature: str | None = None,
                flip: bool | None = None) -> torch.Tensor:
        """(N, C) float32 unit rows of already-normalised NCHW ``images`` (CPU tensor out)."""
        graph = self.graphs.get(modality)
        if graph is None:
            if self.fallback is not None:
                return self.fallback.extract(images, modality, feature=feature, flip=flip)  # type: ignore[operator]
            raise ConfigError(
                f"no ONNX graph of the {modality} stream was given (have: "
                f"{', '.join(sorted(self.graphs))}); export one with df2am export CHECKPOINT "
                f"--onnx OUT --modality {modality}")
        want = {"feature": graph.meta.get("feature"), "flip": graph.meta.get("flip")}
        if feature is not None and feature != want["feature"]:
            raise ConfigError(f"{graph.path} computes the {want['feature']} feature, not "
                              f"{feature!r}; export the graph with --feature {feature}")
        if flip is not None and str(bool(flip)).lower() != want["flip"]:
            raise ConfigError(f"{graph.path} was exported with flip={want['flip']}; export it "
                              f"with --{'' if flip else 'no-'}flip")
        x = np.ascontiguousarray(images.detach().float().cpu().numpy())
        out = graph.session.run(None, {INPUT_NAME: x})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32))


@dataclass
class QueryModel:
    """What extracts the queries of an index search (:func:`load_query_model`)."""

    model: Any
    cfg: Config
    numerics: tuple[str, str]
    source: str
    note: str | None = None  # an allowed mix of numerics, to record with the results


def load_query_model(index: Any, *, checkpoint: str | os.PathLike[str] | None = None,
                     graphs: Sequence[str | os.PathLike[str]] = (), device: str = "cpu",
                     threads: int | None = None, allow_mixed: bool = False) -> QueryModel:
    """The model for queries of ``index`` (a :class:`~df2am.deploy.index.SearchIndex`):
    ``graphs`` (ONNX Runtime), else ``checkpoint``, else **the checkpoint the gallery features
    were extracted with** (recorded in the index sidecar). Its fingerprint must equal the
    index's, and its numerics must fit the gallery's (:func:`check_numerics`)::

        qm = load_query_model(load_index("out/gallery_index"))      # the recorded checkpoint
        feats, _, _ = extract_paths(qm.model, qm.cfg, files, "ir")

    Raises:
        CheckpointError: no checkpoint given or recorded, the recorded file is gone (moved),
            or it changed since extraction — each naming the recorded path and what is there.
        FingerprintMismatchError: a given checkpoint or graph of another model.
        MixedNumericsError: int8 mixed with float without ``allow_mixed``.
    """
    if graphs and checkpoint is not None:
        raise ConfigError("give --checkpoint or --onnx, not both")
    check_threads(threads, used=bool(graphs))
    if graphs:
        gm = GraphModel(graphs, threads=threads)
        index.check_fingerprint(gm.fingerprint, f"the graph(s) {', '.join(map(str, graphs))}")
        qm = QueryModel(gm, gm.run_config, gm.numerics, ", ".join(str(g) for g in graphs))
    else:
        qm = _checkpoint_model(index, checkpoint, device)
    qm.note = check_numerics(index.numerics, qm.numerics, allow_mixed=allow_mixed,
                             what=f"the queries ({qm.source})")
    return qm


def _checkpoint_model(index: Any, checkpoint: str | os.PathLike[str] | None,
                      device: str) -> QueryModel:
    """PyTorch fp32 queries: the given checkpoint, or the one the index records, verified."""
    from df2am.deploy.api import load_model
    from df2am.deploy.features import model_fingerprint

    recorded = str(index.meta.get("checkpoint") or "")
    path = Path(checkpoint) if checkpoint is not None else Path(recorded)
    if checkpoint is None:
        if not recorded:
            raise CheckpointError(
                "the index records no checkpoint (its features predate the record, or came "
                "from a graph exported without one): pass --checkpoint")
        if not path.is_file():
            raise CheckpointError(
                f"the index's features were extracted with checkpoint {recorded}, but nothing "
                "is there now (moved or deleted?); pass --checkpoint with its new path")
    elif not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    model, cfg = load_model(path, device=device)
    found = model_fingerprint(model, cfg)[0]
    if checkpoint is None and found != index.fingerprint:
        raise CheckpointError(
            f"checkpoint {recorded} has changed since the gallery features were extracted "
            f"with it: found fingerprint {found[:16]}…, the index records "
            f"{index.fingerprint[:16]}…; pass --checkpoint with the original weights")
    index.check_fingerprint(found, f"the queries (checkpoint {path})")
    logger.info("queries: checkpoint %s (%s)", path,
                "given" if checkpoint is not None else "recorded in the index")
    return QueryModel(model, cfg, ("torch", "fp32"), str(path))
