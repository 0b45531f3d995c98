"""``df2am export``: one modality's test-feature path of a checkpoint as an ONNX graph.

::

    df2am export runs/sysu/model_final.pt --onnx deploy/sysu_rgb.onnx --modality rgb
    df2am export runs/sysu/model_final.pt --onnx deploy/sysu_ir.onnx --modality ir --opset 17
    df2am export runs/sysu/model_final.pt --onnx ir_flip.onnx --modality ir --flip

After writing the graph the command runs it with ONNX Runtime on a few random normalised
batches (sizes 1 and 3: the batch axis is dynamic) and compares with PyTorch's
``model.extract``; it prints the max abs difference and fails (exit 2, no graph left behind)
above ``--tolerance``. Needs ``pip install 'df2am[deploy]'``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from df2am.cli.arguments import feature_choices
from df2am.errors import CheckpointError

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
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from df2am.deploy.api import load_model
    from df2am.deploy.export import (
        ExportError,
        check_parity,
        checkpoint_fingerprint,
        export_onnx,
    )

    if not args.checkpoint.is_file():
        raise CheckpointError(f"checkpoint not found: {args.checkpoint}")
    model, cfg = load_model(args.checkpoint, device="cpu")
    path = export_onnx(
        model,
        args.onnx,
        modality=args.modality,
        height=cfg.data.height,
        width=cfg.data.width,
        opset=args.opset,
        feature=args.feature,
        flip=args.flip,
        fingerprint=checkpoint_fingerprint(args.checkpoint),
    )
    try:
        diff = check_parity(model, path, batch_sizes=(1, 3), tolerance=args.tolerance)
    except ExportError:
        # A graph that disagrees with PyTorch must not be mistaken for a good one later.
        path.unlink(missing_ok=True)
        raise
    print(
        f"wrote {path} ({args.modality} stream, {cfg.data.height}x{cfg.data.width}, "
        f"opset {args.opset}, {path.stat().st_size / 1e6:.1f} MB)"
    )
    print(f"parity ONNX Runtime vs PyTorch: max abs diff {diff:.2e} (tolerance {args.tolerance:g})")
    return 0
