"""Vectorised rendering of synthetic people in RGB and IR.

A person is drawn in a *canonical body frame* ``(u, v)``: ``v`` runs from the head top (0) to the
soles (1), ``u`` is horizontal in the same unit (body heights), 0 on the body axis. Each image maps
its pixel grid into that frame (position, scale, shear, mirroring from the :class:`Pose`), so the
same identity renders consistently at any size and patterns stay attached to the body. Body parts
are signed-distance shapes (ellipses, capsules, trapezoids) turned into anti-aliased coverage
masks and composited back to front ("over" operator) — no per-pixel Python loops.

Every painted layer carries four channels: RGB albedo and a thermal *warmth* ``w`` (the fraction
of the skin-to-ambient temperature excess it radiates: skin 1, garments by material, cold metal
below 0). :func:`compose` turns the person layer into an image for one camera: RGB multiplies the
albedo by shading and the camera's illumination; IR maps warmth to intensity with the camera's
ambient temperature and gain, then blurs and adds sensor and fixed-pattern noise. The IR image is
therefore *not* a gray copy of the RGB one: colour never enters it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from df2am.data.synthetic.model import Camera, Garment, Person, Pose

# Part labels of the layer's ``parts`` map (used by tests and the contact sheet).
BACKGROUND, SKIN, HAIR, TOP, BOTTOM, SHOES, ACCESSORY, OCCLUDER = range(8)
_F = np.float32


@dataclass
class Layer:
    """The person (and occluder) layer of one frame: premultiplied RGBW values ``P`` (H, W, 4),
    coverage ``A`` (H, W) and the label of the front-most part per pixel ``parts`` (H, W)."""

    P: np.ndarray
    A: np.ndarray
    parts: np.ndarray


Box = tuple[float, float, float, float]  # (u0, u1, v0, v1) in the canonical frame
Fill = np.ndarray | Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]
PartOf = int | Callable[[np.ndarray | None], np.ndarray]


class _Painter:
    """Back-to-front compositor over the canonical frame of one pose.

    Each shape is evaluated only inside the pixel window that can contain its canonical bounding
    box (the pixel → body-frame map is affine), which keeps a frame at a few milliseconds.
    """

    def __init__(self, size: tuple[int, int], pose: Pose) -> None:
        h, w = size
        y = (np.arange(h, dtype=_F) + 0.5) / h
        x = (np.arange(w, dtype=_F) + 0.5) / w
        v = (y[:, None] - pose.top) / pose.scale
        u = (x[None, :] - pose.center_x) * (w / h) / pose.scale
        u = u - pose.shear * (v - 0.5)  # small viewpoint tilt
        if pose.mirror:
            u = -u
        self.pose = pose
        self.h, self.w = h, w
        self.u = np.ascontiguousarray(u, dtype=_F)
        self.v = np.ascontiguousarray(np.broadcast_to(v, (h, w)), dtype=_F)
        self.inv_px = pose.scale * h  # pixels per canonical unit: sets the anti-aliasing width
        self.P = np.zeros((h, w, 4), _F)
        self.A = np.zeros((h, w), _F)
        self.parts = np.zeros((h, w), np.int8)

    def _window(self, box: Box) -> tuple[slice, slice] | None:
        """Pixel rows/columns that can hold canonical points of ``box`` (plus a 2-pixel rim)."""
        p = self.pose
        u0, u1, v0, v1 = box
        rows = [(p.top + p.scale * v) * self.h - 0.5 for v in (v0, v1)]
        cols = []
        for u in (u0, u1):
            for v in (v0, v1):
                ur = (-u if p.mirror else u) + p.shear * (v - 0.5)
                cols.append((p.center_x + ur * p.scale * self.h / self.w) * self.w - 0.5)
        r0, r1 = max(0, int(np.floor(min(rows))) - 2), min(self.h, int(np.ceil(max(rows))) + 3)
        c0, c1 = max(0, int(np.floor(min(cols))) - 2), min(self.w, int(np.ceil(max(cols))) + 3)
        if r0 >= r1 or c0 >= c1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def draw(self, box: Box, sdf: Callable[[np.ndarray, np.ndarray], object], fill: Fill,
             part: PartOf) -> None:
        """Composite ``fill`` where ``sdf`` (signed distance, or (distance, t)) is negative.

        ``fill`` is an RGBW value (4,) or a function of the window's (u, v, t) returning
        (h, w, 4); ``part`` a label or a function of ``t`` returning a label map.
        """
        win = self._window(box)
        if win is None:
            return
        u, v = self.u[win], self.v[win]
        res = sdf(u, v)
        d, t = res if isinstance(res, tuple) else (res, None)
        a = np.clip(0.5 - d * self.inv_px, 0.0, 1.0).astype(_F)
        if not a.any():
            return
        value = fill(u, v, t) if callable(fill) else fill
        label = part(t) if callable(part) else part
        self.P[win] *= (1.0 - a)[..., None]
        self.P[win] += np.asarray(value, _F) * a[..., None]
        self.A[win] = self.A[win] * (1.0 - a) + a
        self.parts[win] = np.where(a > 0.5, label, self.parts[win])


# --- signed-distance shapes in the canonical frame -------------------------------------------


def _ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, a: float, b: float) -> np.ndarray:
    return (np.sqrt(((u - cu) / a) ** 2 + ((v - cv) / b) ** 2) - 1.0) * min(a, b)


def _capsule(u: np.ndarray, v: np.ndarray, p0: tuple[float, float], p1: tuple[float, float],
             r: float) -> tuple[np.ndarray, np.ndarray]:
    """Distance to a segment minus ``r``, and the position ``t`` ∈ [0, 1] along the segment."""
    du, dv = p1[0] - p0[0], p1[1] - p0[1]
    t = np.clip(((u - p0[0]) * du + (v - p0[1]) * dv) / (du * du + dv * dv), 0.0, 1.0)
    return np.hypot(u - p0[0] - t * du, v - p0[1] - t * dv) - r, t


def _trapezoid(u: np.ndarray, v: np.ndarray, cu: float, v0: float, v1: float, w0: float,
               w1: float) -> np.ndarray:
    """Axis-aligned trapezoid centred on ``cu``: half width ``w0`` at ``v0``, ``w1`` at ``v1``."""
    t = np.clip((v - v0) / (v1 - v0), 0.0, 1.0)
    half = w0 + (w1 - w0) * t
    return np.maximum(np.abs(u - cu) - half, np.maximum(v0 - v, v - v1))


# --- appearance fields -----------------------------------------------------------------------


def _pattern(g: Garment, u: np.ndarray, v: np.ndarray) -> np.ndarray | None:
    """Soft 0/1 map of the garment's second colour; attached to the body frame."""
    if g.pattern == "plain":
        return None
    c, s = np.cos(g.angle), np.sin(g.angle)
    a = (v * c + u * s) * g.freq
    b = (u * c - v * s) * g.freq
    if g.pattern == "hstripes":
        raw = np.sin(2 * np.pi * a)
    elif g.pattern == "vstripes":
        raw = np.sin(2 * np.pi * b)
    elif g.pattern == "diagonal":
        raw = np.sin(2 * np.pi * (a + b) * 0.7)
    elif g.pattern == "checks":
        raw = np.sin(2 * np.pi * a) * np.sin(2 * np.pi * b)
    else:  # dots on a lattice
        fa, fb = a - np.floor(a) - 0.5, b - np.floor(b) - 0.5
        raw = (0.3 - np.hypot(fa, fb)) * 8.0
    return np.clip(raw * 2.5 + 0.5, 0.0, 1.0).astype(_F)


