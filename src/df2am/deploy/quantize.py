"""int8 CPU inference: quantise an exported graph with ONNX Runtime; check it by ranking quality.

::

    from df2am.deploy.quantize import quantize_onnx, ranking_parity

    quantize_onnx("deploy/ir.onnx", "deploy/ir_int8.onnx", calibration="photos/ir_samples/")
    report = ranking_parity(model, cfg, "/data/synthetic_sysu",
                            ["deploy/ir_int8.onnx", "deploy/rgb_int8.onnx"])
    report["delta"]["mAP"], report["ok"]        # int8 − fp32 in points; within 0.5?

Command line: ``df2am export CHECKPOINT --onnx OUT.onnx --modality ir --int8 --calibration
DIR|LIST`` (the fp32 graph is exported, quantised, and the int8 graph written at OUT).

**Static (the default) vs dynamic.** ONNX Runtime has two ways to quantise:

* ``static`` — QDQ format (QuantizeLinear/DequantizeLinear pairs around each op),
  activations uint8 with ranges **calibrated on your own images** (min/max over the
  calibration batches), weights int8 **per output channel** (each filter its own scale: BN
  is folded into the convolution weights by the exporter, which spreads their ranges per
  channel). ORT's optimiser fuses every DQ→Conv→Q into ``QLinearConv`` (and Add into
  ``QLinearAdd``, pooling, MatMul, Softmax likewise) running in NHWC: measured on a ResNet-50
  DF²AM at 256 × 128 on an AVX2 CPU, all 53 convolutions and 19 residual adds run int8,
  QLinearConv is 92 % of the time, and the graph is ≈ 1.6–1.7× ORT fp32.
* ``dynamic`` — weights int8, activation ranges computed per batch at run time. ORT turns
  each Conv into ``DynamicQuantizeLinear → ConvInteger → Cast → Mul`` (MatMul likewise): no
  fusion, no NHWC kernels, a quantise pass per layer. On the same CPU and network it ran at
  **0.22× ORT fp32** (4.5× slower). It needs no calibration images, which is its only merit
  for a CNN; it exists here for the case "no images of the deployment cameras at hand", and
  ``df2am export --int8`` asks for it explicitly (``--quantize dynamic``).

So the default is static, and static needs a calibration set: a folder or list file of a few
hundred images *from the deployment's cameras, of the graph's modality* (ranges are taken
from them; images of another domain give ranges that clip or waste the 8 bits).

**Weights: 7-bit (``reduce_range``, default on).** On x86 CPUs without AVX-512 VNNI (AVX2 only:
most of AMD's EPYCs before Zen 4, older Xeons), ORT's u8×s8 kernel multiplies with
``vpmaddubsw``, whose int16 pair sums can saturate for 8-bit weights; 7-bit weights cannot
saturate. With VNNI it costs a bit of resolution and nothing else; the graph is the same file
on every CPU, so the safe setting is the default (``reduce_range=False`` to trade it back).

Parity is measured as **ranking quality** (:func:`ranking_parity`): the dataset's test
protocol evaluated with the PyTorch fp32 model and with the int8 graph(s); mAP and Rank-1
must stay within :data:`RANKING_TOLERANCE` points.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from df2am.atomic import atomic_path
from df2am.config import Config
from df2am.data.cache import decode_resize
from df2am.data.transforms import TestTransform
from df2am.deploy.export import ExportError, read_metadata, require_package
from df2am.deploy.features import list_images
from df2am.errors import ConfigError, DatasetError

__all__ = [
    "DEFAULT_CALIBRATION_IMAGES",
    "QUANT_MODES",
    "RANKING_TOLERANCE",
    "calibration_images",
    "feature_agreement",
    "optimized_ops",
    "quantize_onnx",
    "ranking_parity",
]

logger = logging.getLogger(__name__)

QUANT_MODES = ("static", "dynamic")
#: Calibration images used at most (an even sample of a longer list): min/max ranges settle
#: within a few hundred images, and each costs a full forward pass with every activation kept.
DEFAULT_CALIBRATION_IMAGES = 200
#: Largest accepted |int8 − fp32| of mAP and of Rank-1, in points (percent).
RANKING_TOLERANCE = 0.5
_WHAT = "int8 quantisation"


def calibration_images(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                       height: int, width: int, *,
                       max_images: int = DEFAULT_CALIBRATION_IMAGES) -> np.ndarray:
    """Decoded, resized calibration images (N, H, W, 3) uint8: a folder or list file (as
    ``df2am extract --images`` reads them) or a list of paths, evenly sampled down to
    ``max_images`` in listed order (deterministic).

    Raises:
        DatasetError: no image, or an image that cannot be decoded (named).
    """
    if max_images < 1:
        raise ConfigError(f"--calibration-max must be >= 1, got {max_images}")
    if isinstance(source, (str, os.PathLike)):
        root, paths = list_images(source)
        files = [Path(p) if Path(p).is_absolute() else root / p for p in paths]
    else:
        files = [Path(p) for p in source]
    if not files:
        raise DatasetError("the calibration set is empty")
    if len(files) > max_images:
        files = [files[i] for i in np.linspace(0, len(files) - 1, max_images).round().astype(int)]
    out = np.empty((len(files), height, width, 3), np.uint8)
    for i, f in enumerate(files):
        try:
            out[i] = decode_resize(f, (height, width), geometry="warn")
        except DatasetError as exc:
            raise DatasetError(f"calibration image {f} cannot be used: {exc}") from None
    return out


def _reader(images: np.ndarray, batch_size: int) -> Any:
    """An ORT ``CalibrationDataReader`` yielding normalised NCHW float32 batches."""
    quant = require_package("onnxruntime.quantization", _WHAT)
    height, width = images.shape[1:3]
    transform = TestTransform(height, width)

    starts = list(range(0, len(images), batch_size))

    class Reader(quant.CalibrationDataReader):  # type: ignore[misc, name-defined]
        """Batches ``start_index``..``end_index`` (ORT's strided calibration sets the range,
        so only one batch's activations are held at a time)."""

        def __init__(self) -> None:
            self.set_range(0, len(starts))

        def __len__(self) -> int:
            return len(starts)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.todo = iter(starts[start_index:end_index])

        def get_next(self) -> dict[str, np.ndarray] | None:
            start = next(self.todo, None)
            if start is None:
                return None
            raw = torch.from_numpy(images[start:start + batch_size])
            return {"images": transform(raw).contiguous().numpy()}

    return Reader()


def quantize_onnx(
    fp32_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    calibration: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    mode: str = "static",
    per_channel: bool = True,
    reduce_range: bool = True,
    max_images: int = DEFAULT_CALIBRATION_IMAGES,
    batch_size: int = 8,
) -> Path:
    """Write the int8 version of an exported fp32 graph (module docstring for the choices).

    Args:
        fp32_path: a graph of :func:`df2am.deploy.export.export_onnx`.
        out_path: the int8 graph to write (atomically); its metadata is the fp32 graph's
            plus ``precision=int8``, ``quantization``, ``per_channel``, ``reduce_range`` and
            ``calibration_images``.
        calibration: folder, list file or paths of calibration images (``static`` only).
        mode: ``"static"`` (QDQ, calibrated; needs ``calibration``) or ``"dynamic"``.
        per_channel, reduce_range: weight quantisation per output channel; 7-bit weights.
        max_images, batch_size: calibration sample size and batch.

    Raises:
        ExportError: ``onnxruntime`` missing (names the extra), or quantisation failed.
        ConfigError: a bad mode, static without calibration, dynamic with it.
        DatasetError: a calibration image that cannot be decoded (named).
    """
    if mode not in QUANT_MODES:
        raise ConfigError(f"--quantize must be one of {QUANT_MODES}, got {mode!r}")
    if mode == "static" and calibration is None:
        raise ConfigError(
            "static int8 quantisation needs calibration images of the deployment's cameras "
            "(--calibration DIR|LIST, a few hundred of the graph's modality); without any, "
            "--quantize dynamic works but runs a CNN slower than fp32 (docs/benchmarks.md)")
    if mode == "dynamic" and calibration is not None:
        raise ConfigError("--calibration is for static quantisation; dynamic takes none")
    if batch_size < 1:
        raise ConfigError(f"calibration batch size must be >= 1, got {batch_size}")
    quant = require_package("onnxruntime.quantization", _WHAT)
    meta = read_metadata(fp32_path)
    if meta.get("precision", "fp32") != "fp32":
        raise ConfigError(f"{fp32_path} is already {meta['precision']}; quantise the fp32 graph")
    images = (calibration_images(calibration, int(meta["input_height"]),
                                 int(meta["input_width"]), max_images=max_images)
              if calibration is not None else None)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="df2am_quant_") as tmp:
        pre, q = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        try:
            # Shape inference + ORT's basic optimisations, as ORT's quantisation guide asks.
            quant.shape_inference.quant_pre_process(str(fp32_path), str(pre),
                                                     skip_symbolic_shape=True)
            _quantize(quant, pre, q, images, mode, per_channel, reduce_range, batch_size)
        except (DatasetError, ConfigError):
            raise
        except Exception as exc:  # ORT's tools raise many types; the message is what matters
            raise ExportError(f"{_WHAT} of {fp32_path} failed: {exc}") from exc
        extra = {"precision": "int8",
                 "quantization": "static-qdq" if mode == "static" else "dynamic",
                 "per_channel": str(per_channel).lower(),
                 "reduce_range": str(reduce_range).lower(),
                 "calibration_images": str(0 if images is None else len(images))}
        _restamp(q, out, {**meta, **extra})
    logger.info("wrote %s (%s int8, per_channel=%s, reduce_range=%s, %s calibration images, "
                "%.1f MB)", out, mode, per_channel, reduce_range, extra["calibration_images"],
                out.stat().st_size / 1e6)
    return out


