"""``df2am export``: one modality's test-feature path of a checkpoint as an ONNX graph.

::

    df2am export runs/sysu/model_final.pt --onnx deploy/sysu_rgb.onnx --modality rgb
    df2am export runs/sysu/model_final.pt --onnx deploy/sysu_ir.onnx --modality ir --opset 17
    df2am export runs/sysu/model_final.pt --onnx ir_flip.onnx --modality ir --flip

    df2am export runs/sysu/model_final.pt --onnx deploy/ir_int8.onnx --modality ir \\
        --int8 --calibration photos/ir_samples/          # static int8, calibrated
    df2am export runs/sysu/model_final.pt --onnx deploy/ir_int8.onnx --modality ir \\
        --int8 --calibration ir_list.txt --parity-root /data/SYSU-MM01   # + ranking parity

After writing the graph the command runs it with ONNX Runtime on a few random normalised
batches (sizes 1 and 3: the batch axis is dynamic) and compares with PyTorch's
``model.extract``; it prints the max abs difference and fails (exit 2, no graph left behind)
above ``--tolerance``. Needs ``pip install 'df2am[deploy]'``.

``--int8`` quantises that fp32 graph with ONNX Runtime (:mod:`df2am.deploy.quantize`): static
QDQ, per-channel int8 weights, uint8 activations calibrated on ``--calibration`` images (the
default; ``--quantize dynamic`` needs no images but runs a CNN slower than fp32) and writes
the int8 graph at OUT. It then prints how close its features are to PyTorch's on the
calibration images (cosine) and, with ``--parity-root``, the test protocol's mAP and Rank-1
with the int8 stream against PyTorch fp32 (failing beyond ``--parity-tolerance`` points).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any

from df2am.atomic import check_output
from df2am.cli.arguments import feature_choices
from df2am.errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``export`` to the top-level parser."""
    from df2am.deploy.export import DEFAULT_OPSET, PARITY_TOLERANCE

    p = sub.add_parser(
        "export",
        help="export one modality's feature extractor of a checkpoint to ONNX (+ parity check)",
        description=(
            "Write one ONNX graph for one modality's stream (its stem, the shared trunk, the "
            "test feature, L2 normalisation) with a dynamic batch axis. Input: float32 NCHW "
            "images at the run's data.height x data.width, already normalised like df2am's "
            "test transform (ImageNet mean/std; recorded in the graph's metadata). Output: "
            "L2-normalised features (N, C). Then check ONNX Runtime against PyTorch."
        ),
    )
    p.add_argument("checkpoint", type=Path, help="model_final.pt or a training checkpoint")
    p.add_argument("--onnx", type=Path, required=True, metavar="OUT.onnx", help="graph to write")
    p.add_argument(
        "--modality",
        choices=["rgb", "ir"],
        required=True,
        help="rgb: visible-camera stem (Conv1); ir: infrared/thermal stem (Conv2)",
    )
    p.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        help=f"ONNX opset (default {DEFAULT_OPSET}; 11-17 use torch's legacy exporter)",
    )
    p.add_argument(
        "--feature",
        choices=feature_choices(),
        help="test feature (default model.test_feature; which exist depends on model.arch)",
    )
    p.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average with horizontally flipped images inside the graph (default "
        "model.flip_test)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=PARITY_TOLERANCE,
        help=f"largest accepted max abs feature difference (default {PARITY_TOLERANCE:g})",
    )
    _int8_options(p)
    p.set_defaults(func=_run_export)


def _int8_options(p: argparse.ArgumentParser) -> None:
    from df2am.deploy.quantize import DEFAULT_CALIBRATION_IMAGES, RANKING_TOLERANCE

    g = p.add_argument_group("int8 (ONNX Runtime quantisation)")
    g.add_argument("--int8", action="store_true", help="write an int8 graph at OUT")
    g.add_argument("--calibration", type=Path, metavar="DIR|LIST",
                   help="images of the graph's modality from the deployment's cameras "
                   "(folder or list file): static quantisation ranges come from them")
    g.add_argument("--quantize", choices=["static", "dynamic"],
                   help="static (default: QDQ, calibrated, int8 convolutions) or dynamic "
                   "(no calibration; slower than fp32 for a CNN on ONNX Runtime)")
    g.add_argument("--calibration-max", type=int,
                   help=f"calibration images used at most (default "
                   f"{DEFAULT_CALIBRATION_IMAGES}, an even sample)")
    g.add_argument("--reduce-range", action=argparse.BooleanOptionalAction,
                   help="7-bit weights (default on: no u8s8 saturation on CPUs without "
                   "AVX-512 VNNI)")
    g.add_argument("--parity-root", type=Path, metavar="DATASET_ROOT",
                   help="also evaluate the checkpoint's test protocol there with the int8 "
                   "stream vs PyTorch fp32 (mAP, Rank-1)")
    g.add_argument("--parity-trials", type=int, help="trials of that evaluation (default: "
                   "the config's eval.trials)")
    g.add_argument("--parity-tolerance", type=float,
                   help=f"largest accepted |int8 - fp32| of mAP and Rank-1, in points "
                   f"(default {RANKING_TOLERANCE:g})")


