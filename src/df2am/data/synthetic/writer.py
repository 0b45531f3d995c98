"""Write a synthetic dataset in the released SYSU-MM01, RegDB or LLCM layout.

See :mod:`df2am.data.synthetic` for the generative model and ``docs``-level usage; the layouts
are those of ``shared/design/protocols.md``:

* SYSU-MM01: ``cam1 … cam6/<pid:04d>/<nnnn>.jpg`` (RGB cams 1, 2, 4, 5; IR cams 3, 6; indoor
  1–3, outdoor 4–6) and ``exp/{train,val,test}_id.txt`` (one line of comma-separated ids).
* RegDB: ``Visible/<pid>/<gender>_<view>_v_<serial:05d>_<pid>.bmp``, the same names with
  ``Thermal``/``_t_`` for the paired thermal frame (RegDB's two cameras are registered, so each
  visible frame has a thermal twin in the same pose), and ``idx/{train,test}_{visible,thermal}_<t>
  .txt`` for t = 1..10 with lines ``<relative path> <label>``, labels contiguous from 0.
* LLCM: ``test_vis/cam1..9/<pid:04d>/<k:04d>.jpg``, ``test_nir/cam{1,2,4..9}/<pid:04d>/``,
  training images under ``train_{vis,nir}/<pid:04d>/`` listed by ``idx/train_{vis,nir}.txt``
  (``<relative path> <label>``), and ``idx/test_id.txt`` (one line of ids, unsorted).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from df2am.data.synthetic.model import (
    Camera,
    Person,
    Pose,
    draw_camera,
    draw_person,
    draw_pose,
)
from df2am.data.synthetic.render import (
    Background,
    add_occluder,
    compose,
    make_background,
    person_layer,
)
from df2am.errors import ConfigError, DatasetError

logger = logging.getLogger(__name__)

LAYOUTS = {"sysu": 1, "regdb": 2, "llcm": 3}  # layout → code mixed into every seed
MANIFEST = "synthetic.json"
GENERATOR_VERSION = 1
SYSU_CAMERAS = {  # cam → (modality, indoor), as in the released SYSU-MM01
    1: ("rgb", True), 2: ("rgb", True), 3: ("ir", True),
    4: ("rgb", False), 5: ("rgb", False), 6: ("ir", False),
}
REGDB_CAMERAS = {1: ("rgb", False), 2: ("ir", False)}  # visible, thermal
REGDB_TRIALS = 10
#: LLCM scene cameras: visible camera c is scene camera c, NIR camera c is 10 + c (each LLCM
#: camera films visible by day and NIR at night: two looks, one place). No NIR camera 3.
LLCM_VIS_CAMERAS = (1, 2, 3, 4, 5, 6, 7, 8, 9)
LLCM_NIR_CAMERAS = (1, 2, 4, 5, 6, 7, 8, 9)
LLCM_CAMERAS = {**{c: ("rgb", c <= 4) for c in LLCM_VIS_CAMERAS},
                **{10 + c: ("ir", c <= 4) for c in LLCM_NIR_CAMERAS}}
_OWNED = {"sysu": ("cam1", "cam2", "cam3", "cam4", "cam5", "cam6", "exp"),
          "regdb": ("Visible", "Thermal", "idx"),
          "llcm": ("idx", "train_vis", "train_nir", "test_vis", "test_nir")}


@dataclass(frozen=True)
class SyntheticSpec:
    """Every parameter that determines a synthetic dataset (stored in ``synthetic.json``).

    Attributes:
        layout: ``"sysu"``, ``"regdb"`` or ``"llcm"``.
        num_ids: identities 1..num_ids (SYSU ≥ 4: ≥ 1 train, ≥ 1 val, ≥ 2 test; RegDB ≥ 2;
            LLCM ≥ 3: ≥ 1 train, ≥ 2 test).
        seed: the only source of randomness; same spec → byte-identical files.
        size: (H, W) of every image.
        images_per_camera: SYSU and LLCM, inclusive range of images per (id, present camera).
        images_per_modality: RegDB only, visible (and thermal) images per id (real RegDB: 10).
        camera_presence: SYSU only, probability that an id appears in a camera (ids always keep
            ≥ 1 image in cam 1 or 2 and ≥ 1 in cam 3 or 6, so train ids have both modalities
            and every test id has a query and an indoor-search gallery image).
        occlusion_prob: probability that a frame has a foreground occluder.
        split: SYSU, (train, val) fractions of the ids; the rest (≥ 2 ids) is test. LLCM
            trains on the (train + val) fraction.
        jpeg_quality: SYSU JPEG quality.
    """

    layout: str
    num_ids: int
    seed: int = 0
    size: tuple[int, int] = (128, 64)
    images_per_camera: tuple[int, int] = (6, 10)
    images_per_modality: int = 10
    camera_presence: float = 0.8
    occlusion_prob: float = 0.15
    split: tuple[float, float] = (0.6, 0.1)
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ConfigError(f"synthetic layout {self.layout!r}: expected one of "
                              f"{sorted(LAYOUTS)}")
        minimum = {"sysu": 4, "regdb": 2, "llcm": 3}[self.layout]
        if self.num_ids < minimum:
            raise ConfigError(f"synthetic {self.layout} num_ids={self.num_ids}: expected at "
                              f"least {minimum}")
        h, w = self.size
        if h < 32 or w < 16:
            raise ConfigError(f"synthetic size {h}x{w}: expected H >= 32 and W >= 16")
        lo, hi = self.images_per_camera
        if not 1 <= lo <= hi:
            raise ConfigError(f"synthetic images_per_camera {self.images_per_camera}: "
                              "expected 1 <= low <= high")
        if self.images_per_modality < 1:
            raise ConfigError("synthetic images_per_modality: expected >= 1")
        if not 0.0 <= self.camera_presence <= 1.0 or not 0.0 <= self.occlusion_prob <= 1.0:
            raise ConfigError("synthetic camera_presence/occlusion_prob: expected in [0, 1]")
        train, val = self.split
        if not (train > 0.0 and val >= 0.0 and train + val < 1.0):
            raise ConfigError(f"synthetic split {self.split}: expected (train, val) fractions "
                              "with train > 0, val >= 0 and train + val < 1 (the rest is test)")


@dataclass
class SysuPlan:
    """Which ids are train/val/test and how many images each id has in each camera."""

    train: list[int]
    val: list[int]
    test: list[int]
    counts: dict[int, dict[int, int]] = field(default_factory=dict)


def sysu_plan(spec: SyntheticSpec) -> SysuPlan:
    """The split and the per-(id, camera) image counts of a SYSU-layout synthetic dataset.

    Split: ``round(split[0]·N)`` train ids, ``max(1, round(split[1]·N))`` val ids, the rest test
    (at least 2), drawn by a seeded permutation so the three lists interleave like the real ones.
    """
    n = spec.num_ids
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 6, LAYOUTS["sysu"]]))
    n_val = max(1, round(spec.split[1] * n))
    n_train = min(round(spec.split[0] * n), n - n_val - 2)
    perm = [int(i) + 1 for i in rng.permutation(n)]
    plan = SysuPlan(sorted(perm[:n_train]), sorted(perm[n_train: n_train + n_val]),
                    sorted(perm[n_train + n_val:]))
    lo, hi = spec.images_per_camera
    for pid in range(1, n + 1):
        present = {c for c in SYSU_CAMERAS if rng.random() < spec.camera_presence}
        # Guarantees of the protocol: an indoor RGB camera and an IR camera for every id.
        if not present & {1, 2}:
            present.add(int(rng.choice([1, 2])))
        if not present & {3, 6}:
            present.add(int(rng.choice([3, 6])))
        plan.counts[pid] = {c: int(rng.integers(lo, hi + 1)) for c in sorted(present)}
    return plan


def regdb_trials(spec: SyntheticSpec) -> list[tuple[list[int], list[int]]]:
    """(train ids, test ids) of trials 1..10: a seeded half/half split of the ids per trial
    (train gets ``N // 2`` ids, test the rest)."""
    out = []
    for t in range(1, REGDB_TRIALS + 1):
        rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 5, t]))
        perm = [int(i) + 1 for i in rng.permutation(spec.num_ids)]
        half = spec.num_ids // 2
        out.append((sorted(perm[:half]), sorted(perm[half:])))
    return out


