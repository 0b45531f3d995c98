"""The ``df2am serve`` web app: search a gallery index by upload, browse an evaluation run.

Why FastAPI + one static page: a Python ML user extends it by adding a route
(``@app.get("/api/mine")``) in plain Python, with request validation and JSON for free; the
page is plain HTML/JS/CSS shipped in the package (``df2am/web/static``) — no JavaScript build
step, no CDN, so it works offline and on an air-gapped machine.

::

    from df2am.web.app import create_app
    app = create_app(index="out/gallery_index", checkpoint="runs/sysu/model_final.pt",
                     run="runs/sysu/eval_sysu_all", root="/data/SYSU-MM01")
    app = create_app(index="out/gallery_index")     # the checkpoint recorded at extract time
    app = create_app(index="out/g8_index", onnx=["deploy/ir_int8.onnx"])   # int8 queries

Routes:

* ``GET /api/info`` — what is configured.
* ``POST /api/search`` (multipart ``file``, ``modality`` rgb|ir, ``offset``, ``limit``) —
  the ranked gallery of the uploaded image; ``in_gallery`` with a threshold. Each match has
  ``rank``, ``distance``, ``path`` and, read from the path (:func:`path_labels`), ``identity``
  and ``camera`` — what the page's captions show (the full path is the tooltip).
* ``GET /gallery/<i>`` — gallery image ``i`` of the index (by row, never by a user path).
* ``GET /api/run`` — metrics, protocol and mean CMC of the run's ``results.json``.
* ``GET /api/run/queries?failed=1&cam=N&offset&limit`` — per-query ranked gallery (first
  ``k``) with correct flags, computed once at startup from the checkpoint and the dataset's
  test split of the run's first trial (the dataset's camera rule applied; re-ranking is not).
* ``GET /dataset/<relative path>`` — an image under the dataset root (no ``..``, no absolute
  path, no symlink leaving the root).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Query, UploadFile
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image

from df2am.assess.results import RESULTS_NAME, read_results
from df2am.data.images import check_geometry, decode_bytes
from df2am.deploy.features import IMAGE_SUFFIXES
from df2am.deploy.index import DISTANCE
from df2am.errors import ConfigError, DatasetError, Df2amError

__all__ = ["create_app", "safe_path", "path_labels", "DEFAULT_MAX_UPLOAD", "SearchState",
           "RunState"]

logger = logging.getLogger(__name__)

#: Largest accepted upload (bytes) unless ``max_upload_bytes`` says otherwise.
DEFAULT_MAX_UPLOAD = 10 * 2**20
MAX_LIMIT = 200
STATIC = Path(str(resources.files("df2am.web") / "static"))


# --------------------------------------------------------------------------- paths


def safe_path(root: Path, rel: str) -> Path:
    """``root / rel`` resolved, refusing anything that could leave ``root``.

    Raises ``HTTPException`` 400 for an absolute path, a ``..`` part, a backslash or a NUL,
    404 when the file does not exist, is not an image, or resolves (symlinks) outside root.
    """
    if not rel or "\x00" in rel or "\\" in rel or rel.startswith("/") or ":" in rel:
        raise HTTPException(400, f"bad path {rel!r}: relative paths under the dataset root only")
    parts = PurePosixPath(rel).parts
    if any(p in ("..", ".") for p in parts) or PurePosixPath(rel).is_absolute():
        raise HTTPException(400, f"bad path {rel!r}: '..' is not allowed")
    base = root.resolve()
    try:
        target = (base / rel).resolve(strict=True)
    except (OSError, RuntimeError):
        raise HTTPException(404, f"not found: {rel}") from None
    if not target.is_relative_to(base) or not target.is_file():
        raise HTTPException(404, f"not found: {rel}")
    if target.suffix.lower() not in IMAGE_SUFFIXES:
        raise HTTPException(404, f"not an image: {rel}")
    return target


_CAM_DIR = re.compile(r"cam(?:era)?[_-]?(\d+)$", re.IGNORECASE)
_CAM_FILE = re.compile(r"_c(\d+)(?:[_s.]|$)", re.IGNORECASE)
_MODALITY_DIR = {"visible": "visible", "thermal": "thermal"}


def path_labels(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Identity and camera of a gallery image, read from its path where the layout holds
    them (else None): the person folder is the parent and counts as an identity when it is a
    number (SYSU-MM01 ``cam3/0012/0001.jpg`` → id 12, camera "3"; LLCM
    ``test_nir/cam4/0012/…``; RegDB ``Thermal/123/…`` → camera "thermal"; a ``_c03`` in the
    file name → camera "3")::

        path_labels("/data/SYSU-MM01/cam3/0012/0001.jpg")  # {'identity': 12, 'camera': '3'}
    """
    p = PurePosixPath(Path(path).as_posix())
    parent = p.parent.name
    identity = int(parent) if parent.isdigit() else None
    camera = None
    for folder in (p.parent.parent.name, parent):  # SYSU/LLCM: camK/<id>/file
        if m := _CAM_DIR.search(folder):
            camera = str(int(m.group(1)))
    if camera is None and (m := _CAM_FILE.search(p.name)):
        camera = str(int(m.group(1)))
    if camera is None:
        camera = _MODALITY_DIR.get(p.parent.parent.name.lower())
    return {"identity": identity, "camera": camera}


