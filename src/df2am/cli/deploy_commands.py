"""``df2am extract``, ``df2am index build|calibrate`` and ``df2am search``: use a trained
model on your own images.

::

    df2am extract runs/sysu/model_final.pt --images gallery/ --modality rgb --out out/gallery
    df2am index build out/gallery --out out/gallery_index --type auto --target-recall 0.95
    df2am search out/gallery_index --query probe1.jpg probe2.jpg --modality ir \\
        --top-k 10 --json out/hits.json --grid out/hits.png     # the checkpoint of extraction
    df2am extract deploy/rgb_int8.onnx --images gallery/ --modality rgb --out out/g8   # int8
    df2am search out/g8_index --query probe.jpg --modality ir --onnx deploy/ir_int8.onnx
    df2am extract runs/sysu/model_final.pt --images val_ir/ --modality ir --out out/val_q
    df2am index calibrate out/gallery_index --queries out/val_q --target-far 0.01
    df2am search out/gallery_index --query probe.jpg --modality ir \\
        --checkpoint runs/sysu/model_final.pt --threshold 0.42

Feature files are ``FEATS.npy`` + ``FEATS.json`` (:mod:`df2am.deploy.features`), indexes
``INDEX.faiss`` + ``INDEX.json`` (:mod:`df2am.deploy.index`). Results are printed; progress
and warnings go to the log.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from df2am.atomic import atomic_path, atomic_write_text, check_output
from df2am.errors import CheckpointError, ConfigError, DatasetError

logger = logging.getLogger(__name__)

STRICT_HELP = ("refuse images under 16 px on a side or more than 8:1 long (default: a warning "
               "naming the file)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``extract``, ``index`` (``build``, ``calibrate``) and ``search``."""
    _register_extract(sub)
    _register_index(sub)
    _register_search(sub)


# ----------------------------------------------------------------------------------- extract


def _register_extract(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract", help="extract features of your own images with a trained model",
        description="Extract L2-normalised features of every image of a folder (recursive, "
        "sorted; .jpg .jpeg .png .bmp) or of a list file (one path per line, relative to the "
        "list's folder) and write FEATS.npy + FEATS.json (paths, model fingerprint, "
        "preprocessing, modality).")
    p.add_argument("checkpoint", type=Path, metavar="MODEL",
                   help="model_final.pt or a training checkpoint (PyTorch), or a graph of "
                   "df2am export (.onnx: ONNX Runtime, fp32 or --int8)")
    p.add_argument("--images", type=Path, required=True, help="folder or list file (.txt)")
    p.add_argument("--modality", required=True, help="rgb (visible) | ir (infrared/thermal)")
    p.add_argument("--out", type=Path, required=True, help="FEATS: writes FEATS.npy + .json")
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16",
                   help="stored precision (default float16: half the size)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CPU or GPU)")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave unreadable images out (logged, listed in FEATS.json 'skipped')")
    p.add_argument("--threads", type=int,
                   help="ONNX Runtime intra-op threads for a .onnx MODEL (default: physical "
                   "cores)")
    p.add_argument("--strict-images", action="store_true", help=STRICT_HELP)
    p.set_defaults(func=_run_extract)


def _run_extract(args: argparse.Namespace) -> int:
    from df2am.deploy.features import extract_images, feature_paths, save_features

    _check_checkpoint(args.checkpoint)
    for f in feature_paths(args.out):
        check_output(f, what="--out")
    fs = extract_images(args.checkpoint, args.images, args.modality, dtype=args.dtype,
                        batch_size=args.batch_size, device=args.device, bf16=args.bf16,
                        skip_bad=args.skip_bad, threads=args.threads,
                        strict_images=args.strict_images)
    path = save_features(fs, args.out)
    print(f"wrote {path} ({len(fs.paths)} × {fs.dim} {fs.dtype}, {fs.modality}, "
          f"{fs.runtime} {fs.precision}, {len(fs.skipped)} skipped) and "
          f"{path.with_suffix('.json')}")
    return 0


def _check_checkpoint(path: Path) -> None:
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder: expected a checkpoint file (model_final.pt) "
                              "or an exported graph (.onnx)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")


# ----------------------------------------------------------------------------------- index


