"""Feature files: extract features of your own images with a trained model, save, load.

::

    from df2am.deploy.features import extract_images, save_features, load_features

    feats = extract_images("runs/sysu/model_final.pt", "photos/cam3", "ir", dtype="float16")
    save_features(feats, "out/gallery")          # writes out/gallery.npy + out/gallery.json
    g = load_features("out/gallery")             # or "out/gallery.npy" / "out/gallery.json"
    g.features.shape, g.paths[:2], g.fingerprint

Command line: ``df2am extract CHECKPOINT --images DIR|LIST.txt --modality rgb|ir --out FEATS``.

Format: ``FEATS.npy`` + ``FEATS.json``
-------------------------------------
* ``FEATS.npy``: the features, one L2-normalised row per image, shape (N, C), ``float16`` or
  ``float32``. ``.npy`` is NumPy's own, versioned, pickle-free format: any NumPy reads it
  (``np.load``), it memory-maps (``mmap_mode="r"``, so a million-row gallery is not read
  into RAM to build an index) and FAISS, PyTorch or another language take it without a
  df2am install. float16 halves the size; cosine scores of unit vectors lose < 1e-3.
* ``FEATS.json`` (the sidecar): human-readable metadata that must travel with the numbers —
  ``format`` (:data:`FORMAT`), ``paths`` (row i is ``paths[i]``, relative to ``root`` unless
  absolute), ``root``, ``modality``, ``dtype``, ``dim``, ``fingerprint``, ``weights_sha256``,
  ``preprocessing`` (height, width, resize, mean/std normalisation, test feature, flip),
  ``checkpoint``, ``runtime`` (``torch`` | ``onnxruntime``), ``precision`` (fp32 | bf16 |
  int8), ``graph`` (with ``onnxruntime``: the ``.onnx`` file's path, SHA-256 and quantisation),
  ``skipped`` (unreadable images left out with ``--skip-bad``, each with its error) and
  ``df2am_version``.

Alternatives rejected: ``.npz`` (a zip: no memory map), HDF5 / safetensors (an extra
dependency for two arrays), a pickle (unsafe to load, Python-only).

Validation (this module owns the feature-file input kind): a :class:`FeatureSet` is checked
when it is made (:func:`check_features`: a 2-D float16/float32 array, at least one row, every
value finite, no all-zero row, one path per row), so an extraction that produced NaN refuses
to save and a hand-made or damaged ``.npy`` refuses to load; :func:`load_features` also checks
the sidecar (every key present with its type; row count, dimension, ``dtype`` and
``num_images`` equal to the array's; ``runtime`` and ``precision`` values df2am writes; UTF-8
with or without a byte-order mark), refuses an empty or truncated ``.npy`` naming it, and
notes duplicated paths with a warning. List files (:func:`read_list_file`): UTF-8 with or
without a byte-order mark, LF or CRLF, blank lines and ``#`` comments skipped; a duplicated
entry is extracted once (a warning names the list file and both lines): a gallery holding one
image twice would show it twice in every ranking and count it twice in a calibration.

The fingerprint is the SHA-256 of the model (its weights and architecture config) and of the
preprocessing. Two feature sets are comparable exactly when their fingerprints are equal:
the same network and the same image pipeline. Modality, dtype, runtime and precision are *not*
part of it: an IR query is meant to be compared with an RGB gallery, a float16 copy of the same
features is still the same embedding, and a graph exported from the checkpoint computes the same
embedding (its metadata carries the fingerprint). How the numbers were computed (runtime,
precision) is recorded beside it and checked separately
(:func:`df2am.deploy.runtime.check_numerics`: int8 is not mixed with float silently).

The model is a checkpoint (PyTorch) or an exported graph (``.onnx``, ONNX Runtime, fp32 or
int8: ``df2am extract GRAPH.onnx --images DIR --modality ir --out FEATS``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm

from df2am import __version__
from df2am.atomic import atomic_write
from df2am.config import Config, config_to_dict
from df2am.data.cache import decode_resize
from df2am.data.images import display_path
from df2am.data.transforms import IMAGENET_MEAN, IMAGENET_STD, TestTransform
from df2am.device import resolve_device
from df2am.errors import ConfigError, DatasetError

if TYPE_CHECKING:  # the networks import torchvision: not needed at import time
    from df2am.models import ReIDNet

__all__ = [
    "FORMAT",
    "IMAGE_SUFFIXES",
    "FeatureSet",
    "FeaturesError",
    "check_features",
    "list_images",
    "read_list_file",
    "model_fingerprint",
    "extract_paths",
    "extract_images",
    "save_features",
    "load_features",
    "feature_paths",
]

logger = logging.getLogger(__name__)

#: The ``format`` value of the sidecar; bump when the layout changes.
FORMAT = "df2am-features-v1"
#: Image files found by a folder walk (compared case-insensitively).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_DTYPES = ("float16", "float32")


class FeaturesError(DatasetError):
    """A feature file is missing, malformed, or does not fit what it is used with."""


@dataclass
class FeatureSet:
    """Features of a list of images and everything needed to trust them later.

    Attributes:
        features: (N, C) float16/float32, L2-normalised rows; row i belongs to ``paths[i]``.
        paths: image paths as listed (relative to ``root`` unless absolute).
        root: the folder the relative paths start from.
        modality: "rgb" or "ir" (the stem the images went through).
        fingerprint: SHA-256 of model + preprocessing (:func:`model_fingerprint`).
        weights_sha256: SHA-256 of the model weights alone (to tell what differs).
        preprocessing: height, width, resize, mean, std, feature, flip.
        checkpoint: the checkpoint file the features came from (for a graph: the one it was
            exported from).
        precision: "fp32", "bf16" (autocast during extraction) or "int8" (a quantised graph).
        runtime: "torch" or "onnxruntime" (an exported graph).
        graph: with ``onnxruntime``, the graph's path, SHA-256 and quantisation settings.
        skipped: ``{"path", "error"}`` of images left out with ``skip_bad``.
        df2am_version: the library version that wrote them.
    """

    features: np.ndarray
    paths: list[str]
    root: str
    modality: str
    fingerprint: str
    weights_sha256: str
    preprocessing: dict[str, Any]
    checkpoint: str = ""
    precision: str = "fp32"
    runtime: str = "torch"
    graph: dict[str, Any] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    df2am_version: str = __version__

    def __post_init__(self) -> None:
        check_features(self.features, self.paths)

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def dtype(self) -> str:
        return str(self.features.dtype)

    @property
    def numerics(self) -> tuple[str, str]:
        """``(runtime, precision)`` the features were computed with."""
        return self.runtime, self.precision

    def resolved_paths(self) -> list[Path]:
        """Absolute paths of the images (``root / path`` unless the path is absolute)."""
        root = Path(self.root)
        return [Path(p) if Path(p).is_absolute() else root / p for p in self.paths]

    def sidecar(self) -> dict[str, Any]:
        """The JSON document of ``FEATS.json``."""
        doc = asdict(self)
        del doc["features"]
        return {"format": FORMAT, "num_images": len(self.paths), "dim": self.dim,
                "dtype": self.dtype, **doc}


# --------------------------------------------------------------------------- validation


def check_features(features: np.ndarray, paths: Sequence[str] | None = None,
                   where: str = "") -> None:
    """Refuse a feature array that no search or calibration can trust.

    Checks: 2-D, at least one row, dtype float16 or float32, one path per row (when ``paths``
    is given), every value finite, no all-zero row (it has no direction to compare). Reads
    the array once, in chunks (a memory-mapped gallery is not loaded whole).

    Raises:
        FeaturesError: naming ``where`` (a file, when given) and, for a bad row, its number
            and image path.
    """
    pre = f"{where}: " if where else ""
    arr = features
    if not isinstance(arr, np.ndarray) or arr.ndim != 2:
        shape = getattr(arr, "shape", "?")
        raise FeaturesError(f"{pre}expected a 2-D (N, C) array, got shape {shape}")
    if str(arr.dtype) not in _DTYPES:
        raise FeaturesError(f"{pre}dtype {arr.dtype} is not a feature dtype "
                            f"({' or '.join(_DTYPES)}); convert with .astype('float32')")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise FeaturesError(f"{pre}no features (shape {tuple(arr.shape)})")
    if paths is not None and len(paths) != arr.shape[0]:
        raise FeaturesError(f"{pre}{arr.shape[0]} rows but {len(paths)} paths")
    step = max(1, (1 << 24) // max(1, arr.shape[1]))  # ~16M values per chunk
    problems = {"holds NaN or infinite values": [0, -1],
                "is all zeros (no direction to compare)": [0, -1]}
    for start in range(0, arr.shape[0], step):
        chunk = np.asarray(arr[start:start + step], dtype=np.float32)
        finite = np.isfinite(chunk).all(axis=1)
        zero = finite & ~(chunk != 0).any(axis=1)
        for bad, seen in zip((~finite, zero), problems.values(), strict=True):
            if bad.any():
                seen[0] += int(bad.sum())
                if seen[1] < 0:
                    seen[1] = start + int(np.argmax(bad))
    for what, (count, row) in problems.items():
        if count:
            image = f" (image {paths[row]})" if paths is not None else ""
            raise FeaturesError(
                f"{pre}row {row}{image} {what}"
                + (f", and {count - 1} more row(s)" if count > 1 else "")
                + ": features of a model or image that went wrong cannot be searched")


_TYPE_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "a mapping"}


def _check_sidecar(meta: Any, js: Path) -> None:
    """Every key :func:`load_features` needs, with its type."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise FeaturesError(f"{js}: not a df2am feature sidecar (format != {FORMAT!r})")
    types = {"paths": list, "dim": int, "fingerprint": str, "weights_sha256": str,
             "modality": str, "root": str, "preprocessing": dict}
    for key, tp in types.items():
        value = meta.get(key)
        if key not in meta:
            raise FeaturesError(f"{js}: the sidecar lacks key {key!r}")
        if not isinstance(value, tp) or isinstance(value, bool):
            raise FeaturesError(f"{js}: key {key!r} must be {_TYPE_NAMES[tp]}, got "
                                f"{type(value).__name__} {str(value)[:40]!r}")
    if not all(isinstance(p, str) for p in meta["paths"]):
        raise FeaturesError(f"{js}: 'paths' must list strings")
    if meta["modality"] not in ("rgb", "ir"):
        raise FeaturesError(f"{js}: 'modality' must be 'rgb' or 'ir', got {meta['modality']!r}")
    check_numerics_keys(meta, js, FeaturesError)