def _frame_rng(spec: SyntheticSpec, pid: int, cam: int, k: int) -> np.random.Generator:
    # Seeded per frame (not a stream over the whole run) so every file depends only on its
    # own coordinates: the order (and the process) of writing cannot change the output.
    key = [spec.seed, 4, LAYOUTS[spec.layout], pid, cam, k]
    return np.random.default_rng(np.random.SeedSequence(key))


class _Scene:
    """Cameras and background canvases of one dataset, created once and reused per frame."""

    def __init__(self, spec: SyntheticSpec, cameras: dict[int, tuple[str, bool]]) -> None:
        code = LAYOUTS[spec.layout]
        self.spec = spec
        self.cameras: dict[int, Camera] = {
            c: draw_camera(spec.seed, code, c, mod, indoor, spec.occlusion_prob)
            for c, (mod, indoor) in cameras.items()
        }
        self.backgrounds: dict[int, Background] = {
            c: make_background(cam, spec.size, spec.seed, code) for c, cam in self.cameras.items()
        }

    def frame_rng(self, pid: int, cam: int, k: int) -> np.random.Generator:
        return _frame_rng(self.spec, pid, cam, k)

    @staticmethod
    def pose_of(spec: SyntheticSpec, cameras: dict[int, tuple[str, bool]], person: Person,
                pid: int, pose_cam: int, k: int) -> Pose:
        """The pose of frame ``k`` (the first draw of the frame's own generator), without
        rendering: what :meth:`render` draws first."""
        code = LAYOUTS[spec.layout]
        mod, indoor = cameras[pose_cam]
        camera = draw_camera(spec.seed, code, pose_cam, mod, indoor, spec.occlusion_prob)
        return draw_pose(_frame_rng(spec, pid, pose_cam, k), camera, person)

    def render(self, person: Person, pid: int, pose_cam: int, k: int,
               cams: Iterable[int]) -> Frame:
        """Render frame ``k`` of ``person`` in the pose drawn for ``pose_cam``, as seen by each of
        ``cams`` (several cameras = a registered multi-modal pair)."""
        rng = self.frame_rng(pid, pose_cam, k)
        pose = draw_pose(rng, self.cameras[pose_cam], person)
        layer = person_layer(person, pose, self.spec.size)
        add_occluder(layer, pose)
        images = {c: compose(layer, person, self.cameras[c], self.backgrounds[c], pose, rng)
                  for c in cams}
        return Frame(pose.view, images, layer.parts)