# --------------------------------------------------------------------------- search


@dataclass
class SearchState:
    """The index, the query model (loaded once) and the gallery's image files."""

    index: Any
    query_model: Any  # a df2am.deploy.runtime.QueryModel
    files: list[Path]
    threshold: float | None = None

    @property
    def model(self) -> Any:
        return self.query_model.model

    @property
    def cfg(self) -> Any:
        return self.query_model.cfg

    @classmethod
    def load(cls, index_path: str | os.PathLike[str],
             checkpoint: str | os.PathLike[str] | None = None, *,
             graphs: Sequence[str | os.PathLike[str]] = (), threshold: float | None = None,
             device: str = "cpu", threads: int | None = None,
             allow_mixed: bool = False) -> SearchState:
        """The index and its query model: ``graphs`` (ONNX Runtime), ``checkpoint``, or the
        checkpoint the index records (:func:`df2am.deploy.runtime.load_query_model`)."""
        from df2am.deploy.index import check_threshold, load_index
        from df2am.deploy.runtime import load_query_model

        check_threshold(threshold)
        index = load_index(index_path)
        query = load_query_model(index, checkpoint=checkpoint, graphs=graphs, device=device,
                                 threads=threads, allow_mixed=allow_mixed)
        root = Path(index.meta.get("root") or ".")
        files = [Path(p) if Path(p).is_absolute() else root / p for p in index.meta["paths"]]
        return cls(index, query, files, threshold)

    def query(self, image: Image.Image, modality: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows and distances of the top ``k`` for one decoded image (the index pipeline)."""
        from df2am.deploy.features import extract_paths

        # Through a file, so decode + resize are exactly those the gallery went through.
        with tempfile.TemporaryDirectory() as tmp:
            f = Path(tmp) / "query.png"
            image.save(f, format="PNG")
            feats, _, _ = extract_paths(self.model, self.cfg, [f], modality, progress=False)
        rows, dist = self.index.search(feats, k=k)
        return rows[0], dist[0]


# --------------------------------------------------------------------------- run


@dataclass
class RunState:
    """``results.json`` of an evaluation run and, with a checkpoint, per-query rankings."""

    results: dict[str, Any]
    root: Path | None
    path: Path
    trial: int | None = None
    queries: list[dict[str, Any]] = field(default_factory=list)
    ranked: bool = False
    distance: str = DISTANCE

    @classmethod
    def load(cls, run: str | os.PathLike[str], root: str | os.PathLike[str] | None, *,
             checkpoint: str | os.PathLike[str] | None = None, device: str = "cpu",
             k: int = 10) -> RunState:
        p = Path(run)
        path = p / RESULTS_NAME if p.is_dir() else p
        if not path.is_file():
            raise DatasetError(f"--run {run}: no results.json there (write one with df2am eval "
                               "--out DIR)")
        try:
            results = read_results(path)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{path}: cannot read JSON ({exc})") from None
        if not isinstance(results, dict) or "protocol" not in results:
            raise DatasetError(f"{path}: not an evaluation results.json (no 'protocol')")
        state = cls(results, Path(root).resolve() if root else None, path)
        # The run's model: --checkpoint (given for the run), else the one results.json names
        # (df2am eval), else a training run's own model_final.pt beside it.
        beside = path.parent / "model_final.pt"
        ckpt = checkpoint or results.get("checkpoint") or (beside if beside.is_file() else None)
        if state.root is not None and ckpt:
            ck = Path(ckpt)
            if not ck.is_absolute() and not ck.is_file():
                ck = path.parent / ck
            state.compute_rankings(ck, device=device, k=k)
        return state

    def compute_rankings(self, checkpoint: Path, *, device: str = "cpu", k: int = 10) -> None:
        """Rank the gallery of the first trial for every query, as the evaluation did."""
        import torch

        from df2am.assess.evaluator import extract_records
        from df2am.data.datasets import get_dataset
        from df2am.deploy.api import load_model
        from df2am.evaluation.distance import pairwise_distance

        assert self.root is not None
        proto = self.results["protocol"]
        model, cfg = load_model(checkpoint, device=device)
        ds = get_dataset(proto["dataset"])
        options = ds.resolve_options(mode=proto.get("mode"), sampler=proto.get("sampler"),
                                     shots=proto.get("shots"), direction=proto.get("direction"))
        trials = proto.get("trials") or [0]
        self.trial = int(trials[0])
        query, gallery = ds.test_split(self.root, self.trial, options)
        if not query or not gallery:
            raise DatasetError(f"{proto['dataset']} at {self.root}: empty query or gallery")

        def feats(records: list[Any]) -> torch.Tensor:
            out = torch.empty(0)
            by_mod: dict[str, list[int]] = {}
            for i, r in enumerate(records):
                by_mod.setdefault(r.modality, []).append(i)
            for idx in by_mod.values():
                f = extract_records(model, [records[i] for i in idx], self.root, cfg.data,
                                    device=device, feature=proto.get("feature"),
                                    flip=proto.get("flip"))
                if out.numel() == 0:
                    out = torch.empty(len(records), f.shape[1])
                out[idx] = f
            return out

        metric = proto.get("metric", "cosine")
        with torch.no_grad():
            dist = pairwise_distance(feats(query), feats(gallery), metric=metric)
        dist = np.asarray(dist.cpu().numpy() if hasattr(dist, "cpu") else dist)
        if metric == "cosine":  # the evaluator ranks by -cos; the user sees 1 - cos
            dist = dist + 1.0
        self.distance = DISTANCE if metric == "cosine" else "Euclidean distance"

        def shown(d: float) -> float:  # rounding can put 1 - cos a hair outside [0, 2]
            return float(min(max(d, 0.0), 2.0)) if metric == "cosine" else float(d)

        rule = proto.get("metric_rule", ds.metric_rule)
        g_ids = np.array([g.pid for g in gallery])
        g_cams = np.array([g.cam for g in gallery])
        self.queries = []
        for qi, q in enumerate(query):
            keep = np.ones(len(gallery), bool)
            if rule == "sysu":
                room = {3: 2}.get(q.cam, q.cam)
                keep = np.array([{3: 2}.get(int(c), int(c)) != room for c in g_cams])
            elif rule == "llcm":
                keep = ~((g_ids == q.pid) & (g_cams == q.cam))
            cols = np.nonzero(keep)[0]
            order = cols[np.argsort(dist[qi, cols], kind="stable")]
            valid = bool((g_ids[cols] == q.pid).any())
            ranked = [{"path": gallery[j].path, "url": f"/dataset/{gallery[j].path}",
                       "pid": int(g_ids[j]), "cam": int(g_cams[j]),
                       "distance": shown(dist[qi, j]), "correct": bool(g_ids[j] == q.pid)}
                      for j in order[:k]]
            self.queries.append({"qi": qi, "path": q.path, "url": f"/dataset/{q.path}",
                                 "pid": int(q.pid), "cam": int(q.cam), "valid": valid,
                                 "correct": bool(ranked and ranked[0]["correct"]),
                                 "ranked": ranked})
        self.ranked = True
        logger.info("ranked %d queries × %d gallery images (trial %d)", len(query),
                    len(gallery), self.trial)

    def summary(self) -> dict[str, Any]:
        from df2am.assess.evaluator import METRIC_KEYS

        r = self.results
        valid = [q for q in self.queries if q["valid"]]
        return {
            "path": str(self.path),
            "metrics": [{"key": k, "mean": r.get(k), "std": r.get(f"{k}_std")}
                        for k in METRIC_KEYS],
            "protocol": r.get("protocol", {}),
            "per_trial": r.get("per_trial", []),
            "cmc": r.get("cmc", {}),
            "checkpoint": r.get("checkpoint"),
            "ranked": self.ranked,
            "distance": self.distance,
            "trial": self.trial,
            "num_queries": len(self.queries),
            "rank1_recomputed": (100.0 * sum(q["correct"] for q in valid) / len(valid)
                                 if valid else None),
        }


# --------------------------------------------------------------------------- app


def create_app(
    *,
    index: str | os.PathLike[str] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    run: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    threshold: float | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
    device: str = "cpu",
    run_k: int = 10,
    onnx: Sequence[str | os.PathLike[str]] = (),
    threads: int | None = None,
    allow_mixed_precision: bool = False,
) -> FastAPI:
    """The FastAPI app; everything heavy (model, index, rankings) is loaded here, once.

    The uploads of an index search are embedded by ``onnx`` graphs (ONNX Runtime, e.g. int8),
    else by ``checkpoint``, else by the checkpoint the index records (verified by fingerprint).

    Raises:
        ConfigError: neither an index nor a run.
        Df2amError: a file that cannot be loaded (index, checkpoint, results.json, dataset),
            a recorded checkpoint that moved or changed, int8 mixed with float numerics.
    """
    _check_options(index, checkpoint, run, root, max_upload_bytes, run_k)
    search = (SearchState.load(index, checkpoint, graphs=onnx, threshold=threshold,
                               device=device, threads=threads,
                               allow_mixed=allow_mixed_precision)
              if index is not None else None)
    run_state = (RunState.load(run, root, checkpoint=checkpoint if index is None else None,
                               device=device, k=run_k) if run is not None else None)
    app = FastAPI(title="df2am", docs_url="/api/docs", redoc_url=None)
    app.state.search = search
    app.state.run = run_state
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _page_routes(app, search, run_state, max_upload_bytes)
    _search_routes(app, search, max_upload_bytes)
    _run_routes(app, run_state)
    return app


def _check_options(index: Any, checkpoint: Any, run: Any, root: Any,
                   max_upload_bytes: int, run_k: int) -> None:
    if index is None and run is None:
        raise ConfigError("serve needs --index INDEX and/or --run DIR")
    if run is not None and root is None:
        raise ConfigError("--run needs --root DATASET_ROOT (where its images are)")
    if root is not None and not Path(root).is_dir():
        raise DatasetError(f"--root {root}: not a folder")
    if max_upload_bytes < 1:
        raise ConfigError(f"max upload size must be >= 1 byte, got {max_upload_bytes}")
    if run_k < 1:
        raise ConfigError(f"--run-k must be >= 1, got {run_k}")


def _page_routes(app: FastAPI, search: SearchState | None, run_state: RunState | None,
                 max_upload_bytes: int) -> None:
    """The page and what it asks first: which views are configured."""

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text())

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        out: dict[str, Any] = {"search": search is not None, "run": run_state is not None,
                               "max_upload_bytes": max_upload_bytes, "distance": DISTANCE}
        if search is not None:
            m = search.index.meta
            out.update(gallery_size=len(search.files), gallery_modality=m.get("modality"),
                       index_type=m.get("type"), threshold=search.threshold,
                       query_model=search.query_model.source,
                       query_numerics=list(search.query_model.numerics),
                       gallery_numerics=list(search.index.numerics),
                       mixed_numerics=search.query_model.note)
        return out


def _decode_upload(data: bytes, max_upload_bytes: int, name: str) -> tuple[Image.Image, list[str]]:
    """The uploaded bytes as an RGB image (the loaders' mode rules) and warnings about it
    (odd geometry, naming the upload), or a 400 with a plain message naming the upload."""
    if len(data) > max_upload_bytes:
        raise HTTPException(400, f"upload {name!r} too large: more than {max_upload_bytes} bytes")
    try:
        image = decode_bytes(data, name)
    except DatasetError as exc:
        raise HTTPException(400, str(exc)) from None
    warning = check_geometry(name, *image.size)
    return image, [warning] if warning else []


def _search_page(st: SearchState, image: Image.Image, modality: str, offset: int,
                 limit: int) -> dict[str, Any]:
    """One page of the ranked gallery for ``image`` and the open-set verdict."""
    total = len(st.files)
    if offset >= total:
        return {"results": [], "total": total, "offset": offset, "limit": limit,
                "modality": modality, "threshold": st.threshold, "in_gallery": None}
    try:
        rows, dist = st.query(image, modality, min(offset + limit, total))
    except Df2amError as exc:
        raise HTTPException(400, str(exc)) from None
    paths = st.index.meta["paths"]
    results = [{"rank": i + 1, "index": int(r), "path": paths[r], "distance": float(d),
                "url": f"/gallery/{int(r)}", **path_labels(st.files[r])}
               for i, (r, d) in enumerate(zip(rows, dist, strict=True))
               if r >= 0][offset:]
    best = float(dist[0]) if len(dist) and rows[0] >= 0 else None
    verdict = (None if st.threshold is None or best is None else best <= st.threshold)
    found = int((rows >= 0).sum())
    note = (f"the {st.index.meta.get('type')} index reached only {found} of the "
            f"{len(rows)} gallery images asked for" if found < len(rows) else None)
    return {"results": results, "total": total, "offset": offset, "limit": limit,
            "modality": modality, "gallery_modality": st.index.meta.get("modality"),
            "threshold": st.threshold, "best_distance": best, "in_gallery": verdict,
            "distance": DISTANCE, "note": note}


def _search_routes(app: FastAPI, search: SearchState | None, max_upload_bytes: int) -> None:
    """Upload search and the gallery thumbnails (served by index row only)."""

    def need_search() -> SearchState:
        if search is None:
            raise HTTPException(404, "no index configured (start with --index)")
        return search

    @app.post("/api/search")
    async def do_search(file: UploadFile = File(...), modality: str = Form("ir"),  # noqa: B008
                        offset: int = Form(0), limit: int = Form(20)) -> dict[str, Any]:
        st = need_search()
        if modality not in ("rgb", "ir"):
            raise HTTPException(400, f"modality must be 'rgb' or 'ir', got {modality!r}")
        if offset < 0 or not 1 <= limit <= MAX_LIMIT:
            raise HTTPException(400, f"need offset >= 0 and 1 <= limit <= {MAX_LIMIT}")
        name = file.filename or "upload"
        image, warnings = _decode_upload(await file.read(max_upload_bytes + 1),
                                         max_upload_bytes, name)
        return {**_search_page(st, image, modality, offset, limit), "warnings": warnings}

    @app.get("/gallery/{i}")
    def gallery_image(i: int) -> FileResponse:
        st = need_search()
        if not 0 <= i < len(st.files) or not st.files[i].is_file():
            raise HTTPException(404, f"no gallery image {i}")
        return FileResponse(st.files[i])


def _run_routes(app: FastAPI, run_state: RunState | None) -> None:
    """The evaluation-run browser: summary, per-query rankings, dataset images (inside root)."""

    def need_run() -> RunState:
        if run_state is None:
            raise HTTPException(404, "no evaluation run configured (start with --run and --root)")
        return run_state

    @app.get("/api/run")
    def run_summary() -> dict[str, Any]:
        return need_run().summary()

    @app.get("/api/run/queries")
    def run_queries(failed: bool = False, cam: int | None = None,
                    offset: int = Query(0, ge=0),  # noqa: B008
                    limit: int = Query(20, ge=1, le=MAX_LIMIT),  # noqa: B008
                    k: int = Query(10, ge=1)) -> dict[str, Any]:  # noqa: B008
        st = need_run()
        if not st.ranked:
            raise HTTPException(404, "no per-query rankings: the run names no checkpoint "
                                "(start with --checkpoint)")
        rows = [q for q in st.queries
                if (not failed or (q["valid"] and not q["correct"]))
                and (cam is None or q["cam"] == cam)]
        page = [{**q, "ranked": q["ranked"][:k]} for q in rows[offset:offset + limit]]
        return {"total": len(rows), "offset": offset, "limit": limit, "trial": st.trial,
                "cams": sorted({q["cam"] for q in st.queries}), "queries": page}

    @app.get("/dataset/{rel:path}")
    def dataset_image(rel: str) -> FileResponse:
        st = need_run()
        assert st.root is not None
        return FileResponse(safe_path(st.root, rel))