def _register_index(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="build a FAISS search index; calibrate its threshold")
    isub = p.add_subparsers(dest="index_command", metavar="ACTION")
    isub.required = True
    b = isub.add_parser(
        "build", help="build an index over a feature file",
        description="Inner product on L2-normalised features (= cosine). exact: IndexFlatIP; "
        "ivf: IndexIVFFlat (large galleries); hnsw: IndexHNSWFlat (fastest queries); auto: "
        "the fastest setting of exact / IVF (several nlist, nprobe) / HNSW (several m, "
        "ef_search) whose recall@10 reaches --target-recall, measured with held-out gallery "
        "rows as queries (or --queries FEATS) against exact search; the chosen setting and "
        "its measured recall go into INDEX.json.")
    b.add_argument("features", type=Path, help="FEATS (from df2am extract)")
    b.add_argument("--out", type=Path, required=True, help="INDEX: writes INDEX.faiss + .json")
    b.add_argument("--type", choices=["exact", "ivf", "hnsw", "auto"], default="exact")
    b.add_argument("--target-recall", type=float,
                   help="auto: least recall@10 against exact search (default 0.95)")
    b.add_argument("--candidates", nargs="+", choices=["exact", "ivf", "hnsw"],
                   help="auto: the kinds tried (default all)")
    b.add_argument("--queries", type=Path, dest="auto_queries", metavar="FEATS",
                   help="auto: measure recall with these query features (e.g. a sample of IR "
                   "queries) instead of held-out gallery rows")
    b.add_argument("--nlist", type=int, help="ivf cells, 1..N (default ≈ 4·√N)")
    b.add_argument("--nprobe", type=int, help="ivf cells visited, 1..nlist (default 16)")
    b.add_argument("--m", type=int, help="hnsw links per node, 2..512 (default 32)")
    b.add_argument("--ef-search", type=int,
                   help="hnsw search beam, >= 1 (default 64; a search uses max(it, top-k))")
    b.add_argument("--ef-construction", type=int, help="hnsw build beam, >= 1 (default 40)")
    b.set_defaults(func=_run_index_build)

    c = isub.add_parser(
        "calibrate", help="pick the open-set threshold at a target false-accept rate",
        description="Search validation queries with known ids (a feature file) in the index "
        "and pick the largest distance threshold whose false-accept rate (accepted with a "
        "wrong top-1 id, or not in the gallery) stays within --target-far. Ids come from "
        "each path's parent folder name, or from a JSON mapping path → id.")
    c.add_argument("index", type=Path, help="INDEX (from df2am index build)")
    c.add_argument("--queries", type=Path, required=True, help="FEATS of validation queries")
    c.add_argument("--query-ids", default="folder", help="folder (default) | MAP.json")
    c.add_argument("--gallery-ids", default="folder", help="folder (default) | MAP.json")
    c.add_argument("--target-far", type=float, default=0.01, help="default 0.01")
    c.add_argument("--json", type=Path, help="write the calibration here")
    c.add_argument("--allow-mixed-precision", action="store_true",
                   help="accept int8 queries against a float gallery or the reverse")
    c.set_defaults(func=_run_calibrate)


def _run_index_build(args: argparse.Namespace) -> int:
    from df2am.deploy.features import load_features
    from df2am.deploy.index import build_index, index_paths, save_index

    for f in index_paths(args.out):
        check_output(f, what="--out")
    _note_ignored_options(args)
    fs = load_features(args.features, mmap=True)
    if args.type == "auto":
        index = _auto_index(fs, args)
    else:
        index = build_index(fs, args.type, nlist=args.nlist, nprobe=args.nprobe, m=args.m,
                            ef_search=args.ef_search, ef_construction=args.ef_construction,
                            features_path=str(args.features.resolve()))
    path = save_index(index, args.out)
    print(f"wrote {path} ({index.meta['type']}, {index.meta['ntotal']} × {index.dim}, "
          f"{fs.modality}) and {path.with_suffix('.json')}")
    return 0


def _note_ignored_options(args: argparse.Namespace) -> None:
    """Options of ``index build`` that the chosen --type does not use: a warning each."""
    if args.type == "auto":
        ours = ["--nlist", "--nprobe", "--m", "--ef-search", "--ef-construction"]
        why = "--type auto chooses the parameters itself"
    else:
        ours = ["--target-recall", "--candidates", "--queries"]
        why = f"options of --type auto, not of --type {args.type}"
    given = [o for o in ours
             if getattr(args, {"--queries": "auto_queries"}.get(o, o[2:].replace("-", "_")))
             is not None]
    if given:
        logger.warning("%s: ignored (%s)", ", ".join(given), why)


def _auto_index(fs: Any, args: argparse.Namespace) -> Any:
    from df2am.deploy.features import load_features
    from df2am.deploy.index import INDEX_KINDS
    from df2am.deploy.index_auto import choose_index

    queries = None
    if args.auto_queries is not None:
        q = load_features(args.auto_queries)
        if q.fingerprint != fs.fingerprint:
            raise DatasetError(f"--queries {args.auto_queries} come from another model or "
                               f"preprocessing than {args.features} (fingerprints differ)")
        queries = np.asarray(q.features)
    index = choose_index(fs, target_recall=0.95 if args.target_recall is None
                         else args.target_recall, kinds=args.candidates or INDEX_KINDS,
                         queries=queries, features_path=str(args.features.resolve()))
    auto = index.meta["auto"]
    params = ", ".join(f"{k}={v}" for k, v in index.meta["params"].items())
    print(f"auto: {index.meta['type']}{f' ({params})' if params else ''}: recall@{auto['k']} "
          f"{auto['recall']:.4f} (target {auto['target_recall']:g}), "
          f"{auto['queries_per_s']:.0f} queries/s, measured on {auto['queries']} "
          f"{auto['method']}; {len(auto['tried'])} settings tried (INDEX.json 'auto')")
    return index