@dataclass
class Frame:
    """One rendered frame: the view drawn, the uint8 (H, W, 3) image per camera and the part
    label map (``render.SKIN``, ``render.TOP``, …) of the person layer."""

    view: str
    images: dict[int, np.ndarray]
    parts: np.ndarray


def render_frame(spec: SyntheticSpec, pid: int, k: int, cam: int | None = None) -> Frame:
    """Render exactly what :func:`write_synthetic` writes for frame ``k`` (1-based) of ``pid``:
    SYSU camera ``cam``, LLCM scene camera ``cam`` (visible c = c, NIR c = 10 + c), or (RegDB,
    ``cam`` ignored) the registered visible/thermal pair as
    cameras 1 and 2. For tests and previews; does not touch the disk.
    """
    if spec.layout == "sysu":
        if cam not in SYSU_CAMERAS:
            raise ConfigError(f"render_frame: SYSU camera must be 1..6, got {cam!r}")
        return _Scene(spec, {cam: SYSU_CAMERAS[cam]}).render(
            draw_person(spec.seed, pid), pid, cam, k, [cam])
    if spec.layout == "llcm":
        if cam not in LLCM_CAMERAS:
            raise ConfigError(f"render_frame: LLCM scene camera must be one of "
                              f"{sorted(LLCM_CAMERAS)} (NIR camera c is 10 + c), got {cam!r}")
        return _Scene(spec, {cam: LLCM_CAMERAS[cam]}).render(
            draw_person(spec.seed, pid), pid, cam, k, [cam])
    return _Scene(spec, REGDB_CAMERAS).render(draw_person(spec.seed, pid), pid, 1, k, [1, 2])


def _prepare(out: Path, spec: SyntheticSpec, overwrite: bool) -> bool:
    """Check ``out``; return True when it already holds this exact dataset (reuse it)."""
    manifest = out / MANIFEST
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return False
    if not out.is_dir():
        raise DatasetError(f"synthetic output {out}: exists and is not a directory")
    if not manifest.is_file():
        raise DatasetError(
            f"synthetic output {out}: directory is not empty and has no {MANIFEST}; refusing to "
            "mix synthetic files into it (choose an empty or new directory)")
    try:
        old = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"synthetic manifest {manifest}: unreadable ({exc})") from exc
    same = (old.get("complete") is True and old.get("version") == GENERATOR_VERSION
            and old.get("spec") == _spec_json(spec))
    if same and not overwrite:
        return True
    if not overwrite:
        raise DatasetError(
            f"synthetic output {out}: holds a different or incomplete synthetic dataset "
            f"({MANIFEST} spec {old.get('spec')}, complete={old.get('complete')}); pass "
            "overwrite=True (CLI: --overwrite) or choose another directory")
    # The manifest proves these folders were written by us: remove only them.
    for name in (*{n for names in _OWNED.values() for n in names}, MANIFEST):
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    return False