def _texture(g: Garment, u: np.ndarray, v: np.ndarray) -> np.ndarray | float:
    """Multiplicative surface texture of the garment's material (geometry: shows in RGB and IR)."""
    tex = g.texture
    if tex == "weave":
        return 1.0 + 0.06 * np.sin(2 * np.pi * 30 * u) * np.sin(2 * np.pi * 30 * v)
    if tex == "knit":
        return 1.0 + 0.09 * np.sin(2 * np.pi * 28 * u)
    if tex == "twill":
        return 1.0 + 0.08 * np.sin(2 * np.pi * 24 * (u + v))
    if tex == "sheen":  # glossy vertical highlight
        return 1.0 + 0.3 * np.exp(-(((u - 0.03) / 0.035) ** 2))
    if tex == "quilted":  # horizontal seams of a down jacket
        return 1.0 - 0.25 * np.abs(np.sin(np.pi * 9 * v)) ** 8 - 0.1 * (
            np.abs(np.sin(np.pi * 9 * v + 1.2)) < 0.2)
    return 1.0


def _garment_value(g: Garment, u: np.ndarray, v: np.ndarray, warmth: float = 1.0) -> np.ndarray:
    """RGBW field (H, W, 4) of a garment. The W channel depends on material only (see
    ``Garment.ir_level``), the pattern and the texture — never on the colour."""
    h, w = u.shape
    out = np.empty((h, w, 4), _F)
    pat = _pattern(g, u, v)
    tex = _texture(g, u, v)
    c1 = np.asarray(g.colour, _F)
    if pat is None:
        out[..., :3] = c1
        out[..., 3] = g.ir_level * warmth
    else:
        c2 = np.asarray(g.colour2, _F)
        out[..., :3] = c1 + (c2 - c1) * pat[..., None]
        out[..., 3] = g.ir_level * warmth * (1.0 + g.ir_contrast * (pat - 0.5))
    out[..., :3] *= np.asarray(tex, _F)[..., None] if np.ndim(tex) else tex
    # Relief (knit ribs, quilting seams) modulates emission too, but less than reflected light.
    out[..., 3] *= 1.0 + 0.5 * (np.asarray(tex, _F) - 1.0)
    return out


