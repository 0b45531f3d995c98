"""Export the test-feature path of a trained network to ONNX, and check it against PyTorch.

One ONNX graph holds the inference path of **one modality's stream**: that modality's stem
(``Conv1`` for ``"rgb"``, ``Conv2`` for ``"ir"``, with its specific stages), the shared trunk,
the chosen test feature (any the architecture offers: ``fused`` / ``global`` / ``bn_global``
for DF²AM, ``bn_global`` / ``global`` for AGW), optional flip averaging and the L2
normalisation — exactly :meth:`df2am.models.ReIDNet.extract`, for any ``model.arch``::

    from df2am.deploy.api import load_model
    from df2am.deploy.export import check_parity, export_onnx

    model, cfg = load_model("runs/sysu/model_final.pt")
    path = export_onnx(model, "runs/sysu/ir.onnx", modality="ir",
                       height=cfg.data.height, width=cfg.data.width)
    max_diff = check_parity(model, path)          # ONNX Runtime vs PyTorch, random inputs

    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feats = sess.run(None, {"images": batch.numpy()})[0]   # (N, C), unit rows

Graph contract:

* input ``images``: float32, NCHW ``(N, 3, height, width)``, ``N`` dynamic, **already
  normalised** as :class:`df2am.data.transforms.TestTransform` does: RGB decode, bilinear
  resize to ``height`` × ``width``, ``(x / 255 - mean) / std`` with the ImageNet mean
  (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225). IR/thermal images are decoded to RGB
  (three equal channels) like every image. The graph does no preprocessing, so a deployment
  can do it on whatever decodes its frames.
* output ``features``: float32 ``(N, C)``, L2-normalised rows (cosine similarity = dot product).
* ``metadata_props``: ``df2am_version``, ``modality``, ``feature``, ``flip``, ``input_height``,
  ``input_width``, ``input_layout`` (``NCHW``), ``input_range`` (how to get the input),
  ``mean``, ``std`` (comma-separated), ``arch`` (``model.arch``), ``feature_dim``, ``opset``,
  ``precision`` (``fp32``; ``int8`` after :func:`df2am.deploy.quantize.quantize_onnx`) and,
  when given, ``checkpoint_sha256`` (:func:`checkpoint_fingerprint`) and ``checkpoint`` (its
  path) — what a server needs to feed the graph without reading this code. With the run config
  (``cfg``, or ``model.run_config`` from ``load_model``) also ``df2am_fingerprint``,
  ``weights_sha256`` and ``preprocessing`` (JSON): the features fingerprint of
  :mod:`df2am.deploy.features`, so features computed by the graph (``df2am extract
  GRAPH.onnx``) are checked against an index exactly like PyTorch's.

Why one graph per modality rather than one graph with a modality input: the stem choice is a
Python branch; made data-dependent it would export **both** stems plus an ONNX ``If``
control-flow node — a bigger file, a graph the runtime optimises less well (constant folding
and fusion stop at subgraph borders), and a branch on every call. A deployment usually serves
one camera type per endpoint anyway (an RGB camera or a thermal one), so it loads the one
graph it needs; exporting both modalities costs two calls and duplicates only the shared
trunk's weights on disk.

``onnx``, ``onnxruntime`` and ``onnxscript`` (the dynamo exporter's back end) come with the
``deploy`` extra: ``pip install 'df2am[deploy]'``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import json
import logging
import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from df2am import __version__
from df2am.atomic import atomic_path
from df2am.config import Config
from df2am.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from df2am.errors import CheckpointError, ConfigError, Df2amError

if TYPE_CHECKING:  # the networks import torchvision: not needed at import time
    from df2am.models import ReIDNet

__all__ = [
    "DEFAULT_OPSET",
    "ExportError",
    "INPUT_NAME",
    "InferenceGraph",
    "OUTPUT_NAME",
    "PARITY_TOLERANCE",
    "export_onnx",
    "check_parity",
    "check_tolerance",
    "checkpoint_fingerprint",
    "onnx_session",
    "physical_cores",
    "read_metadata",
    "require_package",
]

logger = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAME = "features"
#: Largest max-abs difference of unit-norm features accepted between ONNX Runtime and PyTorch.
#: fp32 kernels of two runtimes differ by summation order (≈ 1e-6 on unit rows); 1e-4 leaves
#: room for deep trunks while still catching a wrong stem, feature or flip (differences ≫ 1e-2).
PARITY_TOLERANCE = 1e-4

#: The lowest opset the dynamo exporter emits natively. Below it torch converts the graph
#: down afterwards, and for this network that conversion fails (ONNX's converter cannot move
#: ReduceMean/ReduceL2's ``axes`` input back to an attribute), leaving an opset-18 graph.
DYNAMO_MIN_OPSET = 18
DEFAULT_OPSET = DYNAMO_MIN_OPSET
_LEGACY_MIN_OPSET = 11  # the TorchScript exporter needs 11+ for dynamic slices
_DEPLOY_HINT = "pip install 'df2am[deploy]'"
_MODALITIES = ("rgb", "ir")


class ExportError(Df2amError):
    """ONNX export is impossible here (missing packages) or the exported graph is wrong."""


def require_package(module: str, what: str = "ONNX export") -> Any:
    """Import an optional deployment dependency or raise an :class:`ExportError` naming the fix
    (``pip install 'df2am[deploy]'``)::

        ort = require_package("onnxruntime", "int8 inference")
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ExportError(
            f"{what} needs the '{module}' package, which is not installed: {_DEPLOY_HINT}"
        ) from exc