def _quantize(quant: Any, pre: Path, out: Path, images: np.ndarray | None, mode: str,
              per_channel: bool, reduce_range: bool, batch_size: int) -> None:
    """ORT's quantize_static (QDQ, u8 activations, s8 weights, min/max) or quantize_dynamic."""
    if mode == "dynamic":
        quant.quantize_dynamic(str(pre), str(out), per_channel=per_channel,
                               reduce_range=reduce_range, weight_type=quant.QuantType.QInt8)
        return
    assert images is not None
    quant.quantize_static(
        str(pre), str(out), _reader(images, batch_size),
        quant_format=quant.QuantFormat.QDQ,
        # u8 activations × s8 weights: the kernel ORT optimises on x86 (u8×u8 measured 1.6×
        # slower on AVX2); symmetric int8 weights, zero point 0.
        activation_type=quant.QuantType.QUInt8, weight_type=quant.QuantType.QInt8,
        per_channel=per_channel, reduce_range=reduce_range,
        calibrate_method=quant.CalibrationMethod.MinMax,
        # Ranges are reduced after every batch (and merged: min of mins, max of maxes) instead
        # of keeping every batch's activations, ~60 MB per image for a ResNet-50 at 256 × 128.
        # (CalibMaxIntermediateOutputs would be the obvious option, but ORT 1.32 discards the
        # batches it should reduce: "No data is collected".)
        extra_options={"CalibStridedMinMax": 1},
        # The 1-d BNNecks of the head are tiny and per-channel axis 1 does not exist for them.
        op_types_to_quantize=["Conv", "MatMul", "Add", "Mul", "Relu", "Clip", "MaxPool",
                              "AveragePool", "GlobalAveragePool", "Softmax", "Concat"],
    )