def _spec_json(spec: SyntheticSpec) -> dict:
    # JSON has no tuples: compare manifests in their JSON form.
    return json.loads(json.dumps(asdict(spec)))


def _write_manifest(out: Path, spec: SyntheticSpec, complete: bool, extra: dict) -> None:
    data = {"generator": "df2am.data.synthetic", "version": GENERATOR_VERSION,
            "complete": complete, "spec": _spec_json(spec), **extra}
    (out / MANIFEST).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


#: One image file to render: (pid, the camera whose pose is drawn, frame k, {camera: path}).
#: Several cameras = a registered multi-modal pair (RegDB) rendered from one pose.
RenderJob = tuple[int, int, int, dict[int, Path]]


def _render_jobs(spec: SyntheticSpec, cameras: dict[int, tuple[str, bool]],
                 jobs: list[RenderJob]) -> None:
    """Render and save ``jobs`` in this process (``.jpg`` at the spec's quality, else by
    extension). Every frame is seeded by its own coordinates, so any split of the jobs across
    processes writes the same bytes."""
    scene = _Scene(spec, cameras)
    persons: dict[int, Person] = {}
    for pid, pose_cam, k, paths in jobs:
        person = persons.get(pid) or persons.setdefault(pid, draw_person(spec.seed, pid))
        frame = scene.render(person, pid, pose_cam, k, list(paths))
        for cam, path in paths.items():
            extra = {"quality": spec.jpeg_quality} if path.suffix == ".jpg" else {}
            Image.fromarray(frame.images[cam]).save(path, **extra)


def _render_all(spec: SyntheticSpec, cameras: dict[int, tuple[str, bool]],
                jobs: list[RenderJob], workers: int) -> int:
    """Create the jobs' folders and render them, in ``workers`` processes (1 = here); returns
    the number of files written."""
    for folder in sorted({p.parent for *_, paths in jobs for p in paths.values()}):
        folder.mkdir(parents=True, exist_ok=True)
    if workers <= 1 or len(jobs) < 2:
        _render_jobs(spec, cameras, jobs)
    else:
        from concurrent.futures import ProcessPoolExecutor

        # Contiguous chunks keep each person's frames in one process (drawn once there).
        n_chunks = min(len(jobs), workers * 8)
        bounds = np.linspace(0, len(jobs), n_chunks + 1).astype(int)
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_render_jobs, spec, cameras, jobs[a:b])
                       for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
            for f in futures:
                f.result()
    return sum(len(paths) for *_, paths in jobs)


def _write_sysu(out: Path, spec: SyntheticSpec, workers: int = 1) -> dict:
    plan = sysu_plan(spec)
    for cam in SYSU_CAMERAS:  # all six folders exist even if no id is in a camera, as released
        (out / f"cam{cam}").mkdir(parents=True, exist_ok=True)
    jobs: list[RenderJob] = [
        (pid, cam, k, {cam: out / f"cam{cam}" / f"{pid:04d}" / f"{k:04d}.jpg"})
        for pid, cams in plan.counts.items() for cam, n in cams.items() for k in range(1, n + 1)
    ]
    n_files = _render_all(spec, SYSU_CAMERAS, jobs, workers)
    exp = out / "exp"
    exp.mkdir(parents=True, exist_ok=True)
    for name, ids in (("train", plan.train), ("val", plan.val), ("test", plan.test)):
        (exp / f"{name}_id.txt").write_text(",".join(str(i) for i in ids) + "\n")
    counts = {str(pid): {str(c): n for c, n in cams.items()} for pid, cams in plan.counts.items()}
    return {"files": n_files, "train_ids": plan.train, "val_ids": plan.val,
            "test_ids": plan.test, "counts": counts}