_require = require_package


class InferenceGraph(nn.Module):
    """``ReIDNet.extract`` of one modality as a plain ``forward(images)`` (what gets traced):
    :meth:`~df2am.models.ReIDNet.test_features`, flip averaging, L2 normalisation.

    Flip averaging runs the images and their mirror images as **one** batch of 2N: the graph
    then holds the trunk once (not twice), and one big batch uses the cores better. Eval-mode
    BatchNorm is per-sample, so the features equal ``extract``'s two separate passes.
    """

    def __init__(self, model: ReIDNet, modality: str, feature: str, flip: bool) -> None:
        super().__init__()
        self.model = model
        self.modality = modality
        self.feature = feature
        self.flip = flip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.flip:
            n = images.shape[0]
            both = self.model.test_features(  # the code path of extract()
                torch.cat([images, torch.flip(images, dims=[3])], dim=0),
                self.modality,
                self.feature,
            ).float()
            feats = (both[:n] + both[n:]) / 2
        else:
            feats = self.model.test_features(images, self.modality, self.feature).float()
        return F.normalize(feats, dim=1)


def check_tolerance(tolerance: float | None, what: str = "--tolerance") -> None:
    """A parity tolerance is a finite difference >= 0 (None: only measure); NaN would make
    every comparison pass."""
    if tolerance is not None and not (math.isfinite(tolerance) and tolerance >= 0):
        raise ConfigError(f"{what} must be a finite number >= 0, got {tolerance}")


def checkpoint_fingerprint(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a checkpoint file: ties an exported graph to the weights it came from.

    ::

        checkpoint_fingerprint("runs/sysu/model_final.pt")   # '3f2a…' (64 hex digits)
    """
    p = Path(path)
    h = hashlib.sha256()
    try:
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {p}: {exc}") from None
    return h.hexdigest()


def _resolve(model: ReIDNet, modality: str, feature: str | None, flip: bool | None):
    if modality not in _MODALITIES:
        raise ConfigError(f"modality must be 'rgb' or 'ir', got {modality!r}")
    if not hasattr(model, "test_features") or getattr(model, "cfg", None) is None:
        raise ConfigError("export_onnx needs a df2am network (a ReIDNet, e.g. from load_model)")
    cfg = model.cfg
    # The architecture's own rule: a feature it does not offer names model.test_feature.
    feature = model.check_feature(cfg.test_feature if feature is None else feature)
    flip = cfg.flip_test if flip is None else bool(flip)
    return feature, flip


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporters' progress chatter (INFO logs of every rewrite pass, deprecation
    and tracer warnings we have handled): the CLI logs at INFO and would drown in it."""
    loggers = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        with warnings.catch_warnings():
            # Legacy exporter: its deprecation notice, and the TracerWarning of part_pool's
            # "P divides H" check, which is a constant here because the input size is fixed.
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _export(graph: nn.Module, example: torch.Tensor, opset: int, dynamo: bool) -> Any:
    """Run ``torch.onnx.export`` and return the ``onnx.ModelProto`` (nothing written yet)."""
    common: dict[str, Any] = {
        "input_names": [INPUT_NAME],
        "output_names": [OUTPUT_NAME],
        "opset_version": opset,
        "verbose": False,
    }
    if dynamo:
        program = torch.onnx.export(
            graph,
            (example,),
            dynamo=True,
            dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1, max=4096)}},
            # Weights inside the graph's file: a ResNet-50 graph is ~100 MB, far under
            # protobuf's 2 GB, and one file is easier to ship than .onnx + .onnx.data.
            external_data=False,
            optimize=True,
            **common,
        )
        assert program is not None  # dynamo=True without a file name returns an ONNXProgram
        return program.model_proto
    onnx = _require("onnx")
    buf = io.BytesIO()
    torch.onnx.export(
        graph,
        (example,),
        buf,
        dynamo=False,
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        do_constant_folding=True,
        **common,
    )
    return onnx.load_model_from_string(buf.getvalue())


