"""Paper figures of a trained model: ranked-list strips, DF² part attention, t-SNE.

::

    from df2am.deploy.api import load_model
    from df2am.assess.visualize import visualize

    model, cfg = load_model("runs/sysu/model_final.pt")
    result = visualize(model, cfg, "/data/SYSU-MM01", "runs/sysu/figures", mode="all",
                       queries=4, top_k=10, seed=0, tsne=True, tsne_untrained=True)
    result.paths        # rank_<i>.png, parts_<i>.png, tsne.png, visualize.json

The pieces can be used alone (they share one :class:`TestSplit`)::

    split = load_test_split(model, cfg, root, mode="all", trial=0)
    rank_strips(model, cfg, root, "figs", split=split, query_index=[0, 5])
    part_attention_figure(model, cfg, root, [split.query[0]], "figs")
    tsne_figure(model, cfg, root, "figs/tsne.png", split=split)

What is drawn:

* ``rank_<i>.png``: query ``i`` of the trial's test split, then its top-k gallery images
  ranked by the **cosine distance 1 − q·g** of the evaluator's L2-normalised test features
  (the same order as the evaluator's cosine ``−q·g`` and, for unit vectors, its euclidean
  distance). Each gallery image is framed green when its identity equals the query's, red
  otherwise; rank and distance are written under it. The full gallery is ranked (no SYSU
  same-camera junk removal).
* ``parts_<i>.png``: the DF² part weights ω̃ (softmax over the P horizontal parts, unflipped
  image) as coloured bands over the query image plus a bar chart with the values, from
  :meth:`~df2am.models.ReIDNet.part_weights`. Skipped with a logged message when the model has
  no part attention (``model.arch`` agw or baseline, or df2am without the DF² module).
* ``tsne.png``: a seeded 2-D t-SNE (scikit-learn) of the trial's query + gallery features,
  coloured by modality, a few identities with their own marker; with an untrained model, the
  "before / after" pair side by side.

``visualize.json`` lists everything drawn (paths, ranked gallery, distances, correct flags,
part weights, tile boxes) so that scripts and tests can check the figures.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from df2am.assess.evaluator import extract_records
from df2am.config import Config
from df2am.data.cache import decode_resize
from df2am.data.datasets import TestOptions, get_dataset
from df2am.data.records import ImageRecord
from df2am.data.transforms import TestTransform
from df2am.device import resolve_device
from df2am.errors import ConfigError, DatasetError, Df2amError

if TYPE_CHECKING:  # the networks import torchvision: not needed at import time
    from df2am.models import ReIDNet

__all__ = [
    "CORRECT_COLOR",
    "WRONG_COLOR",
    "TestSplit",
    "VisualizeError",
    "VisualizeResult",
    "load_test_split",
    "rank_queries",
    "rank_strips",
    "part_weights",
    "part_attention_figure",
    "tsne_figure",
    "visualize",
]

logger = logging.getLogger(__name__)

#: Frame colours (RGB) of a correct / wrong gallery match in the strips.
CORRECT_COLOR = (0, 170, 0)
WRONG_COLOR = (220, 0, 0)
QUERY_COLOR = (60, 60, 60)
_MODALITY_COLOR = {"rgb": "tab:blue", "ir": "tab:red"}
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_DEPLOY_HINT = "pip install 'df2am[deploy]'"


class VisualizeError(Df2amError):
    """A visualisation cannot be made (bad query index, missing scikit-learn, ...)."""


@dataclass
class TestSplit:
    """One trial's query and gallery with their test features (L2-normalised rows, CPU)."""

    __test__ = False

    dataset: str
    trial: int
    options: TestOptions
    query: list[ImageRecord]
    gallery: list[ImageRecord]
    query_feats: torch.Tensor
    gallery_feats: torch.Tensor

    @property
    def title(self) -> str:
        return get_dataset(self.dataset).describe(self.options, [self.trial])


@dataclass
class VisualizeResult:
    """What :func:`visualize` wrote: every path and the JSON document."""

    paths: list[Path] = field(default_factory=list)
    doc: dict[str, Any] = field(default_factory=dict)
    json_path: Path | None = None


# --------------------------------------------------------------------------- features