def check_numerics_keys(meta: dict[str, Any], js: Path, error: type[Exception]) -> None:
    """``runtime`` and ``precision``, where a sidecar has them, are values df2am writes: they
    decide whether int8 and float features may be compared."""
    from df2am.deploy.runtime import PRECISIONS, RUNTIMES  # runtime imports the exporter

    for key, allowed in (("runtime", RUNTIMES), ("precision", PRECISIONS)):
        if key in meta and meta[key] not in allowed:
            raise error(f"{js}: {key!r} must be one of {list(allowed)}, got {meta[key]!r}")


def read_sidecar(js: Path, error: type[Exception]) -> Any:
    """The JSON document of a sidecar (UTF-8, with or without a byte-order mark: an editor's
    save), or ``error`` naming the file."""
    try:
        return json.loads(js.read_bytes().decode("utf-8-sig"))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise error(f"{js}: not a readable JSON sidecar: {exc}") from None


def _note_duplicates(paths: Sequence[str], where: str) -> None:
    seen: dict[str, int] = {}
    dups = []
    for i, p in enumerate(paths):
        if p in seen:
            dups.append((seen[p], i, p))
        else:
            seen[p] = i
    if dups:
        first, second, path = dups[0]
        logger.warning("%s: %d duplicated image path(s), e.g. %r at rows %d and %d: each copy "
                       "is a separate gallery row", where, len(dups), path, first, second)