def export_onnx(
    model: ReIDNet,
    out_path: str | os.PathLike[str],
    *,
    modality: str,
    height: int,
    width: int,
    opset: int = DEFAULT_OPSET,
    feature: str | None = None,
    flip: bool | None = None,
    fingerprint: str | None = None,
    cfg: Config | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
) -> Path:
    """Export ``model``'s test-feature path for ``modality`` to one self-contained ONNX file.

    Args:
        model: any :class:`~df2am.models.ReIDNet` (left in the train/eval mode it was in; it is
            exported in eval mode, on the CPU, in fp32).
        out_path: the ``.onnx`` file to write (parent folders are created); weights are stored
            inside it, not in a side ``.data`` file (a ResNet-50 graph is ≈ 100 MB, far under
            ONNX's 2 GB protobuf limit, and one file is easier to ship).
        modality: ``"rgb"`` (stem ``Conv1``) or ``"ir"`` (stem ``Conv2``).
        height, width: the input size the graph is traced and documented at (the run's
            ``data.height`` × ``data.width``). Only the batch axis is dynamic: the DF² strips
            (``part_pooling="strict"``) need the feature-map height fixed anyway.
        opset: ONNX opset version; default 18 (onnxruntime ≥ 1.14). 18 and above go through
            the dynamo exporter, 11–17 through the legacy TorchScript one (see below).
        feature, flip: as :meth:`~df2am.models.ReIDNet.extract`; ``None`` = the model config's
            ``test_feature`` / ``flip_test``. Both are baked into the graph.
        fingerprint, checkpoint: the checkpoint's SHA-256 (:func:`checkpoint_fingerprint`)
            and path, stored in the metadata when given.
        cfg: the run config (None = ``model.run_config``, set by ``load_model``): with it the
            features fingerprint is stamped too (module docstring).

    Returns the path written.

    Exporter — ``dynamo=`` is always passed explicitly, because its default changed (torch 2.9
    made ``dynamo=True`` the default; a bare call means different things on different
    torch versions):

    * opset ≥ 18: ``dynamo=True`` (torch 2.14's default and maintained path: ``torch.export``
      → onnxscript, dynamic batch as a ``torch.export.Dim``, onnxscript's graph optimiser).
      18 is its lowest native opset; asked for 17 it exports at 18 and converts down, and for
      this network the conversion fails and silently leaves opset 18 (ReduceMean/ReduceL2
      ``axes`` inputs). That is why the default here is 18, not 17.
    * opset 11–17: ``dynamo=False``, the TorchScript tracer with ``dynamic_axes`` — deprecated
      (torch warns that it will be removed) but the only exporter that writes these opsets,
      for runtimes older than onnxruntime 1.14. Same graph contract, same parity check.

    The produced opset is checked against ``opset`` (an :class:`ExportError` otherwise), and
    the exporter used is recorded in the metadata (``exporter``).

    Raises:
        ExportError: ``onnx`` / ``onnxscript`` missing (names ``pip install 'df2am[deploy]'``),
            or the exporter failed.
        ConfigError: a bad modality, feature or size.
    """
    onnx = _require("onnx")
    feature, flip = _resolve(model, modality, feature, flip)
    if height < 1 or width < 1:
        raise ConfigError(f"height and width must be >= 1, got {height} x {width}")
    if opset < _LEGACY_MIN_OPSET:
        raise ConfigError(f"opset must be >= {_LEGACY_MIN_OPSET}, got {opset}")
    dynamo = opset >= DYNAMO_MIN_OPSET
    if dynamo:
        _require("onnxscript")  # the dynamo exporter's translator: fail here with the hint
    proto = _trace(model, modality, feature, flip, height, width, opset, dynamo)
    meta = _metadata(model, modality, feature, flip, height, width, opset, dynamo, fingerprint)
    meta.update(_provenance(model, cfg, feature, flip, checkpoint))
    _stamp(proto, meta, f"df2am {__version__}: {modality} stream, {feature} feature, flip={flip}")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:  # a half-written graph never sits at OUT
        onnx.save_model(proto, str(tmp), format="protobuf")  # not inferred from ".tmp"
    logger.info(
        "exported the %s stream (%s feature, flip=%s, %dx%d, opset %d) to %s (%.1f MB)",
        modality, feature, flip, height, width, opset, out, out.stat().st_size / 1e6,
    )
    return out