def _solid(colour: tuple[float, float, float], warmth: float) -> np.ndarray:
    return np.array([*colour, warmth], _F)


# --- the person ------------------------------------------------------------------------------


def _gfill(g: Garment, warmth: float = 1.0) -> Callable:
    return lambda u, v, t: _garment_value(g, u, v, warmth)


def _covered(t_max: float, garment: Callable, bare: np.ndarray) -> Callable:
    """Fill of a limb: ``garment`` up to ``t_max`` along the limb, ``bare`` (skin) beyond."""
    return lambda u, v, t: np.where((t < t_max)[..., None], garment(u, v, t), bare)


def _covered_part(t_max: float, part: int) -> Callable:
    return lambda t: np.where(t < t_max, part, SKIN)


# long: one drawing script, head to shoes, whose closures share the painter and a dozen layout
# values; to be split with the data/ changes pending on another branch, not under them.
def person_layer(person: Person, pose: Pose, size: tuple[int, int]) -> Layer:
    """Render ``person`` in ``pose`` into an RGBW layer of ``size`` = (H, W)."""
    pt = _Painter(size, pose)
    p = person
    view = pose.view
    side = view == "side"
    hr = p.head_r
    hc = hr + 0.005
    vs = 2 * hr + 0.03  # shoulder line
    sw = 0.105 * p.build * (0.62 if side else 1.0)
    hw = 0.105 * p.build * p.hip_ratio * 0.85 * (0.7 if side else 1.0)
    hip = p.hip_v
    skin = _solid(p.skin, 1.0)
    hair = _solid(p.hair, p.hair_ir)
    top = _gfill(p.top)
    bottom = _gfill(p.bottom, warmth=0.92)
    shoes = _solid(p.shoes.colour, p.shoes.ir_level * 0.45)
    swing = pose.stride * np.sin(pose.phase)
    has_hair = p.hair_style != "shaved"

    def ellipse(cu: float, cv: float, a: float, b: float, fill: Fill, part: PartOf) -> None:
        pt.draw((cu - a, cu + a, cv - b, cv + b), lambda u, v: _ellipse(u, v, cu, cv, a, b),
                fill, part)

    def trapezoid(cu: float, v0: float, v1: float, w0: float, w1: float, fill: Fill,
                  part: PartOf) -> None:
        m = max(w0, w1)
        pt.draw((cu - m, cu + m, v0, v1), lambda u, v: _trapezoid(u, v, cu, v0, v1, w0, w1),
                fill, part)

    def capsule(p0: tuple[float, float], p1: tuple[float, float], r: float, fill: Fill,
                part: PartOf) -> None:
        box = (min(p0[0], p1[0]) - r, max(p0[0], p1[0]) + r, min(p0[1], p1[1]) - r,
               max(p0[1], p1[1]) + r)
        pt.draw(box, lambda u, v: _capsule(u, v, p0, p1, r), fill, part)

    # Long hair falls behind the shoulders when seen from the front.
    if has_hair and p.hair_style == "long" and view != "back":
        trapezoid(-0.5 * hr if side else 0.0, hc, vs + 0.11, hr * 1.0, hr * 1.15, hair, HAIR)
    if p.backpack is not None and side:
        trapezoid(-sw - 0.035, vs + 0.02, vs + 0.25, 0.04, 0.045, _gfill(p.backpack, 0.35),
                  ACCESSORY)

    # Legs: bottom garment down to ``bottom_len`` along the leg, skin below, shoes at the end.
    leg_r = 0.04 * p.build
    leg_spread = 0.02 if side else hw * 0.5
    trousers = p.bottom_kind in ("trousers", "shorts")
    leg_cover = p.bottom_len if trousers else 0.0
    for sgn in (-1.0, 1.0):
        foot_u = sgn * leg_spread + (sgn * swing if side else sgn * 0.25 * abs(swing))
        capsule((sgn * leg_spread * (0.3 if side else 1.0), hip), (foot_u, 0.95), leg_r,
                _covered(leg_cover, bottom, skin), _covered_part(leg_cover, BOTTOM))
        ellipse(foot_u + (0.022 if side else 0.0), 0.967, 0.036 if side else 0.026, 0.02,
                shoes, SHOES)

    # Hips in the bottom garment; skirts and dresses flare out below the hips.
    trapezoid(0.0, hip - 0.07, hip + 0.05, hw * 0.95, hw * 1.05, bottom, BOTTOM)
    if p.bottom_kind in ("skirt", "dress"):
        trapezoid(0.0, hip - 0.04, hip + p.bottom_len, hw * 1.05,
                  hw * 1.05 + 0.35 * p.bottom_len, bottom, BOTTOM)

    # Torso (top garment) with rounded shoulders, optional coat reaching below the hips.
    torso_end = hip + min(p.top_ext, 0.0) + 0.01
    pt.draw((-sw, sw, vs - 0.012, torso_end), lambda u, v: np.minimum(
        _trapezoid(u, v, 0.0, vs - 0.012, vs + 0.035, sw * 0.55, sw),
        _trapezoid(u, v, 0.0, vs + 0.035, torso_end, sw, hw * 1.02)), top, TOP)
    if p.top_ext > 0.0:
        trapezoid(0.0, hip - 0.02, hip + p.top_ext, hw * 1.08, hw * 1.15 + 0.1 * p.top_ext,
                  top, TOP)
    if p.print_colour is not None and view == "front":
        trapezoid(0.0, vs + 0.06, vs + 0.14, sw * 0.38, sw * 0.38,
                  _solid(p.print_colour, p.top.ir_level * 0.8), TOP)

    # Backpack: the pack from behind, only the straps from the front.
    if p.backpack is not None and not side:
        bp = _gfill(p.backpack, 0.35)
        if view == "back":
            trapezoid(0.0, vs + 0.015, vs + 0.25, sw * 0.62, sw * 0.7, bp, ACCESSORY)
        else:
            for sgn in (-1.0, 1.0):
                trapezoid(sgn * sw * 0.5, vs - 0.005, vs + 0.2, 0.012, 0.012, bp, ACCESSORY)

    # Shoulder bag (strap across the chest) — on the other side when seen from the back.
    if p.bag is not None:
        bag = _solid(p.bag.colour, p.bag.ir_level * 0.4)
        bs = p.bag_side * (-1.0 if view == "back" else 1.0)
        bu = 0.02 * bs if side else bs * (hw + 0.04)
        if not side:
            capsule((-bs * sw * 0.6, vs), (bu, hip - 0.06), 0.008, bag, ACCESSORY)
        trapezoid(bu, hip - 0.07, hip + 0.05, 0.045, 0.05, bag, ACCESSORY)

    # Arms: sleeve over the first ``sleeve`` fraction, skin below, hands at the end.
    arm_r = 0.028 * p.build
    for sgn in (1.0,) if side else (-1.0, 1.0):
        arm_swing = -swing * (1.6 if side else 0.3)
        if side:
            s0, hand = (0.0, vs + 0.02), (arm_swing, vs + 0.34)
        else:
            s0 = (sgn * (sw - arm_r), vs + 0.025)
            hand = (sgn * (sw + 0.01 + abs(arm_swing)), vs + 0.34)
        capsule(s0, hand, arm_r, _covered(p.sleeve, top, skin), _covered_part(p.sleeve, TOP))
        ellipse(hand[0], hand[1] + 0.02, 0.025, 0.03, skin, SKIN)

    # Neck, head, hair, hat, scarf.
    trapezoid(0.0, 2 * hr - 0.01, vs + 0.01, hr * 0.38, hr * 0.42, skin, SKIN)
    ellipse(0.012 if side else 0.0, hc, hr * 0.8, hr, skin, SKIN)
    head_box = (-hr * 1.2, hr * 1.2, -0.01, hc + hr * 1.1)
    if has_hair:
        def cap(u: np.ndarray, v: np.ndarray) -> np.ndarray:
            d = _ellipse(u, v, 0.0, hc - 0.004, hr * 0.88, hr * 1.06)
            if view == "back":
                return np.maximum(d, v - (hc + 0.7 * hr))
            if side:
                return np.maximum(d, np.minimum(v - (hc - 0.3 * hr), u + 0.2 * hr))
            return np.maximum(d, v - (hc - 0.35 * hr))

        pt.draw(head_box, cap, hair, HAIR)
        if p.hair_style == "long" and view == "back":
            trapezoid(0.0, hc, vs + 0.11, hr * 0.95, hr * 1.1, hair, HAIR)
        if p.hair_style == "bun":
            ellipse(-0.9 * hr if side else 0.0, hc - 0.3 * hr if side else 0.0, hr * 0.45,
                    hr * 0.4, hair, HAIR)
    if p.hat is not None:
        hat = _solid(p.hat.colour, p.hat.ir_level * 0.6)
        pt.draw(head_box, lambda u, v: np.maximum(
            _ellipse(u, v, 0.0, hc - 0.1 * hr, hr * 0.95, hr * 0.95), v - (hc - 0.35 * hr)),
            hat, ACCESSORY)
        trapezoid(0.0, hc - 0.42 * hr, hc - 0.3 * hr, hr * 1.2, hr * 1.2, hat, ACCESSORY)
    if p.scarf is not None:
        scarf = _gfill(p.scarf, 0.7)
        trapezoid(0.0, vs - 0.035, vs + 0.02, hr * 0.9, sw * 0.6, scarf, ACCESSORY)
        if view == "front":
            trapezoid(0.03, vs, vs + 0.13, 0.016, 0.018, scarf, ACCESSORY)

    # Shading across the body (a rough cylinder): the RGB albedo darkens towards the silhouette
    # edges; thermal emission drops much less (limb darkening of emissivity).
    shade = np.clip(1.0 - 0.5 * (pt.u / (0.2 * p.build)) ** 2, 0.55, 1.0).astype(_F)
    pt.P[..., :3] *= shade[..., None]
    pt.P[..., 3] *= 0.75 + 0.25 * shade
    return Layer(pt.P, pt.A, pt.parts)


