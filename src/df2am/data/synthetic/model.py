"""The generative model of the synthetic RGB–IR dataset: identities, cameras and poses.

Everything here is *drawn* (from a seeded ``numpy.random.Generator``); nothing is rendered. Three
levels of randomness pose the cross-modality re-ID problem in miniature:

* **per identity** (:class:`Person`, drawn once from ``(seed, pid)``): body height, build, head
  size, leg length, skin tone, hair style/colour; a top garment (sleeve length, length down the
  body, optional chest print) and a bottom garment (trousers / shorts / skirt / dress); for each
  garment a colour pair, a pattern (plain, stripes, checks, dots, with frequency and orientation),
  a *material* (cotton, wool, denim, leather, synthetic, down, linen) that fixes its surface
  texture and its thermal signature; shoes; accessories (hat, scarf, shoulder bag, backpack) with
  their own colour and material. The thermal level of a garment comes from its material only
  (plus a small per-identity jitter), never from its colour: colour is the cue only RGB shows.
* **per camera** (:class:`Camera`, drawn once from ``(seed, layout, cam)``): modality, indoor or
  outdoor background, illumination (brightness and colour cast, side light), preferred distance
  (person scale) and position, viewpoint preferences (front / back / side), and for IR cameras the
  ambient temperature, gain, blur, sensor noise and fixed-pattern column noise.
* **per image** (:class:`Pose`): position, scale and shear jitter, view, mirroring (walking
  direction), gait phase (arm and leg swing), illumination jitter, background crop offset and an
  optional occluding foreground object (railing, box, passer-by).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Colour = tuple[float, float, float]

#: Material → (thermal warmth, texture). Warmth is the fraction of the skin-to-ambient
#: temperature difference that shows through the fabric: thin, tight fabric is warm, thick
#: insulating or low-emissivity material (down, leather) looks cold. Texture names are rendered in
#: ``render.py`` and show in both modalities (they are geometry, not colour).
MATERIALS: dict[str, tuple[float, str]] = {
    "cotton": (0.72, "smooth"),
    "linen": (0.82, "weave"),
    "synthetic": (0.62, "sheen"),
    "denim": (0.55, "twill"),
    "wool": (0.42, "knit"),
    "leather": (0.25, "sheen"),
    "down": (0.18, "quilted"),
}
PATTERNS = ("plain", "plain", "hstripes", "vstripes", "diagonal", "checks", "dots")
BOTTOM_KINDS = ("trousers", "trousers", "trousers", "shorts", "skirt", "dress")
HAIR_STYLES = ("short", "short", "long", "bun", "shaved")
VIEWS = ("front", "back", "side")


@dataclass(frozen=True)
class Garment:
    """One piece of clothing (or accessory surface) of an identity.

    ``colour``/``colour2`` are linear RGB albedos in [0, 1] (``colour2`` is the pattern's second
    colour); ``ir_level`` is the garment's thermal warmth in [0, 1] (material + identity jitter);
    ``ir_contrast`` how strongly its pattern shows in IR (printed ink vs. dyed yarn).
    """

    colour: Colour
    colour2: Colour
    pattern: str
    freq: float
    angle: float
    material: str
    ir_level: float
    ir_contrast: float

    @property
    def texture(self) -> str:
        """The surface texture of the garment's material (see :data:`MATERIALS`)."""
        return MATERIALS[self.material][1]


@dataclass(frozen=True)
class Person:
    """One synthetic identity; all lengths are fractions of the body height (head top = 0,
    soles = 1) so the same person renders consistently at any image size."""

    pid: int
    gender: str
    height: float  # multiplier of the camera's person scale (tall vs short people)
    build: float  # width multiplier (slim 0.8 … broad 1.3)
    head_r: float
    hip_v: float  # vertical position of the hips (leg length)
    hip_ratio: float
    skin: Colour
    skin_ir: float
    hair_style: str
    hair: Colour
    hair_ir: float
    top: Garment
    sleeve: float  # arm fraction covered by the sleeve: 0 sleeveless … 1 long
    top_ext: float  # how far the top reaches below the hips (0 tucked … 0.3 coat)
    print_colour: Colour | None  # chest print visible from the front only
    bottom: Garment
    bottom_kind: str
    bottom_len: float  # leg fraction covered (shorts ~0.4, trousers 1) or skirt length
    shoes: Garment
    hat: Garment | None
    scarf: Garment | None
    bag: Garment | None
    bag_side: float  # +1 right, -1 left (in the person's frame)
    backpack: Garment | None