def _provenance(model: nn.Module, cfg: Config | None, feature: str, flip: bool,
                checkpoint: str | os.PathLike[str] | None) -> dict[str, str]:
    """The features fingerprint (with a run config) and the checkpoint path (when given)."""
    from df2am.deploy.features import model_fingerprint  # features imports torch data code

    meta: dict[str, str] = {}
    if checkpoint is not None:
        meta["checkpoint"] = str(Path(checkpoint).resolve())
    cfg = cfg if cfg is not None else getattr(model, "run_config", None)
    if cfg is not None:
        fp, weights, pre = model_fingerprint(model, cfg, feature=feature, flip=flip)
        meta.update(df2am_fingerprint=fp, weights_sha256=weights,
                    preprocessing=json.dumps(pre, sort_keys=True))
    return meta


def _stamp(proto: Any, meta: dict[str, str], doc: str) -> None:
    """The graph's metadata (:func:`read_metadata`), producer and doc string, replaced."""
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "df2am"
    proto.producer_version = __version__
    proto.doc_string = doc


def _trace(model: ReIDNet, modality: str, feature: str, flip: bool, height: int, width: int,
           opset: int, dynamo: bool) -> Any:
    """The ONNX ModelProto of the fp32 CPU inference graph; ``model`` is restored after."""
    param = next(model.parameters())
    was_training = model.training
    device, dtype = param.device, param.dtype
    # The graph is fp32 and device-free; tracing on the CPU keeps CUDA out of the export.
    model.float().cpu().eval()
    graph = InferenceGraph(model, modality, feature, flip).eval()
    # Batch 2 for the example: torch.export specialises a size-1 dimension to a constant.
    example = torch.randn(2, 3, height, width)
    try:
        with torch.no_grad(), _quiet_exporter():
            proto = _export(graph, example, opset, dynamo)
    except ExportError:
        raise
    except Exception as exc:  # the exporters raise many types; the message is what matters
        raise ExportError(f"ONNX export of the {modality} stream failed: {exc}") from exc
    finally:
        model.to(device=device, dtype=dtype)
        model.train(was_training)
    got_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if got_opset != opset:
        raise ExportError(f"asked for ONNX opset {opset}, the exporter produced {got_opset}")
    return proto


def _metadata(model: ReIDNet, modality: str, feature: str, flip: bool, height: int,
              width: int, opset: int, dynamo: bool, fingerprint: str | None) -> dict[str, str]:
    """What a runtime needs to feed the graph and to know what it computes."""
    meta = {
        "df2am_version": __version__,
        "modality": modality,
        "feature": feature,
        "flip": str(flip).lower(),
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "input_layout": "NCHW",
        "input_height": str(height),
        "input_width": str(width),
        "input_range": "RGB, bilinear resize to input_height x input_width, "
        "(pixel/255 - mean) / std per channel (df2am TestTransform)",
        "mean": ",".join(str(v) for v in IMAGENET_MEAN),
        "std": ",".join(str(v) for v in IMAGENET_STD),
        "arch": str(getattr(model, "arch", "")),
        # Every test feature (f^g, BN(f^g), BN(f̃), AGW's pooled / BN(pooled)) has the
        # trunk's channel count.
        "feature_dim": str(int(model.feat_dim)),
        "output": "L2-normalised float32 features (N, feature_dim)",
        "opset": str(opset),
        "precision": "fp32",
        "exporter": f"torch {torch.__version__} " + ("dynamo" if dynamo else "torchscript"),
    }
    if fingerprint is not None:
        meta["checkpoint_sha256"] = fingerprint
    return meta