def _ids(paths: list[str], source: str) -> list[str]:
    """Identity of each path: its parent folder name, or a JSON mapping's value."""
    if source == "folder":
        return [Path(p).parent.name for p in paths]
    mapping_file = Path(source)
    try:
        mapping = json.loads(mapping_file.read_bytes().decode("utf-8-sig"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"id mapping {mapping_file}: cannot read JSON ({exc})") from None
    if not isinstance(mapping, dict):
        raise DatasetError(f"id mapping {mapping_file}: expected a JSON object {{\"path\": "
                           f"id, ...}}, got a {type(mapping).__name__}")
    missing = [p for p in paths if p not in mapping]
    if missing:
        raise DatasetError(f"id mapping {mapping_file} has no id for {len(missing)} path(s), "
                           f"e.g. {missing[0]!r}")
    return [str(mapping[p]) for p in paths]


def _run_calibrate(args: argparse.Namespace) -> int:
    from df2am.deploy.features import load_features
    from df2am.deploy.index import calibrate_threshold, load_index
    from df2am.deploy.runtime import check_numerics

    if args.json:
        check_output(args.json, what="--json")
    index = load_index(args.index)
    q = load_features(args.queries)
    index.check_fingerprint(q.fingerprint, f"the queries {args.queries}")
    # A threshold is only valid for the numerics it was calibrated with (int8 moves distances).
    check_numerics(index.numerics, q.numerics, allow_mixed=args.allow_mixed_precision,
                   what=f"the queries {args.queries}")
    rows, dist = index.search(q.features, k=1)
    q_ids = np.asarray(_ids(q.paths, args.query_ids))
    g_ids = np.asarray(_ids(index.meta["paths"], args.gallery_ids))
    top1 = np.where(rows[:, 0] >= 0, g_ids[np.maximum(rows[:, 0], 0)], "")
    result = calibrate_threshold(dist[:, 0], top1 == q_ids, np.isin(q_ids, g_ids),
                                 args.target_far)
    print(f"threshold {result['threshold']:.4f} (cosine distance) at target FAR "
          f"{args.target_far:g}: FAR {result['far']:.4f}, TAR {result['tar']:.4f} over "
          f"{result['queries']} queries ({result['genuine']} with their id in the gallery)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
    return 0


# ----------------------------------------------------------------------------------- search


def _register_search(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search", help="rank an indexed gallery for query images",
        description="Extract the query images with the gallery's checkpoint (refused if its "
        "fingerprint differs from the index's), search and print the ranked gallery images "
        "with cosine distances. Cross-modality (IR query, RGB gallery or the reverse) is the "
        "normal use.")
    p.add_argument("index", type=Path, help="INDEX (from df2am index build)")
    p.add_argument("--query", type=Path, nargs="+", required=True, help="query image(s)")
    p.add_argument("--modality", required=True, help="modality of the queries: ir | rgb")
    p.add_argument("--checkpoint", type=Path,
                   help="the gallery's checkpoint (default: the one its features were "
                   "extracted with, recorded in the index and verified by fingerprint)")
    p.add_argument("--onnx", type=Path, nargs="+", metavar="GRAPH",
                   help="extract the queries with exported graph(s) on ONNX Runtime instead "
                   "(df2am export; int8 with --int8)")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (--onnx)")
    p.add_argument("--allow-mixed-precision", action="store_true",
                   help="accept int8 queries against a float gallery or the reverse "
                   "(recorded in the results)")
    p.add_argument("--top-k", type=int, default=20, help="matches per query (default 20)")
    p.add_argument("--threshold", type=float,
                   help="open set: 'not in gallery' when the best cosine distance exceeds it "
                        "(in [0, 2]; df2am index calibrate picks one)")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--grid", type=Path, help="write a PNG: each query, then its top-k")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--strict-images", action="store_true", help=STRICT_HELP)
    p.set_defaults(func=_run_search)


def _run_search(args: argparse.Namespace) -> int:
    from df2am.deploy.features import extract_paths
    from df2am.deploy.index import DISTANCE, check_threshold, load_index
    from df2am.deploy.runtime import load_query_model

    if args.modality not in ("rgb", "ir"):
        raise ConfigError(f"--modality must be 'rgb' or 'ir', got {args.modality!r}")
    if args.top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {args.top_k}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    check_threshold(args.threshold)
    for path, what in ((args.json, "--json"), (args.grid, "--grid")):
        if path:
            check_output(path, what=what)
    if args.checkpoint is not None:
        _check_checkpoint(args.checkpoint)
    index = load_index(args.index)
    qm = load_query_model(index, checkpoint=args.checkpoint, graphs=args.onnx or (),
                          device=args.device, threads=args.threads,
                          allow_mixed=args.allow_mixed_precision)
    if args.modality == index.meta["modality"]:
        logger.warning("query modality %s = gallery modality: a same-modality search; "
                       "the model is trained for cross-modality (IR ↔ RGB)", args.modality)
    feats, _, _ = extract_paths(qm.model, qm.cfg, args.query, args.modality,
                                batch_size=args.batch_size, progress=False,
                                strict_images=args.strict_images)
    rows, dist = index.search(feats, args.top_k)
    results = _results(index, args.query, rows, dist, args.threshold, args.top_k)
    print(_format_results(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps({
            "index": str(args.index), "threshold": args.threshold, "top_k": args.top_k,
            "distance": DISTANCE, "model": qm.source,
            "query_numerics": list(qm.numerics), "gallery_numerics": list(index.numerics),
            "mixed_numerics": qm.note, "results": results}, indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.grid:
        _write_grid(results, index, args.grid, qm.cfg.data.height, qm.cfg.data.width)
        print(f"wrote {args.grid}")
    return 0


def _results(index: Any, queries: list[Path], rows: np.ndarray, dist: np.ndarray,
             threshold: float | None, top_k: int) -> list[dict[str, Any]]:
    """Matches of each query (never a -1 row) and, where fewer than ``top_k``, why."""
    paths = index.meta["paths"]
    out = []
    for qi, q in enumerate(queries):
        matches = [{"rank": r + 1, "row": int(j), "path": paths[j], "distance": float(d)}
                   for r, (j, d) in enumerate(zip(rows[qi], dist[qi], strict=True)) if j >= 0]
        best = matches[0]["distance"] if matches else float("inf")
        in_gallery = None if threshold is None else bool(best <= threshold)
        res = {"query": str(q), "in_gallery": in_gallery, "matches": matches}
        if len(matches) < top_k:
            res["note"] = _why_fewer(index, len(matches), top_k)
            logger.warning("query %s: %s", q, res["note"])
        out.append(res)
    return out


def _why_fewer(index: Any, found: int, top_k: int) -> str:
    n = len(index.meta["paths"])
    if found == n:
        return f"{found} of the {top_k} matches asked (--top-k): the gallery holds {n} images"
    return (f"{found} of the {top_k} matches asked: the {index.meta['type']} index reached "
            f"only {found} of its {n} images from this query (an approximate index; build an "
            "exact one to rank every image)")


def _format_results(results: list[dict[str, Any]]) -> str:
    lines = []
    for res in results:
        verdict = {None: "", True: "  [in gallery]", False: "  [not in gallery]"}
        lines.append(f"query {res['query']}{verdict[res['in_gallery']]}")
        if "note" in res:
            lines.append(f"  note: {res['note']}")
        lines += [f"  {m['rank']:>3}  {m['distance']:.4f}  {m['path']}" for m in res["matches"]]
    return "\n".join(lines)


def _write_grid(results: list[dict[str, Any]], index: Any, out: Path, h: int, w: int) -> None:
    """One row per query: the query, then its matches, rank and distance under each."""
    from PIL import Image, ImageDraw

    # Thumbnails at least 128 px high so the captions fit under narrow crops.
    scale = max(1.0, 128 / h)
    tw, th, cap = int(w * scale), int(h * scale), 28
    cols = 1 + max(len(r["matches"]) for r in results)
    sheet = Image.new("RGB", (cols * (tw + 4), len(results) * (th + cap)), "white")
    draw = ImageDraw.Draw(sheet)
    root = Path(index.meta["root"])
    for ri, res in enumerate(results):
        cells = [(Path(res["query"]), "query")]
        cells += [(root / m["path"], f"#{m['rank']} {m['distance']:.3f}") for m in res["matches"]]
        for ci, (path, caption) in enumerate(cells):
            x, y = ci * (tw + 4), ri * (th + cap)
            sheet.paste(_thumb(path, tw, th), (x, y))
            draw.text((x + 2, y + th + 4), caption, fill="black")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")


def _thumb(path: Path, w: int, h: int) -> Any:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert("RGB").resize((w, h), Image.Resampling.BILINEAR)
    except OSError:  # a gallery image moved since indexing: grey cell, the caption stays
        logger.warning("grid: cannot open %s", path)
        return Image.new("RGB", (w, h), "grey")