@dataclass(frozen=True)
class Camera:
    """One camera of a synthetic dataset (see the module docstring for what varies)."""

    cam: int
    modality: str  # "rgb" | "ir"
    indoor: bool
    scale: float  # mean person height as a fraction of the image height
    offset_x: float  # mean horizontal offset of the person (fraction of the image width)
    view_probs: tuple[float, float, float]  # P(front), P(back), P(side)
    brightness: float
    cast: Colour  # colour cast of the illumination (RGB cameras)
    side_light: float  # left–right illumination gradient
    ambient_ir: float  # background temperature level (IR cameras)
    ir_gain: float
    blur: float  # Gaussian blur sigma in pixels at 128-pixel image height
    noise: float  # sensor noise sigma (0–1 intensity units)
    occlusion_prob: float


@dataclass(frozen=True)
class Pose:
    """Per-image nuisance: where and how the person appears in one frame."""

    view: str
    mirror: bool
    scale: float
    top: float  # head-top position as a fraction of the image height
    center_x: float  # person centre as a fraction of the image width
    shear: float
    phase: float  # gait phase in radians
    stride: float
    light: float  # per-image illumination multiplier
    bg_dx: float  # background crop offset in [0, 1)
    bg_dy: float
    occluder: str | None
    occ_x: float
    occ_y: float
    occ_colour: Colour


def _colour(rng: np.random.Generator, *, dark: bool = False) -> Colour:
    """A saturated or neutral clothing colour (HSV sampled, returned as RGB in [0, 1])."""
    h = rng.random()
    s = rng.choice([0.05, rng.uniform(0.35, 0.95)], p=[0.3, 0.7])
    v = rng.uniform(0.12, 0.45) if dark else rng.uniform(0.15, 0.95)
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return (float(rgb[0]), float(rgb[1]), float(rgb[2]))


def _garment(rng: np.random.Generator, materials: tuple[str, ...], *, plain: bool = False,
             dark: bool = False) -> Garment:
    material = str(rng.choice(materials))
    pattern = "plain" if plain else str(rng.choice(PATTERNS))
    warmth = MATERIALS[material][0]
    return Garment(
        colour=_colour(rng, dark=dark),
        colour2=_colour(rng),
        pattern=pattern,
        freq=float(rng.uniform(7.0, 16.0)),
        angle=float(rng.uniform(-0.6, 0.6)),
        material=material,
        # Identity jitter on top of the material warmth; independent of the colour draws above.
        ir_level=float(np.clip(warmth + rng.normal(0.0, 0.05), 0.05, 0.95)),
        ir_contrast=float(rng.uniform(0.35, 0.8)),
    )