def _restamp(src: Path, out: Path, meta: dict[str, str]) -> None:
    """Copy ``src`` to ``out`` (atomically) with ``meta`` as its metadata_props."""
    onnx = require_package("onnx", _WHAT)
    proto = onnx.load_model(str(src))
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_path(out) as tmp:
        onnx.save_model(proto, str(tmp), format="protobuf")


def optimized_ops(path: str | os.PathLike[str], threads: int | None = None) -> dict[str, int]:
    """Operator counts of the graph **as ONNX Runtime runs it** (after its optimisations):
    for an int8 graph, ``QLinearConv`` counts the convolutions that run int8 and a remaining
    ``Conv`` one that runs in float — how to see that static quantisation took::

        ops = optimized_ops("ir_int8.onnx")
        ops.get("QLinearConv", 0), ops.get("Conv", 0)      # e.g. (53, 0) for a ResNet-50
    """
    ort = require_package("onnxruntime", "ONNX Runtime inference")
    onnx = require_package("onnx", "ONNX Runtime inference")
    from df2am.deploy.export import physical_cores

    with tempfile.TemporaryDirectory(prefix="df2am_ops_") as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or physical_cores()
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        opts.log_severity_level = 3  # the "hardware specific optimisations" notice
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        graph = onnx.load_model(opts.optimized_model_filepath, load_external_data=False).graph
    counts: dict[str, int] = {}
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def feature_agreement(reference: Any, graph: Any, images: np.ndarray, modality: str, *,
                      batch_size: int = 32) -> dict[str, float]:
    """Cosine similarity of two extractors' unit features on decoded ``images`` (N, H, W, 3)
    uint8: ``{"min_cos", "mean_cos", "max_abs"}`` (``reference``/``graph``: anything with
    ``extract(images, modality)``, e.g. a DF2AMNet and a :class:`~df2am.deploy.runtime.
    GraphModel`)."""
    transform = TestTransform(*images.shape[1:3])
    cos, diff = [], 0.0
    for start in range(0, len(images), batch_size):
        x = transform(torch.from_numpy(images[start:start + batch_size])).contiguous()
        a = reference.extract(x, modality).float().cpu()
        b = graph.extract(x, modality).float().cpu()
        cos.append((a * b).sum(1))
        diff = max(diff, float((a - b).abs().max()))
    c = torch.cat(cos)
    return {"min_cos": float(c.min()), "mean_cos": float(c.mean()), "max_abs": diff}