# --------------------------------------------------------------------------- file format


def feature_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(FEATS.npy, FEATS.json)`` of ``path`` given with or without a suffix."""
    p = Path(path)
    base = p.with_suffix("") if p.suffix in (".npy", ".json") else p
    return base.with_name(base.name + ".npy"), base.with_name(base.name + ".json")


def save_features(fs: FeatureSet, path: str | os.PathLike[str]) -> Path:
    """Write ``FEATS.npy`` and ``FEATS.json`` (each atomically) and return the ``.npy`` path."""
    if fs.features.ndim != 2 or fs.features.shape[0] != len(fs.paths):
        raise FeaturesError(
            f"features {tuple(fs.features.shape)} do not fit {len(fs.paths)} paths")
    npy, js = feature_paths(path)
    npy.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(npy, lambda fh: np.save(fh, np.ascontiguousarray(fs.features)))
    # The sidecar goes last: a reader that finds it can trust the .npy next to it.
    text = json.dumps(fs.sidecar(), indent=1) + "\n"
    atomic_write(js, lambda fh: fh.write(text.encode()))
    logger.info("wrote %s (%d × %d %s) and %s", npy, *fs.features.shape, fs.dtype, js.name)
    return npy


def load_features(path: str | os.PathLike[str], *, mmap: bool = False) -> FeatureSet:
    """Read a feature file written by :func:`save_features` (``.npy``, ``.json`` or no suffix).

    ``mmap=True`` memory-maps the array (read-only) instead of reading it.

    Raises:
        FeaturesError: a file is missing, the sidecar is not this format or lacks a key, the
            array does not match the sidecar (row count, dimension), or fails
            :func:`check_features` (dtype, empty, a non-finite or all-zero row).
    """
    npy, js = feature_paths(path)
    for f in (npy, js):
        if not f.is_file():
            raise FeaturesError(f"feature file not found: {f} (expected {npy.name} + {js.name})")
    meta = read_sidecar(js, FeaturesError)
    try:
        arr = np.load(npy, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:  # EOFError: an empty file
        raise FeaturesError(f"{npy}: not a readable NumPy array file (empty, truncated or "
                            f"another format): {exc}") from None
    _check_sidecar(meta, js)
    if arr.ndim != 2 or arr.shape[0] != len(meta["paths"]) or arr.shape[1] != meta["dim"]:
        raise FeaturesError(
            f"{npy}: array {arr.shape} does not match {js.name} "
            f"({len(meta['paths'])} paths × {meta['dim']})")
    for key, value in (("dtype", str(arr.dtype)), ("num_images", int(arr.shape[0]))):
        if key in meta and meta[key] != value:
            raise FeaturesError(f"{js}: {key!r} is {meta[key]!r} but {npy.name} holds {value!r}")
    keys = {f for f in FeatureSet.__dataclass_fields__ if f != "features"}
    try:
        fs = FeatureSet(features=arr, **{k: meta[k] for k in keys if k in meta})
    except FeaturesError as exc:
        raise FeaturesError(f"{npy}: {exc}") from None
    _note_duplicates(fs.paths, str(js))
    return fs


# --------------------------------------------------------------------------- image lists


def list_images(source: str | os.PathLike[str]) -> tuple[Path, list[str]]:
    """``(root, paths)`` of a folder (recursive, sorted) or of a list file (one per line).

    A folder gives every file whose suffix is one of :data:`IMAGE_SUFFIXES` (any case),
    relative to the folder, sorted by their POSIX path so the order is the same on every
    machine. A list file gives :func:`read_list_file`'s entries; relative lines are relative
    to the list file's folder.

    Raises:
        DatasetError: the source does not exist, is an image (not a list), is not a UTF-8
            text file, or lists no image.
    """
    src = Path(source)
    if src.is_dir():
        root = src.resolve()
        paths = sorted(
            p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        what = (f"folder {src} has no image files ({', '.join(IMAGE_SUFFIXES)}, "
                "searched recursively)")
    elif src.is_file():
        root = src.resolve().parent
        paths = read_list_file(src)
        what = f"list file {src} names no image"
    else:
        raise DatasetError(f"--images {src}: no such folder or list file")
    if not paths:
        raise DatasetError(what)
    return root, paths


def read_list_file(path: str | os.PathLike[str]) -> list[str]:
    """The image paths of a list file, each once, in file order.

    One path per line; UTF-8 with or without a byte-order mark; LF or CRLF line ends; blank
    lines and lines starting with ``#`` are skipped, surrounding spaces stripped. A path
    listed twice (also spelled differently: ``a/b.jpg`` and ``./a/b.jpg``) is kept once, with
    a warning naming the list file and both line numbers.

    Raises:
        DatasetError: the file is an image (``--images`` takes a folder or a list), holds
            binary data, or is not UTF-8 (naming the line).
    """
    p = Path(path)
    if p.suffix.lower() in IMAGE_SUFFIXES:
        raise DatasetError(f"--images {display_path(p)} is an image file: --images takes a "
                           "folder of images or a list file (one image path per line)")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DatasetError(f"list file {display_path(p)} is not UTF-8 text (byte "
                           f"0x{raw[exc.start]:02x} on line {line}): save it as UTF-8, one "
                           "image path per line") from None
    if "\x00" in text:
        raise DatasetError(f"list file {display_path(p)} holds binary data: expected text, one "
                           "image path per line")
    paths: list[str] = []
    first_line: dict[str, int] = {}
    dups: list[tuple[str, int, int]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        key = posixpath.normpath(entry.replace("\\", "/"))
        if key in first_line:
            dups.append((entry, first_line[key], number))
            continue
        first_line[key] = number
        paths.append(entry)
    if dups:
        entry, first, again = dups[0]
        logger.warning("list file %s: %d duplicated entr%s, each extracted once (e.g. %r on "
                       "lines %d and %d)", display_path(p), len(dups),
                       "y" if len(dups) == 1 else "ies", entry, first, again)
    return paths


# --------------------------------------------------------------------------- fingerprint


def _preprocessing(cfg: Config, feature: str | None, flip: bool | None) -> dict[str, Any]:
    return {
        "height": cfg.data.height,
        "width": cfg.data.width,
        "resize": "bilinear",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "feature": feature or cfg.model.test_feature,
        "flip": bool(cfg.model.flip_test if flip is None else flip),
    }


def _weights_sha256(model: ReIDNet) -> str:
    """SHA-256 of the state dict (names, dtypes, shapes, bytes) in key order.

    Hashing the weights rather than the checkpoint file makes ``model_final.pt`` and a
    ``best.pt`` holding the same weights (but other optimiser state) compatible.
    """
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def model_fingerprint(
    model: ReIDNet, cfg: Config, *, feature: str | None = None, flip: bool | None = None
) -> tuple[str, str, dict[str, Any]]:
    """``(fingerprint, weights_sha256, preprocessing)`` of a model and its test pipeline."""
    weights = _weights_sha256(model)
    pre = _preprocessing(cfg, feature, flip)
    arch = {k: v for k, v in config_to_dict(cfg)["model"].items() if k != "pretrained"}
    doc = json.dumps({"weights": weights, "model": arch, "preprocessing": pre}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest(), weights, pre


# --------------------------------------------------------------------------- extraction


def _batches(files: Sequence[Path], size: tuple[int, int], batch_size: int, skip_bad: bool,
             skipped: list[dict[str, str]], geometry: str,
             ) -> Iterator[tuple[list[int], np.ndarray]]:
    """Decoded uint8 batches and their row numbers; bad images raise or go to ``skipped``."""
    rows: list[int] = []
    arrays: list[np.ndarray] = []
    for i, f in enumerate(files):
        try:
            arrays.append(decode_resize(f, size, geometry=geometry))
        except DatasetError as exc:
            if not skip_bad:
                raise
            logger.warning("skipping unreadable image %s: %s", f, exc)
            skipped.append({"path": str(f), "error": str(exc)})
            continue
        rows.append(i)
        if len(rows) == batch_size:
            yield rows, np.stack(arrays)
            rows, arrays = [], []
    if rows:
        yield rows, np.stack(arrays)


def extract_paths(
    model: ReIDNet, cfg: Config, files: Sequence[Path], modality: str, *,
    batch_size: int = 64, bf16: bool = False, skip_bad: bool = False,
    feature: str | None = None, flip: bool | None = None, progress: bool = True,
    strict_images: bool = False,
) -> tuple[np.ndarray, list[int], list[dict[str, str]]]:
    """Features (n_ok, C) float32 of ``files``, the rows kept, and the images skipped.

    The same decode + resize + normalisation as :func:`df2am.deploy.api.extract_features`,
    so fp32 features are identical to the API's. ``bf16`` runs the network under bf16
    autocast (CPU or GPU) and re-normalises the rows in fp32. An image of odd geometry
    (:func:`df2am.data.images.check_geometry`) is a warning naming it, or an error with
    ``strict_images``.

    Raises:
        DatasetError: an unreadable image (unless ``skip_bad``), or none readable.
        FeaturesError: the model gave a non-finite feature (naming the first image).
    """
    if modality not in ("rgb", "ir"):
        raise ConfigError(f"--modality must be 'rgb' or 'ir', got {modality!r}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    dev = next(model.parameters()).device
    h, w = cfg.data.height, cfg.data.width
    transform = TestTransform(h, w)
    skipped: list[dict[str, str]] = []
    chunks, kept = [], []
    bar = tqdm(total=len(files), desc=f"extracting {modality}", unit="img",
               disable=not progress or not sys.stderr.isatty())
    with bar:
        geometry = "strict" if strict_images else "warn"
        for rows, raw in _batches(files, (h, w), batch_size, skip_bad, skipped, geometry):
            batch = transform(torch.from_numpy(raw)).to(dev)
            feats = _forward(model, batch, modality, feature, flip, bf16)
            chunks.append(feats.cpu().numpy())
            kept += rows
            bar.update(rows[-1] + 1 - bar.n)  # skipped images count as done too
    if not chunks:
        first = skipped[0]["error"] if skipped else "no image"
        raise DatasetError(f"none of the {len(files)} images could be read (all skipped; "
                           f"the first: {first})")
    feats = np.concatenate(chunks)
    bad = ~np.isfinite(feats).all(axis=1)
    if bad.any():
        rows = np.nonzero(bad)[0]
        raise FeaturesError(
            f"the model gave non-finite features for {len(rows)} of {len(feats)} images "
            f"(first: {display_path(files[kept[rows[0]]])}): its weights are finite, so its "
            "activations overflow; this model cannot embed images")
    return feats, kept, skipped


def _forward(model: ReIDNet, batch: torch.Tensor, modality: str, feature: str | None,
             flip: bool | None, bf16: bool) -> torch.Tensor:
    """fp32 unit rows of one batch; under bf16 autocast when asked."""
    def run() -> torch.Tensor:
        return model.extract(batch, modality, feature=feature, flip=flip).float()

    if not bf16:
        return run()
    with torch.autocast(batch.device.type, dtype=torch.bfloat16):
        feats = torch.nn.functional.normalize(run(), dim=1)
    # oneDNN's bf16 convolution returns wrong values (NaN/garbage) for very small feature maps
    # on some CPUs (benchmarks/check_bf16_conv.py; docs/benchmarks.md): rows that come out
    # non-finite or far from unit norm are recomputed in fp32, with a warning, not saved.
    bad = ~torch.isfinite(feats).all(dim=1) | (feats.norm(dim=1) < 0.5)
    if bad.any():
        logger.warning("bf16 gave %d invalid feature row(s); recomputed in fp32", int(bad.sum()))
        feats[bad] = run()[bad]
    return feats


def extract_images(
    checkpoint: str | os.PathLike[str], images: str | os.PathLike[str], modality: str, *,
    dtype: str = "float16", batch_size: int = 64, device: str = "auto", bf16: bool = False,
    skip_bad: bool = False, progress: bool = True, threads: int | None = None,
    strict_images: bool = False,
) -> FeatureSet:
    """Load ``checkpoint`` (a ``.pt`` checkpoint, or an exported ``.onnx`` graph run on ONNX
    Runtime with ``threads`` intra-op threads), extract every image of a folder or list file,
    return a FeatureSet.

    Example::

        fs = extract_images("runs/sysu/model_final.pt", "gallery/", "rgb", skip_bad=True)
        fs = extract_images("deploy/rgb_int8.onnx", "gallery/", "rgb")   # int8, ONNX Runtime
        save_features(fs, "out/gallery")
    """
    if modality not in ("rgb", "ir"):
        raise ConfigError(f"--modality must be 'rgb' or 'ir', got {modality!r}")
    if dtype not in _DTYPES:
        raise ConfigError(f"--dtype must be one of {_DTYPES}, got {dtype!r}")
    root, paths = list_images(images)
    model, cfg, provenance = _load_extractor(checkpoint, modality, device=device, bf16=bf16,
                                             threads=threads)
    files = [Path(p) if Path(p).is_absolute() else root / p for p in paths]
    try:
        feats, kept, skipped = extract_paths(model, cfg, files, modality, batch_size=batch_size,
                                             bf16=bf16, skip_bad=skip_bad, progress=progress,
                                             strict_images=strict_images)
    except FeaturesError as exc:
        raise FeaturesError(f"{exc} (checkpoint {checkpoint})") from None
    except DatasetError as exc:  # the folder/list verb can skip bad images; say how
        hint = "" if skip_bad else " (use --skip-bad to leave such images out)"
        raise DatasetError(f"--images {images}: {exc}{hint}") from None
    logger.info("extracted %d %s images (%d skipped) from %s on %s (%s)", len(kept), modality,
                len(skipped), images, provenance["runtime"], provenance["precision"])
    return FeatureSet(
        features=feats.astype(dtype), paths=[paths[i] for i in kept], root=str(root),
        modality=modality, skipped=skipped, **provenance)


def _load_extractor(source: str | os.PathLike[str], modality: str, *, device: str, bf16: bool,
                    threads: int | None) -> tuple[Any, Config, dict[str, Any]]:
    """``(model, cfg, FeatureSet provenance fields)`` of a checkpoint or an exported graph."""
    from df2am.deploy.runtime import GraphModel, check_threads, is_graph

    check_threads(threads, used=is_graph(source))
    if is_graph(source):
        if bf16:
            raise ConfigError("--bf16 is for PyTorch checkpoints; a graph has its own precision "
                              "(df2am export --int8 for int8)")
        gm = GraphModel([source], threads=threads)
        if modality not in gm.graphs:
            raise ConfigError(f"{source} is the {gm.meta['modality']} stream's graph, but "
                              f"--modality is {modality}")
        return gm, gm.run_config, {
            "fingerprint": gm.fingerprint, "weights_sha256": gm.weights_sha256,
            "preprocessing": gm.preprocessing, "checkpoint": gm.checkpoint,
            "precision": gm.precision, "runtime": "onnxruntime", "graph": gm.record(modality)}
    from df2am.deploy.api import load_model  # api imports the evaluator; keep import cheap

    model, cfg = load_model(source, device=resolve_device(device, key="--device"))
    fingerprint, weights, pre = model_fingerprint(model, cfg)
    return model, cfg, {
        "fingerprint": fingerprint, "weights_sha256": weights, "preprocessing": pre,
        "checkpoint": str(Path(source).resolve()), "precision": "bf16" if bf16 else "fp32",
        "runtime": "torch"}