def add_occluder(layer: Layer, pose: Pose) -> None:
    """Paint the pose's foreground occluder (in image coordinates) over the person layer."""
    if pose.occluder is None:
        return
    h, w = layer.A.shape
    y = (np.arange(h, dtype=_F)[:, None] + 0.5) / h * np.ones((1, w), _F)
    x = (np.arange(w, dtype=_F)[None, :] + 0.5) / h * np.ones((h, 1), _F)  # in image heights
    xc = w / h * (0.5 + pose.occ_x)
    if pose.occluder == "railing":
        bar = np.abs(y - pose.occ_y) - 0.02
        posts = np.maximum(np.abs(((x - xc) % 0.3) - 0.15) - 0.012, pose.occ_y - y)
        d = np.minimum(bar, posts)
        value = np.array([*(0.3 + 0.4 * np.asarray(pose.occ_colour) * 0.5), -0.15], _F)
    elif pose.occluder == "box":
        d = np.maximum(np.abs(x - xc) - 0.16, pose.occ_y + 0.05 - y)
        value = np.array([*pose.occ_colour, 0.08], _F)
    else:  # a passer-by cutting through the frame edge
        edge = 0.0 if pose.occ_x < 0 else w / h
        d = _ellipse(x, y, edge, 0.6, 0.1, 0.45)
        value = np.array([*(np.asarray(pose.occ_colour) * 0.6), 0.6], _F)
    a = np.clip(0.5 - d * h, 0.0, 1.0).astype(_F)
    layer.P *= (1.0 - a)[..., None]
    layer.P += value * a[..., None]
    layer.A = layer.A * (1.0 - a) + a
    layer.parts = np.where(a > 0.5, OCCLUDER, layer.parts).astype(np.int8)