def read_metadata(onnx_path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``metadata_props`` of an exported graph as a dict (weights are not loaded)::

        read_metadata("ir.onnx")["modality"]   # 'ir'
    """
    onnx = _require("onnx")
    try:
        proto = onnx.load_model(str(onnx_path), load_external_data=False)
    except OSError as exc:
        raise ExportError(f"cannot read ONNX graph {onnx_path}: {exc.strerror or exc}") from None
    except Exception as exc:  # protobuf's DecodeError and friends: not a graph
        raise ExportError(f"{onnx_path}: not an ONNX graph (its content does not parse: "
                          f"{type(exc).__name__})") from None
    return {p.key: p.value for p in proto.metadata_props}


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads of one core counted once).

    ONNX Runtime's and oneDNN's kernels saturate a core's vector units with one thread, so a
    second thread on its sibling hyper-thread only competes; intra-op threads = physical cores
    is ONNX Runtime's own rule, applied here to the CPUs of this process's affinity mask (a
    container or ``taskset`` limit, which ORT's detection can miss). Falls back to the logical
    count where the topology cannot be read.
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topo / "physical_package_id").read_text().strip(),
                       (topo / "core_id").read_text().strip()))
        except OSError:
            cores.add(("?", str(cpu)))
    return max(1, len(cores))


def onnx_session(onnx_path: str | os.PathLike[str], threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session of ``onnx_path``: every graph optimisation (layout
    transforms, Conv+Add+ReLU fusion, QDQ → QLinearConv for int8 graphs), ``threads`` intra-op
    threads (None = :func:`physical_cores`) and one inter-op thread::

        sess = onnx_session("ir.onnx", threads=2)
        feats = sess.run(None, {"images": x.numpy()})[0]
    """
    ort = require_package("onnxruntime", "ONNX Runtime inference")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads) if threads is not None else physical_cores()
    # One inference at a time: inter-op threads would only compete with intra-op ones.
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
        raise ExportError(f"ONNX Runtime cannot load {onnx_path}: {exc}") from None


def check_parity(
    model: ReIDNet,
    onnx_path: str | os.PathLike[str],
    *,
    batch_sizes: tuple[int, ...] = (1, 3),
    seed: int = 0,
    images: torch.Tensor | None = None,
    tolerance: float | None = PARITY_TOLERANCE,
) -> float:
    """Max abs difference of ONNX Runtime vs ``model.extract`` features on the same inputs.

    The modality, feature, flip and input size are read from the graph's metadata, so the
    comparison is against exactly what was exported. Inputs are ``images`` (already
    normalised NCHW float32) or, by default, standard-normal tensors — the scale of
    ImageNet-normalised pixels — one batch per entry of ``batch_sizes`` (several sizes
    exercise the dynamic batch axis)::

        diff = check_parity(model, "ir.onnx")          # ExportError if diff > 1e-4
        diff = check_parity(model, "ir.onnx", tolerance=None)   # just measure

    Raises:
        ExportError: the difference exceeds ``tolerance``, the graph's output has the wrong
            shape, or either side gives non-finite features (NaN would compare as equal).
        ConfigError: ``tolerance`` is negative or not finite.
    """
    check_tolerance(tolerance)
    meta = read_metadata(onnx_path)
    modality, feature = meta["modality"], meta["feature"]
    flip = meta["flip"] == "true"
    h, w = int(meta["input_height"]), int(meta["input_width"])
    sess = onnx_session(onnx_path)
    device = next(model.parameters()).device
    if images is not None:
        batches = [images.float()]
    else:
        gen = torch.Generator().manual_seed(seed)
        batches = [torch.randn(n, 3, h, w, generator=gen) for n in batch_sizes]
    worst = 0.0
    for x in batches:
        want = model.extract(x.to(device), modality, feature=feature, flip=flip).cpu()
        got = torch.from_numpy(sess.run(None, {INPUT_NAME: x.contiguous().numpy()})[0])
        if got.shape != want.shape:
            raise ExportError(
                f"{onnx_path}: output shape {tuple(got.shape)} != PyTorch {tuple(want.shape)}"
            )
        bad_want, bad_got = int((~torch.isfinite(want)).sum()), int((~torch.isfinite(got)).sum())
        if bad_want or bad_got:
            # NaN compares as no difference: without this a NaN graph would pass.
            raise ExportError(
                f"{onnx_path}: non-finite features on a batch of {x.shape[0]} (PyTorch "
                f"{bad_want}, ONNX Runtime {bad_got} values); parity cannot be checked"
            )
        diff = float((got - want).abs().max())
        logger.debug("parity batch %d: max abs diff %.3g", x.shape[0], diff)
        worst = max(worst, diff)
    if tolerance is not None and worst > tolerance:
        raise ExportError(
            f"{onnx_path}: ONNX Runtime features differ from PyTorch by {worst:.3g} "
            f"(max abs), above the tolerance {tolerance:g}"
        )
    return worst