def _write_regdb(out: Path, spec: SyntheticSpec, workers: int = 1) -> dict:
    names: dict[int, list[tuple[str, str]]] = {}
    jobs: list[RenderJob] = []
    n = spec.images_per_modality
    for pid in range(1, spec.num_ids + 1):
        person = draw_person(spec.seed, pid)
        names[pid] = []
        for k in range(1, n + 1):
            # The file name holds the view, which the frame's pose draws: draw it here (the
            # same seeded draw the renderer repeats).
            view = _Scene.pose_of(spec, REGDB_CAMERAS, person, pid, 1, k).view
            serial = (pid - 1) * n + k  # shared by the registered visible/thermal pair
            stem = f"{person.gender}_{view}_{{}}_{serial:05d}_{pid}.bmp"
            vis, th = f"Visible/{pid}/{stem.format('v')}", f"Thermal/{pid}/{stem.format('t')}"
            names[pid].append((vis, th))
            jobs.append((pid, 1, k, {1: out / vis, 2: out / th}))
    _render_all(spec, REGDB_CAMERAS, jobs, workers)
    idx = out / "idx"
    idx.mkdir(parents=True, exist_ok=True)
    trials = regdb_trials(spec)
    for t, (train, test) in enumerate(trials, start=1):
        for split, ids in (("train", train), ("test", test)):
            for m, modality in enumerate(("visible", "thermal")):
                lines = [f"{path} {label}" for label, pid in enumerate(ids)
                         for path in sorted(p[m] for p in names[pid])]
                (idx / f"{split}_{modality}_{t}.txt").write_text("\n".join(lines) + "\n")
    return {"files": 2 * n * spec.num_ids, "trials": [{"train": a, "test": b} for a, b in trials]}


def llcm_plan(spec: SyntheticSpec) -> SysuPlan:
    """Train/test ids and per-(id, scene camera) image counts of an LLCM-layout dataset.

    ``round((split[0] + split[1])·N)`` train ids (at least 1, leaving at least 2 for test),
    drawn by a seeded permutation. Every id appears in at least one visible and one NIR camera.
    """
    n = spec.num_ids
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 6, LAYOUTS["llcm"]]))
    n_train = max(1, min(round((spec.split[0] + spec.split[1]) * n), n - 2))
    perm = [int(i) + 1 for i in rng.permutation(n)]
    plan = SysuPlan(sorted(perm[:n_train]), [], sorted(perm[n_train:]))
    lo, hi = spec.images_per_camera
    for pid in range(1, n + 1):
        present = {c for c in LLCM_CAMERAS if rng.random() < spec.camera_presence}
        for cams in (LLCM_VIS_CAMERAS, [10 + c for c in LLCM_NIR_CAMERAS]):
            if not present & set(cams):
                present.add(int(rng.choice(cams)))
        plan.counts[pid] = {c: int(rng.integers(lo, hi + 1)) for c in sorted(present)}
    return plan


def _write_llcm(out: Path, spec: SyntheticSpec, workers: int = 1) -> dict:
    plan = llcm_plan(spec)
    labels = {pid: label for label, pid in enumerate(plan.train)}
    train_lines: dict[str, list[str]] = {"vis": [], "nir": []}
    jobs: list[RenderJob] = []
    for pid, cams in plan.counts.items():
        for key, count in cams.items():
            mod = "vis" if key < 10 else "nir"
            cam = key if key < 10 else key - 10
            if pid in labels:  # the release's training folders are per id, camera in the name
                folder = f"train_{mod}/{pid:04d}"
                names = [f"{pid:04d}_c{cam:02d}_{k:04d}_{mod}.jpg" for k in range(1, count + 1)]
            else:
                folder = f"test_{mod}/cam{cam}/{pid:04d}"
                names = [f"{k:04d}.jpg" for k in range(1, count + 1)]
            for k, name in enumerate(names, start=1):
                jobs.append((pid, key, k, {key: out / folder / name}))
                if pid in labels:
                    train_lines[mod].append(f"{folder}/{name} {labels[pid]}")
    n_files = _render_all(spec, LLCM_CAMERAS, jobs, workers)
    for name in _OWNED["llcm"]:
        (out / name).mkdir(parents=True, exist_ok=True)
    for mod, lines in train_lines.items():
        (out / "idx" / f"train_{mod}.txt").write_text("\n".join(sorted(lines)) + "\n")
    # Unsorted, like the release: the readers must sort.
    order = np.random.default_rng(np.random.SeedSequence([spec.seed, 7])).permutation(plan.test)
    (out / "idx" / "test_id.txt").write_text(",".join(str(int(i)) for i in order) + "\n")
    counts = {str(pid): {str(c): n for c, n in cams.items()} for pid, cams in plan.counts.items()}
    return {"files": n_files, "train_ids": plan.train, "test_ids": plan.test, "counts": counts}