def ranking_parity(model: torch.nn.Module, cfg: Config, root: str | os.PathLike[str],
                   graphs: Sequence[str | os.PathLike[str]], *, trials: int | None = None,
                   tolerance: float = RANKING_TOLERANCE, threads: int | None = None,
                   batch_size: int | None = None) -> dict[str, Any]:
    """The test protocol of ``cfg`` (its dataset at ``root``) with the PyTorch model and with
    the graphs (a modality without a graph runs on ``model``): their mAP and Rank-1 (%) and the
    differences, ``ok`` when both are within ``tolerance`` points::

        r = ranking_parity(model, cfg, root, ["ir_int8.onnx", "rgb_int8.onnx"], trials=10)
        r == {"fp32": {"mAP": 19.3, "rank1": 13.4}, "graphs": {...}, "delta": {...},
              "tolerance": 0.5, "ok": True, "precision": "int8", "trials": 10}
    """
    from df2am.assess.evaluator import evaluate_model
    from df2am.deploy.runtime import GraphModel

    gm = GraphModel(graphs, threads=threads, fallback=model)
    kw: dict[str, Any] = {"trials": trials, "batch_size": batch_size, "device": "cpu"}
    ref = evaluate_model(model, cfg, root, **kw).metrics()
    got = evaluate_model(gm, cfg, root, **kw).metrics()  # type: ignore[arg-type]
    keys = ("mAP", "rank1")
    delta = {k: got[k] - ref[k] for k in keys}
    report = {"fp32": {k: ref[k] for k in keys}, "graphs": {k: got[k] for k in keys},
              "delta": delta, "tolerance": tolerance, "precision": gm.precision,
              "ok": all(abs(v) <= tolerance for v in delta.values()),
              "modalities": sorted(gm.graphs), "trials": trials or cfg.eval.trials}
    logger.info("ranking parity (%s graphs of %s): mAP %.2f vs %.2f, Rank-1 %.2f vs %.2f",
                gm.precision, ", ".join(report["modalities"]), got["mAP"], ref["mAP"],
                got["rank1"], ref["rank1"])
    return report