# --- cameras ---------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1] (bilinear upsampling of a coarse random grid)."""
    gh = max(2, shape[0] * cells // max(shape))
    gw = max(2, shape[1] * cells // max(shape))
    coarse = rng.uniform(-1.0, 1.0, (gh, gw))
    out = ndimage.zoom(coarse, (shape[0] / gh, shape[1] / gw), order=1, mode="nearest")
    return out[: shape[0], : shape[1]].astype(_F)


@dataclass
class Background:
    """A per-camera background canvas larger than one frame; frames crop it at random offsets
    (detector boxes move over the scene). ``image`` is (Hc, Wc, 3) albedo for RGB cameras and
    (Hc, Wc) intensity for IR ones; ``columns`` is the IR sensor's fixed-pattern column noise."""

    image: np.ndarray
    columns: np.ndarray


def make_background(camera: Camera, size: tuple[int, int], seed: int, layout_code: int
                    ) -> Background:
    """Draw the scene behind ``camera``: an indoor room (wall, floor with tiles, doors/posters,
    lamps) or an outdoor street (facades with windows, trees/poles, ground texture)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 3, layout_code, camera.cam]))
    h, w = size
    hc, wc = int(round(h * 1.3)), w * 3
    yy = np.linspace(0.0, 1.0, hc, dtype=_F)[:, None] * np.ones((1, wc), _F)
    xx = np.linspace(0.0, 1.0, wc, dtype=_F)[None, :] * np.ones((hc, 1), _F)
    horizon = rng.uniform(0.55, 0.78)
    ground = yy > horizon
    n_objects = int(rng.integers(3, 7))
    objects = []
    for _ in range(n_objects):
        ox, oy = rng.uniform(0, 1), rng.uniform(0.05, horizon)
        ow, oh = rng.uniform(0.04, 0.15), rng.uniform(0.1, 0.4)
        objects.append((np.abs(xx - ox) < ow) & (yy > oy) & (yy < min(oy + oh, horizon + 0.05)))
    columns = rng.normal(0.0, camera.noise * 0.6, w).astype(_F)
    if camera.modality == "rgb":
        def col(dark: bool = False) -> np.ndarray:
            base = rng.uniform(0.15, 0.5) if dark else rng.uniform(0.35, 0.85)
            tint = rng.uniform(-0.12, 0.12, 3)
            return np.clip(base + tint, 0, 1).astype(_F)

        img = np.empty((hc, wc, 3), _F)
        upper, lower = col(), col(dark=True)
        img[:] = upper * (1.0 - 0.25 * yy[..., None])
        if camera.indoor:
            tiles = (np.abs(np.sin(np.pi * 14 * xx + 3 * yy)) < 0.08) | (
                np.abs(np.sin(np.pi * np.sqrt(np.clip(yy - horizon, 0, 1)) * 12)) < 0.1)
            floor = lower * (1.0 - 0.15 * tiles[..., None])
        else:
            floor = lower * (1.0 + 0.12 * _smooth_noise(rng, (hc, wc), 40)[..., None])
        img = np.where(ground[..., None], floor, img)
        for mask in objects:
            img[mask] = col(dark=rng.random() < 0.5)
        if not camera.indoor:  # facade windows and trees
            win = (np.sin(np.pi * 20 * xx) > 0.4) & (np.sin(np.pi * 16 * yy) > 0.3) & (
                yy < horizon - 0.05)
            img[win] *= 0.6
            for _ in range(int(rng.integers(1, 3))):
                tx = rng.uniform(0, 1)
                crown = ((xx - tx) / 0.07) ** 2 + ((yy - horizon + 0.35) / 0.22) ** 2 < 1
                img[crown] = np.array([0.15, 0.35, 0.12], _F) * rng.uniform(0.7, 1.3)
        img *= 1.0 + 0.08 * _smooth_noise(rng, (hc, wc), 12)[..., None]
        return Background(np.clip(img, 0, 1), columns)

    amb = camera.ambient_ir
    img = np.full((hc, wc), amb, _F)
    # Thermal scenes are smooth: floor/ground and sky differ by a few degrees, no texture.
    img += np.where(ground, rng.uniform(-0.06, 0.08), rng.uniform(-0.08, 0.02)).astype(_F)
    img += 0.05 * (yy - 0.5)
    for mask in objects:
        img[mask] += rng.uniform(-0.06, 0.06)
    for _ in range(int(rng.integers(0, 3))):  # lamps, radiators, car engines: warm spots
        lx, ly = rng.uniform(0, 1), rng.uniform(0.1, 0.9)
        spot = ((xx - lx) / rng.uniform(0.03, 0.08)) ** 2 + ((yy - ly) / 0.05) ** 2 < 1
        img[spot] = rng.uniform(0.55, 0.8)
    img += 0.04 * _smooth_noise(rng, (hc, wc), 6)
    img = ndimage.gaussian_filter(img, 1.5)
    return Background(np.clip(img, 0, 1).astype(_F), columns)


def compose(layer: Layer, person: Person, camera: Camera, background: Background, pose: Pose,
            rng: np.random.Generator) -> np.ndarray:
    """Turn a person layer into a uint8 (H, W, 3) image as ``camera`` sees it (IR images are the
    gray value repeated over three channels, like the released SYSU-MM01 IR frames)."""
    h, w = layer.A.shape
    bh, bw = background.image.shape[:2]
    oy = int(pose.bg_dy * (bh - h))
    ox = int(pose.bg_dx * (bw - w))
    bg = background.image[oy: oy + h, ox: ox + w]
    sigma = camera.blur * h / 128.0
    inv_a = 1.0 - layer.A
    if camera.modality == "rgb":
        light = camera.brightness * pose.light
        xs = np.linspace(-1.0, 1.0, w, dtype=_F)[None, :, None]
        illum = light * np.asarray(camera.cast, _F) * (1.0 + camera.side_light * xs)
        img = (bg * inv_a[..., None] + layer.P[..., :3]) * illum
        img = ndimage.gaussian_filter(img, (sigma, sigma, 0))
        img += rng.normal(0.0, camera.noise, img.shape).astype(_F)
        return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    amb = camera.ambient_ir
    # Warmth w → intensity: ambient + w × (skin temperature − ambient); the layer is
    # premultiplied, so the ambient term is weighted by its coverage A.
    person_ir = amb * layer.A + (person.skin_ir - amb) * layer.P[..., 3]
    img = bg * inv_a + person_ir
    img = (img - 0.5) * camera.ir_gain + 0.5
    img = ndimage.gaussian_filter(img, sigma)
    img += rng.normal(0.0, camera.noise, img.shape).astype(_F) + background.columns[None, :]
    gray = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)