_WRITERS = {"sysu": _write_sysu, "regdb": _write_regdb, "llcm": _write_llcm}


def write_synthetic(
    out: str | Path,
    layout: str,
    num_ids: int = 100,
    seed: int = 0,
    size: tuple[int, int] = (128, 64),
    *,
    images_per_camera: tuple[int, int] = (6, 10),
    images_per_modality: int = 10,
    occlusion_prob: float = 0.15,
    split: tuple[float, float] = (0.6, 0.1),
    overwrite: bool = False,
    workers: int = 1,
) -> Path:
    """Write a complete synthetic RGB–IR dataset in the released ``layout`` under ``out``.

    Deterministic per parameters (same arguments → byte-identical files). A ``synthetic.json``
    manifest records the parameters; it is written with ``complete: false`` first and rewritten
    with ``complete: true`` at the end, so an interrupted run is never mistaken for a dataset.

    If ``out`` already holds a complete dataset with the same parameters it is reused and
    returned at once; a non-empty ``out`` without a manifest raises :class:`DatasetError`
    (never mixes files into foreign data); one with a different or incomplete manifest raises
    unless ``overwrite=True``, which deletes only the synthetic folders named by the layouts.

    >>> root = write_synthetic("/tmp/synth_sysu", "sysu", num_ids=10, seed=0)  # doctest: +SKIP
    >>> sorted(p.name for p in root.iterdir())  # doctest: +SKIP
    ['cam1', 'cam2', 'cam3', 'cam4', 'cam5', 'cam6', 'exp', 'synthetic.json']

    ``workers`` > 1 renders in that many processes; every frame is seeded by its own
    coordinates, so the files are byte-identical for any number of workers.

    Returns:
        ``Path(out)``, the dataset root (the folder holding ``cam1`` or ``Visible``).
    Raises:
        ConfigError: invalid layout, id count or size, or ``workers`` < 1.
        DatasetError: ``out`` is a file, or holds other data (see above).
    """
    if int(workers) < 1:
        raise ConfigError(f"synthetic workers={workers}: expected at least 1 process")
    spec = SyntheticSpec(layout=layout, num_ids=int(num_ids), seed=int(seed),
                         size=(int(size[0]), int(size[1])),
                         images_per_camera=(int(images_per_camera[0]), int(images_per_camera[1])),
                         images_per_modality=int(images_per_modality),
                         occlusion_prob=float(occlusion_prob),
                         split=(float(split[0]), float(split[1])))
    root = Path(out)
    if _prepare(root, spec, overwrite):
        logger.info("reusing synthetic %s dataset in %s (same parameters)", layout, root)
        return root
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    _write_manifest(root, spec, complete=False, extra={})
    extra = _WRITERS[layout](root, spec, workers)
    _write_manifest(root, spec, complete=True, extra=extra)
    logger.info("wrote synthetic %s dataset (%d ids, %d images) to %s in %.1f s", layout,
                num_ids, extra["files"], root, time.perf_counter() - start)
    return root


def contact_sheet(seed: int = 0, pids: Iterable[int] = (1, 2, 3, 4, 5, 6),
                  size: tuple[int, int] = (128, 64), frames: int = 2) -> np.ndarray:
    """A preview grid (uint8 RGB): one row per id, ``frames`` images from each SYSU camera in
    the order cam1, cam2, cam4, cam5 (RGB) | cam3, cam6 (IR). For eyeballing the generator."""
    spec = SyntheticSpec(layout="sysu", num_ids=max(4, *pids), seed=seed, size=size)
    scene = _Scene(spec, SYSU_CAMERAS)
    h, w = size
    order = (1, 2, 4, 5, 3, 6)
    rows = []
    for pid in pids:
        person = draw_person(seed, pid)
        tiles = []
        for cam in order:
            for k in range(1, frames + 1):
                tiles.append(scene.render(person, pid, cam, k, [cam]).images[cam])
            tiles.append(np.full((h, 3, 3), 255, np.uint8))
        rows.append(np.concatenate(tiles, axis=1))
        rows.append(np.full((3, rows[-1].shape[1], 3), 255, np.uint8))
    return np.concatenate(rows, axis=0)