def load_test_split(
    model: ReIDNet,
    cfg: Config,
    root: str | Path,
    *,
    dataset: str | None = None,
    mode: str | None = None,
    direction: str | None = None,
    trial: int | None = None,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    query_index: Sequence[int] | None = None,
) -> TestSplit:
    """The query/gallery of one trial and their features (the evaluator's extraction).

    ``trial`` None = the model's own trial for per-model datasets (RegDB: ``cfg.data.trial``),
    else the dataset's first trial. Unset protocol options default to ``cfg.eval`` (on
    another dataset than ``cfg.data.dataset``: to that dataset's defaults).
    ``query_index`` is checked against the query set before any feature is extracted.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset root {str(root)!r} is not a folder")
    name = dataset or cfg.data.dataset
    ds = get_dataset(name, key="--dataset")
    ds.check_applicable({"mode": mode, "direction": direction})
    # cfg.eval's protocol options belong to cfg.data.dataset; another takes its own defaults.
    ev = cfg.eval if name == cfg.data.dataset else None
    options = ds.resolve_options(
        mode=mode or (ev and ev.mode), sampler=ev and ev.sampler, shots=ev and ev.shots,
        split_file=ev and ev.split_file, direction=direction or (ev and ev.direction))
    if trial is None:
        trial = cfg.data.trial if ds.trial_per_model else ds.trials[0]
    trial = ds.check_trial(trial)
    if ds.trial_per_model and trial != cfg.data.trial:
        logger.warning("%s: trial %d is not the model's own (%d): its test ids may have been "
                       "trained on", ds.title, trial, cfg.data.trial)
    query, gallery = ds.test_split(root, trial, options)
    if not query or not gallery:
        raise DatasetError(f"{name} at {root}, trial {trial}: the query or gallery is empty")
    if query_index is not None:
        choose_queries(len(query), query_index=query_index)
    dev = resolve_device(device, key="device")
    model.to(dev)
    bs = batch_size or cfg.eval.batch_size

    def extract(records: Sequence[ImageRecord]) -> torch.Tensor:
        return extract_records(model, records, root, cfg.data, device=dev, batch_size=bs)

    return TestSplit(dataset=name, trial=trial, options=options, query=list(query),
                     gallery=list(gallery), query_feats=_by_modality(query, extract),
                     gallery_feats=_by_modality(gallery, extract))


def _by_modality(records: Sequence[ImageRecord], extract) -> torch.Tensor:
    """Features of records that may mix modalities (each group through its own stem)."""
    rows: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        rows.setdefault(r.modality, []).append(i)
    out: torch.Tensor | None = None
    for idx in rows.values():
        feats = extract([records[i] for i in idx])
        if out is None:
            out = torch.empty(len(records), feats.shape[1])
        out[torch.as_tensor(idx)] = feats
    assert out is not None
    return out


def rank_queries(split: TestSplit, indices: Sequence[int], top_k: int) -> list[dict[str, Any]]:
    """The top-``top_k`` gallery of each query index: a stable sort of 1 − q·g.

    Each entry: ``query_index``, ``query`` (path), ``query_pid``, ``query_modality``,
    ``gallery_index``, ``gallery`` (paths), ``gallery_pid``, ``distance``, ``correct``.
    """
    if top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {top_k}")
    out = []
    for i in indices:
        dist = (1.0 - split.query_feats[i : i + 1] @ split.gallery_feats.T)[0].numpy()
        order = np.argsort(dist, kind="stable")[:top_k]
        q = split.query[i]
        out.append({
            "query_index": int(i),
            "query": q.path,
            "query_pid": int(q.pid),
            "query_modality": q.modality,
            "gallery_index": [int(j) for j in order],
            "gallery": [split.gallery[j].path for j in order],
            "gallery_pid": [int(split.gallery[j].pid) for j in order],
            "distance": [float(np.clip(dist[j], 0.0, 2.0)) for j in order],  # rounding
            "correct": [bool(split.gallery[j].pid == q.pid) for j in order],
        })
    return out


def choose_queries(n_query: int, *, queries: int = 4, query_index: Sequence[int] | None = None,
                   seed: int = 0) -> list[int]:
    """The given indices (checked), or ``queries`` distinct random ones (seeded)."""
    if query_index is not None:
        bad = [i for i in query_index if not 0 <= int(i) < n_query]
        if bad:
            raise VisualizeError(f"--query-index {bad} out of range: the query set has "
                                 f"{n_query} images (0..{n_query - 1})")
        return [int(i) for i in query_index]
    if queries < 1:
        raise ConfigError(f"--queries must be >= 1, got {queries}")
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n_query, size=min(queries, n_query),
                                             replace=False))


# --------------------------------------------------------------------------- strips


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _tile(root: Path, rec: ImageRecord, size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(decode_resize(root / rec.path, size))


def _draw_strip(root: Path, entry: dict[str, Any], path: Path, *,
                tile_size: tuple[int, int] = (128, 64), frame: int = 4) -> list[list[int]]:
    """One strip PNG; returns each tile's framed box [x0, y0, x1, y1] (query first)."""
    th, tw = tile_size
    gap, text_h, pad = 6, 34, 8
    n = 1 + len(entry["gallery"])
    fw, fh = tw + 2 * frame, th + 2 * frame
    width = pad * 2 + n * fw + (n - 1) * gap + 2 * gap  # extra gap after the query
    height = pad * 2 + fh + text_h
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = _font(11)
    boxes: list[list[int]] = []
    items = [(entry["query"], QUERY_COLOR, "query", f"id {entry['query_pid']}")]
    for r, (g, d, ok) in enumerate(zip(entry["gallery"], entry["distance"], entry["correct"],
                                       strict=True)):
        items.append((g, CORRECT_COLOR if ok else WRONG_COLOR, f"rank {r + 1}", f"{d:.3f}"))
    x = pad
    for k, (rel, color, line1, line2) in enumerate(items):
        rec = ImageRecord(path=rel, pid=0, cam=0, modality="rgb")
        box = [x, pad, x + fw - 1, pad + fh - 1]
        draw.rectangle(box, fill=color)
        canvas.paste(_tile(root, rec, (th, tw)), (x + frame, pad + frame))
        cx = x + fw / 2
        draw.text((cx, pad + fh + 3), line1, fill=(0, 0, 0), font=font, anchor="ma")
        draw.text((cx, pad + fh + 17), line2, fill=(0, 0, 0), font=font, anchor="ma")
        boxes.append(box)
        x += fw + gap + (2 * gap if k == 0 else 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG")
    return boxes


def rank_strips(
    model: ReIDNet,
    cfg: Config,
    root: str | Path,
    out_dir: str | Path,
    *,
    split: TestSplit | None = None,
    queries: int = 4,
    query_index: Sequence[int] | None = None,
    top_k: int = 10,
    seed: int = 0,
    tile_size: tuple[int, int] = (128, 64),
    **split_kw: Any,
) -> tuple[list[Path], list[dict[str, Any]]]:
    """Write ``rank_<i>.png`` for the chosen (or ``queries`` seeded random) query indices.

    ``split_kw`` go to :func:`load_test_split` when ``split`` is None (dataset, mode,
    direction, trial, device, batch_size). Returns the PNG paths and the ranked entries
    (:func:`rank_queries`, plus ``png`` and ``boxes``: each tile's frame box, query first).
    """
    root = Path(root)
    if split is None:
        split = load_test_split(model, cfg, root, **split_kw)
    indices = choose_queries(len(split.query), queries=queries, query_index=query_index,
                             seed=seed)
    entries = rank_queries(split, indices, top_k)
    out = Path(out_dir)
    paths = []
    for e in entries:
        p = out / f"rank_{e['query_index']}.png"
        e["boxes"] = _draw_strip(root, e, p, tile_size=tile_size)
        e["png"] = p.name
        paths.append(p)
    logger.info("wrote %d ranked-list strips to %s", len(paths), out)
    return paths, entries


# --------------------------------------------------------------------------- part attention


def part_weights(model: ReIDNet, cfg: Config, root: str | Path,
                 records: Sequence[ImageRecord], *,
                 device: str | torch.device = "cpu") -> torch.Tensor | None:
    """ω̃ (N, P) of ``records`` (unflipped test images), or None when the model has no part
    attention (:meth:`~df2am.models.ReIDNet.part_weights`: DF² only; AGW and the L_B network
    have none)."""
    dev = resolve_device(device, key="device")
    h, w = cfg.data.height, cfg.data.width
    tf = TestTransform(h, w)
    out = []
    for rec in records:
        raw = torch.from_numpy(np.array(decode_resize(Path(root) / rec.path, (h, w))[None]))
        weights = model.part_weights(tf(raw).to(dev), rec.modality)
        if weights is None:
            return None
        out.append(weights.float().cpu())
    return torch.cat(out) if out else None


def part_attention_figure(
    model: ReIDNet,
    cfg: Config,
    root: str | Path,
    records: Sequence[ImageRecord],
    out_dir: str | Path,
    *,
    names: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[list[Path], list[list[float]]] | None:
    """Write ``parts_<name>.png`` per record: ω̃ as bands over the image + a bar chart.

    ``names`` default to 0..N-1. Returns the paths and the weights drawn, or None (logged,
    nothing written) when the model has no DF² module.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    weights = part_weights(model, cfg, root, records, device=device)
    if weights is None:
        logger.info("the model (model.arch=%s) has no part attention: no part-attention "
                    "figures", getattr(model, "arch", "?"))
        return None
    names = [str(i) for i in range(len(records))] if names is None else list(names)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cmap = colormaps["viridis"]
    paths = []
    for rec, w, name in zip(records, weights, names, strict=True):
        w_np = w.numpy().astype(np.float64)
        p = len(w_np)
        img = decode_resize(Path(root) / rec.path, (256, 128))
        fig = Figure(figsize=(3.6, 3.4), dpi=150)
        FigureCanvasAgg(fig)
        ax_img, ax_bar = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.3]})
        ax_img.imshow(img, extent=(0, 128, 256, 0))
        top = max(float(w_np.max()), 1e-12)
        for k in range(p):
            y0, y1 = 256 * k / p, 256 * (k + 1) / p
            ax_img.axhspan(y0, y1, color=cmap(w_np[k] / top), alpha=0.45 * w_np[k] / top + 0.05)
            ax_img.axhline(y0, color="white", linewidth=0.6)
            ax_img.text(4, (y0 + y1) / 2, f"{w_np[k]:.2f}", color="white", fontsize=7,
                        va="center", fontweight="bold")
        ax_img.set_xlim(0, 128)
        ax_img.set_ylim(256, 0)
        ax_img.set_axis_off()
        ax_img.set_title(f"id {rec.pid} ({rec.modality.upper()})", fontsize=8)
        ys = np.arange(p)
        ax_bar.barh(ys, w_np, color=[cmap(v / top) for v in w_np])
        ax_bar.set_yticks(ys, [f"part {k + 1}" for k in ys], fontsize=7)
        ax_bar.invert_yaxis()
        ax_bar.set_xlim(0, 1)
        ax_bar.tick_params(axis="x", labelsize=7)
        ax_bar.set_xlabel("ω̃ (softmax over parts)", fontsize=7)
        fig.tight_layout()
        path = out / f"parts_{name}.png"
        fig.savefig(path, format="png")
        paths.append(path)
    return paths, [w.tolist() for w in weights]


# --------------------------------------------------------------------------- t-SNE


def _tsne(feats: np.ndarray, seed: int) -> np.ndarray:
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise VisualizeError(f"--tsne needs scikit-learn, which is not installed: "
                             f"{_DEPLOY_HINT}") from None
    n = feats.shape[0]
    if n < 4:
        raise VisualizeError(f"t-SNE needs at least 4 test images, got {n}")
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
    return TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca",
                learning_rate="auto").fit_transform(feats.astype(np.float64))


def tsne_figure(
    model: ReIDNet,
    cfg: Config,
    root: str | Path,
    path: str | Path,
    *,
    split: TestSplit | None = None,
    untrained: ReIDNet | None = None,
    num_ids: int = 6,
    seed: int = 0,
    **split_kw: Any,
) -> tuple[Path, dict[str, Any]]:
    """Write a t-SNE of the trial's RGB and IR test features (query + gallery) to ``path``.

    Points are coloured by modality (RGB blue, IR red); ``num_ids`` identities (seeded) get a
    marker each, the others are small faint dots. With ``untrained`` (e.g. a fresh
    ``build_model`` of the same config, ``pretrained="none"``), its embedding is drawn on the
    left ("before") and the model's on the right ("after").

    Returns the path and a summary (points per modality, highlighted ids, perplexity).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    root = Path(root)
    if split is None:
        split = load_test_split(model, cfg, root, **split_kw)
    panels = [("after: trained model", split)]
    if untrained is not None:
        before = load_test_split(untrained, cfg, root, dataset=split.dataset,
                                 mode=split.options.mode, direction=split.options.direction,
                                 trial=split.trial,
                                 device=split_kw.get("device", "cpu"))
        panels.insert(0, ("before: untrained (random init, pretrained='none')", before))
    records = split.query + split.gallery
    pids = np.asarray([r.pid for r in records])
    mods = np.asarray([r.modality for r in records])
    ids = sorted(set(pids.tolist()))
    rng = np.random.default_rng(seed)
    shown = sorted(int(i) for i in rng.choice(ids, size=min(num_ids, len(ids)), replace=False))
    fig = Figure(figsize=(5.0 * len(panels), 4.6), dpi=150)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    summary: dict[str, Any] = {"ids": shown, "points": {}, "panels": []}
    for ax, (title, sp) in zip(axes, panels, strict=True):
        feats = torch.cat([sp.query_feats, sp.gallery_feats]).numpy()
        emb = _tsne(feats, seed)
        for m in ("rgb", "ir"):
            sel = (mods == m) & ~np.isin(pids, shown)
            ax.scatter(emb[sel, 0], emb[sel, 1], s=6, c=_MODALITY_COLOR[m], alpha=0.25,
                       linewidths=0)
            for k, pid in enumerate(shown):
                s = (mods == m) & (pids == pid)
                ax.scatter(emb[s, 0], emb[s, 1], s=28, c=_MODALITY_COLOR[m],
                           marker=_MARKERS[k % len(_MARKERS)], edgecolors="black",
                           linewidths=0.4, label=f"id {pid}" if m == "rgb" else None)
        ax.set_title(f"{title}\n{split.title}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        summary["panels"].append(title)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", linestyle="", color=_MODALITY_COLOR[m],
                      label=m.upper()) for m in ("rgb", "ir")]
    handles += [Line2D([], [], marker=_MARKERS[k % len(_MARKERS)], linestyle="", color="gray",
                       markeredgecolor="black", label=f"id {pid}") for k, pid in enumerate(shown)]
    axes[-1].legend(handles=handles, fontsize=6, loc="best", framealpha=0.8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    summary["points"] = {m: int((mods == m).sum()) for m in ("rgb", "ir")}
    summary["perplexity"] = float(min(30.0, max(2.0, (len(records) - 1) / 3.0)))
    summary["png"] = path.name
    logger.info("wrote %s", path)
    return path, summary


def build_untrained(model: ReIDNet, cfg: Config, seed: int = 0) -> ReIDNet:
    """A freshly initialised network of ``cfg.model`` (``pretrained="none"``: no download)."""
    from df2am.models import build_model

    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.pretrained = "none"
    torch.manual_seed(seed)
    fresh = build_model(model_cfg, int(getattr(model, "num_classes", 1)))
    return fresh.eval()


# --------------------------------------------------------------------------- all of it


def visualize(
    model: ReIDNet,
    cfg: Config,
    root: str | Path,
    out_dir: str | Path,
    *,
    dataset: str | None = None,
    mode: str | None = None,
    direction: str | None = None,
    trial: int | None = None,
    queries: int = 4,
    query_index: Sequence[int] | None = None,
    top_k: int = 10,
    seed: int = 0,
    tsne: bool = False,
    tsne_untrained: bool = False,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
) -> VisualizeResult:
    """Strips + part attention (+ t-SNE) of one trial into ``out_dir``, and ``visualize.json``.

    ``visualize.json``: ``dataset``, ``trial``, ``options``, ``distance`` (its definition),
    ``queries`` (per drawn query: the :func:`rank_queries` entry, ``png``, ``boxes``,
    ``part_weights`` or None, ``parts_png``), ``df2`` (whether part figures were drawn) and,
    with ``tsne``, ``tsne`` (the :func:`tsne_figure` summary).
    """
    if tsne_untrained and not tsne:
        tsne = True
    root = Path(root)
    out = Path(out_dir)
    split = load_test_split(model, cfg, root, dataset=dataset, mode=mode, direction=direction,
                            trial=trial, device=device, batch_size=batch_size,
                            query_index=query_index)
    result = VisualizeResult()
    paths, entries = rank_strips(model, cfg, root, out, split=split, queries=queries,
                                 query_index=query_index, top_k=top_k, seed=seed)
    result.paths += paths
    parts = part_attention_figure(model, cfg, root,
                                  [split.query[e["query_index"]] for e in entries], out,
                                  names=[str(e["query_index"]) for e in entries], device=device)
    for k, e in enumerate(entries):
        e["part_weights"] = None if parts is None else parts[1][k]
        e["parts_png"] = None if parts is None else parts[0][k].name
    if parts is not None:
        result.paths += parts[0]
    doc: dict[str, Any] = {
        "dataset": split.dataset,
        "title": split.title,
        "trial": split.trial,
        "options": {"mode": split.options.mode, "direction": split.options.direction,
                    "sampler": split.options.sampler, "shots": split.options.shots},
        "distance": "cosine distance 1 - q.g of L2-normalised test features (ranking equals "
                    "the evaluator's); full gallery, no junk removal",
        "num_query": len(split.query),
        "num_gallery": len(split.gallery),
        "top_k": top_k,
        "seed": seed,
        "arch": getattr(model, "arch", cfg.model.arch),
        "df2": parts is not None,
        "queries": entries,
    }
    if tsne:
        untrained = build_untrained(model, cfg, seed) if tsne_untrained else None
        p, summary = tsne_figure(model, cfg, root, out / "tsne.png", split=split,
                                 untrained=untrained, seed=seed, device=device)
        doc["tsne"] = summary
        result.paths.append(p)
    json_path = out / "visualize.json"
    out.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    result.doc, result.json_path = doc, json_path
    result.paths.append(json_path)
    return result