def _run_export(args: argparse.Namespace) -> int:
    from df2am.deploy.api import load_model
    from df2am.deploy.export import (
        ExportError,
        check_parity,
        check_tolerance,
        checkpoint_fingerprint,
    )

    if not args.checkpoint.is_file():
        raise CheckpointError(f"checkpoint not found: {args.checkpoint}")
    _check_int8_options(args)
    check_tolerance(args.tolerance)
    check_tolerance(args.parity_tolerance, what="--parity-tolerance")
    check_output(args.onnx, what="--onnx")
    model, cfg = load_model(args.checkpoint, device="cpu")
    with tempfile.TemporaryDirectory(prefix="df2am_export_") as tmp:
        fp32_out = Path(tmp) / "fp32.onnx" if args.int8 else args.onnx
        path = _export_fp32(model, cfg, args, fp32_out, checkpoint_fingerprint(args.checkpoint))
        try:
            diff = check_parity(model, path, batch_sizes=(1, 3), tolerance=args.tolerance)
        except ExportError:
            # A graph that disagrees with PyTorch must not be mistaken for a good one later.
            path.unlink(missing_ok=True)
            raise
        if args.int8:
            path = _quantize(model, cfg, args, path)
    print(
        f"wrote {path} ({args.modality} stream, {cfg.data.height}x{cfg.data.width}, "
        f"opset {args.opset}, {'int8' if args.int8 else 'fp32'}, "
        f"{path.stat().st_size / 1e6:.1f} MB)"
    )
    which = "; the fp32 graph before quantisation" if args.int8 else ""
    print(f"parity ONNX Runtime vs PyTorch: max abs diff {diff:.2e} (tolerance "
          f"{args.tolerance:g}{which})")
    return 0


#: The int8 options, their defaults, and the option each one needs.
_INT8_OPTIONS = {"calibration": (None, "--int8"), "quantize": ("static", "--int8"),
                 "calibration_max": (None, "--int8"), "reduce_range": (True, "--int8"),
                 "parity_root": (None, "--int8"), "parity_trials": (None, "--parity-root"),
                 "parity_tolerance": (None, "--parity-root")}


def _check_int8_options(args: argparse.Namespace) -> None:
    """An int8 option without ``--int8`` (or a parity option without ``--parity-root``) would
    be ignored: an error naming it. Then the defaults of those not given."""
    from df2am.deploy.quantize import DEFAULT_CALIBRATION_IMAGES, RANKING_TOLERANCE

    for key, (default, needs) in _INT8_OPTIONS.items():
        present = {"--int8": args.int8, "--parity-root": args.parity_root is not None}[needs]
        if getattr(args, key) is not None and not present:
            name = "no-reduce-range" if getattr(args, key) is False else key.replace("_", "-")
            raise ConfigError(f"--{name} goes with {needs}, which is not given: it would be "
                              "ignored")
        if getattr(args, key) is None:
            setattr(args, key, default)
    if args.calibration_max is None:
        args.calibration_max = DEFAULT_CALIBRATION_IMAGES
    if args.parity_tolerance is None:
        args.parity_tolerance = RANKING_TOLERANCE
    if args.parity_trials is not None and args.parity_trials < 1:
        raise ConfigError(f"--parity-trials must be >= 1, got {args.parity_trials}")
    if args.parity_root is not None and not args.parity_root.is_dir():
        raise ConfigError(f"--parity-root {args.parity_root}: not a folder")


def _export_fp32(model: Any, cfg: Any, args: argparse.Namespace, out: Path,
                 fingerprint: str) -> Path:
    from df2am.deploy.export import export_onnx

    return export_onnx(model, out, modality=args.modality, height=cfg.data.height,
                       width=cfg.data.width, opset=args.opset, feature=args.feature,
                       flip=args.flip, fingerprint=fingerprint, cfg=cfg,
                       checkpoint=args.checkpoint)


def _quantize(model: Any, cfg: Any, args: argparse.Namespace, fp32: Path) -> Path:
    """The int8 graph at ``--onnx``, its feature agreement and (``--parity-root``) ranking
    parity; a graph that fails the ranking tolerance is removed."""
    from df2am.deploy.quantize import (
        calibration_images,
        feature_agreement,
        quantize_onnx,
        ranking_parity,
    )
    from df2am.deploy.runtime import GraphModel

    out = quantize_onnx(fp32, args.onnx, calibration=args.calibration, mode=args.quantize,
                        reduce_range=args.reduce_range, max_images=args.calibration_max)
    if args.calibration is not None:
        images = calibration_images(args.calibration, cfg.data.height, cfg.data.width,
                                    max_images=args.calibration_max)
        agree = feature_agreement(model, GraphModel([out]), images, args.modality)
        print(f"int8 vs PyTorch fp32 on {len(images)} calibration images: cosine mean "
              f"{agree['mean_cos']:.4f}, min {agree['min_cos']:.4f}")
    if args.parity_root is not None:
        report = ranking_parity(model, cfg, args.parity_root, [out], trials=args.parity_trials,
                                tolerance=args.parity_tolerance)
        f, g = report["fp32"], report["graphs"]
        print(f"ranking parity ({args.modality} stream int8, the other PyTorch fp32, "
              f"{report['trials']} trial(s)): mAP {g['mAP']:.2f} vs {f['mAP']:.2f}, Rank-1 "
              f"{g['rank1']:.2f} vs {f['rank1']:.2f} (tolerance {args.parity_tolerance:g})")
        if not report["ok"]:
            out.unlink(missing_ok=True)
            raise ConfigError(f"the int8 graph moves mAP by {report['delta']['mAP']:+.2f} and "
                              f"Rank-1 by {report['delta']['rank1']:+.2f} points (tolerance "
                              f"{args.parity_tolerance:g}); not kept. Try more or more "
                              "typical --calibration images, or --no-reduce-range on a "
                              "VNNI CPU")
    return out