def draw_person(seed: int, pid: int) -> Person:
    """Draw identity ``pid`` of dataset seed ``seed`` (independent of the layout and of the other
    identities, so an id looks the same however many ids are written).

    >>> draw_person(0, 1) == draw_person(0, 1)
    True
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1, pid]))
    gender = "female" if rng.random() < 0.5 else "male"
    fem = gender == "female"
    tone = rng.uniform(0.0, 1.0)
    skin = (0.95 - 0.55 * tone, 0.78 - 0.5 * tone, 0.66 - 0.45 * tone)
    hair_style = str(rng.choice(HAIR_STYLES, p=[0.2, 0.1, 0.45, 0.2, 0.05] if fem
                                else [0.55, 0.05, 0.1, 0.05, 0.25]))
    bottom_kind = str(rng.choice(BOTTOM_KINDS if fem else BOTTOM_KINDS[:4]))
    if bottom_kind == "shorts":
        bottom_len = float(rng.uniform(0.3, 0.5))
    elif bottom_kind in ("skirt", "dress"):
        bottom_len = float(rng.uniform(0.15, 0.35))
    else:
        bottom_len = float(rng.uniform(0.9, 1.0))
    top = _garment(rng, ("cotton", "linen", "synthetic", "wool", "leather", "down", "denim"))
    bottom_materials = ("denim", "cotton", "synthetic", "wool", "leather", "linen")
    bottom = _garment(rng, bottom_materials, plain=rng.random() < 0.4)
    if bottom_kind == "dress":
        bottom = top
    coat = rng.random() < 0.2
    accessory = ("leather", "synthetic", "cotton", "wool")
    return Person(
        pid=pid,
        gender=gender,
        height=float(rng.uniform(0.9, 1.04)),
        build=float(rng.uniform(0.75, 1.3) * (0.92 if fem else 1.05)),
        head_r=float(rng.uniform(0.055, 0.072)),
        hip_v=float(rng.uniform(0.47, 0.55)),
        hip_ratio=float(rng.uniform(0.72, 0.95) * (1.1 if fem else 1.0)),
        skin=skin,
        skin_ir=float(rng.uniform(0.88, 1.0)),
        hair_style=hair_style,
        hair=_colour(rng, dark=rng.random() < 0.8),
        hair_ir=float(rng.uniform(0.35, 0.6)),
        top=top,
        sleeve=float(rng.choice([0.0, rng.uniform(0.2, 0.4), rng.uniform(0.85, 0.95)],
                                p=[0.1, 0.4, 0.5])),
        top_ext=float(rng.uniform(0.18, 0.32) if coat else rng.uniform(-0.03, 0.07)),
        print_colour=_colour(rng) if rng.random() < 0.3 else None,
        bottom=bottom,
        bottom_kind=bottom_kind,
        bottom_len=bottom_len,
        shoes=_garment(rng, ("leather", "synthetic"), plain=True, dark=rng.random() < 0.7),
        hat=_garment(rng, accessory, plain=True) if rng.random() < 0.25 else None,
        scarf=_garment(rng, ("wool", "cotton", "synthetic")) if rng.random() < 0.15 else None,
        bag=_garment(rng, accessory, plain=True) if rng.random() < 0.4 else None,
        bag_side=float(rng.choice([-1.0, 1.0])),
        backpack=_garment(rng, ("synthetic", "leather", "cotton"), plain=rng.random() < 0.7)
        if rng.random() < 0.35 else None,
    )


def draw_camera(seed: int, layout_code: int, cam: int, modality: str, indoor: bool,
                occlusion_prob: float) -> Camera:
    """Draw the nuisance parameters of one camera of one dataset."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2, layout_code, cam]))
    front = rng.uniform(0.25, 0.6)
    back = rng.uniform(0.2, 0.6) * (1 - front)
    return Camera(
        cam=cam,
        modality=modality,
        indoor=indoor,
        scale=float(rng.uniform(0.8, 0.92)),
        offset_x=float(rng.uniform(-0.06, 0.06)),
        view_probs=(float(front), float(back), float(1 - front - back)),
        brightness=float(rng.uniform(0.75, 1.15) if indoor else rng.uniform(0.85, 1.3)),
        cast=(float(rng.uniform(0.85, 1.15)), 1.0, float(rng.uniform(0.8, 1.15))),
        side_light=float(rng.uniform(-0.25, 0.25)),
        ambient_ir=float(rng.uniform(0.28, 0.42) if indoor else rng.uniform(0.1, 0.25)),
        ir_gain=float(rng.uniform(0.85, 1.1)),
        blur=float(rng.uniform(0.9, 1.6) if modality == "ir" else rng.uniform(0.3, 0.7)),
        noise=float(rng.uniform(0.02, 0.045) if modality == "ir" else rng.uniform(0.008, 0.02)),
        occlusion_prob=occlusion_prob,
    )


def draw_pose(rng: np.random.Generator, camera: Camera, person: Person) -> Pose:
    """Draw the per-image nuisance of one frame of ``person`` seen by ``camera``."""
    occluder = None
    if rng.random() < camera.occlusion_prob:
        occluder = str(rng.choice(["railing", "box", "passerby"]))
    scale = camera.scale * person.height * rng.uniform(0.93, 1.06)
    return Pose(
        view=str(rng.choice(VIEWS, p=camera.view_probs)),
        mirror=bool(rng.random() < 0.5),
        scale=float(scale),
        top=float(rng.uniform(0.02, 0.06) + (0.92 - scale) * rng.uniform(0.3, 0.7)),
        center_x=float(0.5 + camera.offset_x + rng.normal(0.0, 0.035)),
        shear=float(rng.normal(0.0, 0.05)),
        phase=float(rng.uniform(0.0, 2 * np.pi)),
        stride=float(rng.uniform(0.0, 0.09)),
        light=float(rng.uniform(0.85, 1.15)),
        bg_dx=float(rng.random()),
        bg_dy=float(rng.random()),
        occluder=occluder,
        occ_x=float(rng.uniform(-0.3, 0.3)),
        occ_y=float(rng.uniform(0.55, 0.85)),
        occ_colour=_colour(rng),
    )
