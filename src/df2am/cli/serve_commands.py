"""``df2am serve``: a local web page to search a gallery index and browse an evaluation run.

::

    df2am serve --index out/gallery_index          # the checkpoint recorded at extract time
    df2am serve --index out/gallery_index --checkpoint runs/sysu/model_final.pt
    df2am serve --index out/g8_index --onnx deploy/ir_int8.onnx deploy/rgb_int8.onnx
    df2am serve --run runs/sysu/eval_sysu_all --root /data/SYSU-MM01 --port 0

Binds 127.0.0.1 by default (the page serves your images: only expose it on purpose with
``--host``). Needs the ``web`` extra; the app is :mod:`df2am.web.app`.
"""

from __future__ import annotations

import argparse
import logging
import math
import socket
from pathlib import Path

from df2am.errors import ConfigError

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``serve``."""
    p = sub.add_parser(
        "serve", help="local web page: search an index by upload, browse an evaluation run",
        description="Start a small web app (FastAPI + a static page). With --index: upload "
        "a query image and see the ranked gallery (embedded by --onnx graphs, --checkpoint, or "
        "by default the checkpoint the index's features were extracted with). With --run and "
        "--root: the run's metrics, CMC curve and each query's ranked gallery (computed at "
        "startup from the run's checkpoint and the dataset).")
    p.add_argument("--index", type=Path, help="INDEX (from df2am index build)")
    p.add_argument("--checkpoint", type=Path,
                   help="the model of the index (default: the one recorded in it, verified "
                   "by fingerprint) and of the run when it names none")
    p.add_argument("--onnx", type=Path, nargs="+", metavar="GRAPH",
                   help="embed uploads with exported graph(s) on ONNX Runtime (one per "
                   "modality; df2am export, --int8 for int8)")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (--onnx)")
    p.add_argument("--allow-mixed-precision", action="store_true",
                   help="accept int8 uploads against a float gallery or the reverse")
    p.add_argument("--threshold", type=float, help="open-set threshold (df2am index calibrate)")
    p.add_argument("--run", type=Path, help="an evaluation output folder (results.json)")
    p.add_argument("--root", type=Path, help="the dataset root of --run")
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")
    p.add_argument("--port", type=int, default=8000, help="default 8000; 0 = a free port")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="default 10")
    p.add_argument("--device", default="cpu", help="cpu | cuda[:N] | auto (default cpu)")
    p.add_argument("--run-k", type=int, default=10, help="ranked gallery kept per run query")
    p.set_defaults(func=_run_serve)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: the OS picks a free one)."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from None
    sock.listen(128)
    return sock


def _run_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from df2am.web.app import create_app
    except ImportError as exc:
        raise ConfigError(f"df2am serve needs the web extra ({exc}): "
                          "pip install 'df2am[web]'") from None
    if not (math.isfinite(args.max_upload_mb) and args.max_upload_mb > 0):
        raise ConfigError(f"--max-upload-mb must be a number > 0, got {args.max_upload_mb}")
    app = create_app(index=args.index, checkpoint=args.checkpoint, run=args.run,
                     root=args.root, threshold=args.threshold,
                     max_upload_bytes=int(args.max_upload_mb * 2**20), device=args.device,
                     run_k=args.run_k, onnx=args.onnx or (), threads=args.threads,
                     allow_mixed_precision=args.allow_mixed_precision)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("serving on %s: other machines can reach it and see your images",
                       args.host)
    sock = bind(args.host, args.port)
    port = sock.getsockname()[1]
    print(f"df2am serve: http://{args.host}:{port}/  (Ctrl-C to stop)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="info"))
    server.run(sockets=[sock])
    return 0
