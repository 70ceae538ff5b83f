"""``fundus-full``: a whole colour fundus photograph with labelled optic disc and cup, from the *unseen*
generator family (for measuring generalisation only — never for training or tuning).

What a case is: an RGB uint8 photograph, 400–800 px high and square or wider (drawn per case), with
the circular field of view on black (sometimes cut at the top and bottom, as cameras do), a right or
left eye, and labels ``disc`` (layer 0, value 1) ⊃ ``cup`` (layer 1, value 2).

How it is built (independently of the training phantoms): the anatomy is drawn in an *eye frame*
(field-of-view radius 1, +u nasal, +v inferior) and mapped to pixels at the end, so a seed keeps its
anatomy at any ``size``. The picture is a reflectance model lit by a camera model:

* reflectance — a fundus colour between orange and red, darkened by pigmentation, modulated by a
  tigroid choroidal network (ridges of band-limited spectral noise) and fine RPE mottling; macular
  pigment absorbing green and blue around the fovea; the disc (irregular tilted oval, nasal of the
  fovea by about 2.5 disc diameters) blended in yellow-pink with a soft rim, the pale cup inside it
  (cup-to-disc ratio 0.2–0.8, often displaced temporally), sometimes a peripapillary atrophy crescent;
  vessels from :mod:`._vessel_tree` absorbing by chord length (veins darker and wider); drusen,
  haemorrhages or exudates now and then;
* camera — illumination with an off-centre vignetting power law, low-frequency unevenness, a central
  glow, sometimes an edge haze, a gain and a display gamma; optical blur, sensor noise, 8-bit output,
  and the black surround of the field stop.

The labels are the disc and cup masks at their boundary (the 50 % point of each soft edge).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..volume import Geometry, Image, Labels, Segment
from ._filters import smooth_121
from ._noise import spectral_noise
from ._vessel_tree import VesselTree, grow_tree, rasterize_tree

__all__ = ["make_fundus_full_phantom", "FUNDUS_FULL_SEGMENTS"]

FUNDUS_FULL_SEGMENTS: tuple[Segment, ...] = (
    Segment("disc", 1, layer=0, color=(0.95, 0.85, 0.2)),
    Segment("cup", 2, layer=1, color=(0.2, 0.75, 0.95)),
)


@dataclass(frozen=True)
class Outline:
    """A tilted oval with a wavy border, in eye-frame units: inside where ρ ≤ 1 + Σ a·cos(kθ + φ)."""

    centre: np.ndarray  # u, v
    radii: tuple[float, float]  # along the tilted u and v axes
    tilt: float
    harmonics: np.ndarray  # (k, 3): order, amplitude, phase

    def signed_distance(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Approximate signed distance to the border (negative inside), eye-frame units."""
        c, s = np.cos(self.tilt), np.sin(self.tilt)
        du, dv = u - self.centre[0], v - self.centre[1]
        a = (c * du + s * dv) / self.radii[0]
        b = (-s * du + c * dv) / self.radii[1]
        rho = np.sqrt(a * a + b * b)
        theta = np.arctan2(b, a)
        border = 1.0
        for order, amplitude, phase in self.harmonics:
            border = border + amplitude * np.cos(order * theta + phase)
        return (rho - border) * np.sqrt(self.radii[0] * self.radii[1])


@dataclass(frozen=True)
class FundusPlan:
    height: int
    width: int
    side: float  # +1 right eye (nasal on the image's right), -1 left eye
    fov_radius: float  # pixels per eye-frame unit, at the drawn size
    fov_centre: tuple[float, float]  # fractions of width and height
    disc: Outline
    cup: Outline
    fovea: np.ndarray
    vessels: VesselTree
    background: np.ndarray  # RGB reflectance
    disc_colour: np.ndarray
    cup_colour: np.ndarray
    pigment: float
    tigroid: float
    macula: tuple[float, float]  # depth, width
    foveal_reflex: float
    atrophy: tuple[float, float, float] | None  # width, direction, half angle
    lesions: np.ndarray  # (k, 5): kind, u, v, radius, strength
    disc_edge: float  # soft edge width in eye-frame units
    cup_edge: float
    vessel_depth: float


def _outline(rng: np.random.Generator, centre: np.ndarray, radii: tuple[float, float], tilt: float,
             roughness: float) -> Outline:
    orders = np.arange(2, 6)
    return Outline(centre=centre, radii=radii, tilt=tilt,
                   harmonics=np.column_stack([orders, roughness * rng.uniform(0.2, 1.0, 4) / orders,
                                              rng.uniform(0, 2 * np.pi, 4)]))


def _draw_lesions(rng: np.random.Generator, fovea: np.ndarray, disc: np.ndarray) -> np.ndarray:
    u = rng.uniform
    rows = []
    if rng.random() < 0.3:  # drusen around the macula
        for _ in range(int(rng.integers(5, 40))):
            p = fovea + rng.normal(0, 0.12, 2)
            rows.append((0, p[0], p[1], u(0.004, 0.012), u(0.3, 1.0)))
    if rng.random() < 0.2:  # blot haemorrhages anywhere but the disc
        for _ in range(int(rng.integers(2, 12))):
            p = u(-0.8, 0.8, 2)
            if np.hypot(*(p - disc)) > 0.2:
                rows.append((1, p[0], p[1], u(0.006, 0.02), u(0.4, 0.9)))
    if rng.random() < 0.15:  # hard exudates in a cluster
        centre = fovea + rng.normal(0, 0.15, 2)
        for _ in range(int(rng.integers(4, 25))):
            p = centre + rng.normal(0, 0.05, 2)
            rows.append((2, p[0], p[1], u(0.003, 0.008), u(0.5, 1.0)))
    return np.array(rows, dtype=float).reshape(-1, 5)


def draw_fundus_plan(rng: np.random.Generator, size: tuple[int, int] | None) -> FundusPlan:
    """Every random choice of a case, in eye-frame units (the image size is drawn first)."""
    u = rng.uniform
    height = int(rng.integers(400, 801))
    width = height if rng.random() < 0.45 else min(int(round(height * u(1.1, 1.5))), 1000)
    radius_fraction = u(0.44, 0.53)  # of the height: above 0.5 the field is cut at top and bottom
    centre = (0.5 + u(-0.015, 0.015), 0.5 + u(-0.015, 0.015))
    if size is not None:
        height, width = size
    fov_radius = min(radius_fraction * height, 0.5 * width - 2)
    side = 1.0 if rng.random() < 0.5 else -1.0

    disc_radius = u(0.085, 0.15)
    disc_centre = np.array([u(0.08, 0.5), u(-0.08, 0.05)])
    disc = _outline(rng, disc_centre, (disc_radius * u(0.84, 0.98), disc_radius), u(-0.25, 0.25), u(0.02, 0.07))
    ratio = u(0.2, 0.8)
    cup_radii = (disc.radii[0] * ratio * u(0.85, 1.1), disc.radii[1] * ratio)
    room = np.array([disc.radii[0] - cup_radii[0], disc.radii[1] - cup_radii[1]])
    cup_centre = disc_centre + np.array([-u(0.0, 0.5), u(-0.25, 0.25)]) * room  # towards the fovea (temporal)
    cup = _outline(rng, cup_centre, cup_radii, disc.tilt + u(-0.3, 0.3), u(0.02, 0.08))
    fovea = disc_centre + np.array([-u(4.4, 5.4) * disc_radius, u(0.1, 0.7) * disc_radius])

    vessels = grow_tree(rng, disc=disc_centre, disc_radius=disc_radius, fovea=fovea,
                        vein_radius=u(0.010, 0.015), artery_ratio=u(0.62, 0.8), branch_length=u(0.12, 0.22),
                        wiggle=u(0.04, 0.09))
    hue = u(0.0, 1.0)  # 0 orange … 1 red
    red = u(0.7, 0.92)
    background = np.array([red, red * (0.45 - 0.22 * hue) * u(0.9, 1.1), red * u(0.05, 0.15)])
    disc_colour = np.array([u(0.95, 1.0), u(0.62, 0.8), u(0.38, 0.58)])
    cup_colour = np.array([1.0, u(0.86, 0.97), u(0.7, 0.9)])
    atrophy = (u(0.15, 0.45) * disc_radius, u(-0.5, 0.5) + np.pi, u(0.6, 1.6)) if rng.random() < 0.35 else None
    tigroid = u(0.15, 0.35) if rng.random() < 0.35 else u(0.0, 0.1)  # a strongly tigroid fundus now and then
    return FundusPlan(
        height=int(height), width=int(width), side=side, fov_radius=float(fov_radius), fov_centre=centre,
        disc=disc, cup=cup, fovea=fovea, vessels=vessels, background=background, disc_colour=disc_colour,
        cup_colour=cup_colour, pigment=u(0.0, 1.0), tigroid=tigroid, macula=(u(0.15, 0.45), u(0.1, 0.2)),
        foveal_reflex=u(0.0, 0.3) if rng.random() < 0.6 else 0.0, atrophy=atrophy,
        lesions=_draw_lesions(rng, fovea, disc_centre), disc_edge=u(0.004, 0.012) * disc_radius / 0.1,
        cup_edge=u(0.006, 0.02) * disc_radius / 0.1, vessel_depth=u(0.7, 1.3))


def _smoothstep_inside(distance: np.ndarray, width: float) -> np.ndarray:
    """1 well inside, 0 well outside, 0.5 on the border; linear over ``width``."""
    return np.clip(0.5 - distance / width, 0.0, 1.0).astype(np.float32)


def _window(plan: FundusPlan, centre: np.ndarray, reach: float, to_pixels) -> tuple[slice, slice]:
    """Pixel rows and columns within ``reach`` (eye-frame units) of ``centre``."""
    cx, cy = to_pixels(np.asarray(centre, dtype=float)[None])[0]
    half = reach * plan.fov_radius + 3
    rows = slice(max(0, int(cy - half)), max(0, min(plan.height, int(cy + half) + 1)))
    cols = slice(max(0, int(cx - half)), max(0, min(plan.width, int(cx + half) + 1)))
    return rows, cols


def _disc_reach(plan: FundusPlan) -> float:
    band = plan.atrophy[0] if plan.atrophy is not None else 0.0
    return 1.4 * max(plan.disc.radii) + band + 2 * plan.disc_edge


def _reflectance(plan: FundusPlan, u: np.ndarray, v: np.ndarray, rng: np.random.Generator,
                 shape: tuple[int, int], to_pixels) -> np.ndarray:
    """Fundus, macula, disc and cup reflectance (3, h, w) before vessels and lesions."""
    choroid = spectral_noise(rng, shape, exponent=1.0, band=(3.0, 14.0))
    ridges = np.clip(1.0 - np.abs(choroid), 0.0, 1.0) ** 2  # ridges of a network: the choroidal vessels
    mottle = spectral_noise(rng, shape, exponent=0.5, band=(30.0, 70.0))
    pigment = plan.pigment
    base = plan.background * np.array([1 - 0.25 * pigment, 1 - 0.35 * pigment, 1 - 0.45 * pigment])
    tint = np.array([1.0, 0.8, 0.6], dtype=np.float32)[:, None, None]
    modulation = 1.0 + np.float32(plan.tigroid) * (ridges - np.float32(ridges.mean()))[None] * tint \
        + np.float32(0.03) * mottle[None]
    reflect = (base.astype(np.float32)[:, None, None] * modulation).astype(np.float32)
    depth, width = plan.macula
    macula = np.exp(-((u - plan.fovea[0]) ** 2 + (v - plan.fovea[1]) ** 2) / (2 * width * width)).astype(np.float32)
    reflect *= (1.0 - depth * macula[None] * np.array([0.35, 1.0, 1.0], dtype=np.float32)[:, None, None])

    rows, cols = _window(plan, plan.disc.centre, _disc_reach(plan), to_pixels)
    wu, wv = u[rows, cols], v[rows, cols]
    local = reflect[:, rows, cols]
    disc_distance = plan.disc.signed_distance(wu, wv)
    if plan.atrophy is not None:
        band, direction, half = plan.atrophy
        angle = np.arctan2(wv - plan.disc.centre[1], wu - plan.disc.centre[0])
        sector = np.cos(angle - direction) > np.cos(half)
        crescent = ((disc_distance > 0) & (disc_distance < band) & sector).astype(np.float32) * np.float32(0.55)
        pale = np.array([0.85, 0.72, 0.6], dtype=np.float32)[:, None, None]
        local = local * (1 - crescent) + pale * crescent
    disc = _smoothstep_inside(disc_distance, plan.disc_edge)
    rim = (plan.disc_colour * np.array([1.0, 0.92, 0.9])).astype(np.float32)[:, None, None]
    local = local * (1 - disc) + rim * disc
    cup = _smoothstep_inside(plan.cup.signed_distance(wu, wv), plan.cup_edge) * disc
    reflect[:, rows, cols] = local * (1 - cup) + plan.cup_colour.astype(np.float32)[:, None, None] * cup
    return reflect


def _lesions(plan: FundusPlan, reflect: np.ndarray, u: np.ndarray, v: np.ndarray, to_pixels) -> None:
    """Drusen and exudates brighten, haemorrhages darken — each only in its own small window."""
    colours = {0: (np.array([0.3, 0.26, 0.06]), False), 1: (np.array([0.55, 0.3, 0.4]), True),
               2: (np.array([0.35, 0.32, 0.05]), False)}
    for kind, lu, lv, radius, strength in plan.lesions:
        colour, darkens = colours[int(kind)]
        rows, cols = _window(plan, np.array([lu, lv]), 3.5 * radius, to_pixels)
        wu, wv = u[rows, cols], v[rows, cols]
        blob = (strength * np.exp(-((wu - lu) ** 2 + (wv - lv) ** 2) / (2 * radius * radius))).astype(np.float32)
        tint = colour.astype(np.float32)[:, None, None]
        if darkens:
            reflect[:, rows, cols] *= 1 - blob[None] * (1 - tint)
        else:
            reflect[:, rows, cols] += blob[None] * tint


def _illumination(rng: np.random.Generator, u: np.ndarray, v: np.ndarray,
                  shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Multiplicative light (h, w) and additive glow/haze (3, h, w)."""
    g = rng.uniform
    cu, cv = rng.normal(0, 0.12, 2)
    rho = np.sqrt((u - cu) ** 2 + (v - cv) ** 2)
    light = g(0.85, 1.25) * (1.0 - g(0.25, 0.6) * np.clip(rho, 0, 1.3) ** g(1.8, 3.5))
    light = light * (1.0 + g(0.04, 0.14) * spectral_noise(rng, shape, exponent=2.0, band=(0.5, 3.0)))
    glow_u, glow_v = cu + rng.normal(0, 0.05), cv + rng.normal(0, 0.05)
    sigma = g(0.12, 0.3)
    glow = g(0.0, 0.12) * np.exp(-((u - glow_u) ** 2 + (v - glow_v) ** 2) / (2 * sigma * sigma))
    extra = glow[None] * np.array([1.0, 0.95, 0.8])[:, None, None]
    if rng.random() < 0.5:  # haze along part of the field stop
        edge = np.sqrt(u * u + v * v)
        lobe = (0.5 + 0.5 * np.cos(np.arctan2(v, u) - g(-np.pi, np.pi))) ** 4
        haze = g(0.1, 0.35) * np.exp(-np.clip(1.0 - edge, 0, None) / 0.06) * lobe
        extra = extra + haze[None] * np.array([0.6, 0.75, 1.0])[:, None, None]
    return light.astype(np.float32), extra.astype(np.float32)


def make_fundus_full_phantom(seed: int, *, size: int | tuple[int, int] | None = None) -> tuple[Image, Labels]:
    """One fundus photograph of the unseen family with its ``disc`` ⊃ ``cup`` labels.

    ``size`` (side, or (height, width)) overrides the drawn image size — for small, fast test cases;
    the anatomy of a seed does not depend on it."""
    if size is not None:
        size = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
        if min(size) < 32:
            raise ValueError(f"size must be at least 32 pixels, got {size}")
    anatomy_seed, camera_seed = np.random.SeedSequence(int(seed)).spawn(2)
    plan = draw_fundus_plan(np.random.default_rng(anatomy_seed), size)
    rng = np.random.default_rng(camera_seed)
    h, w = plan.height, plan.width
    cx, cy = plan.fov_centre[0] * w, plan.fov_centre[1] * h
    scale = plan.fov_radius
    x = np.arange(w, dtype=np.float32)[None, :] + np.float32(0.5)
    y = np.arange(h, dtype=np.float32)[:, None] + np.float32(0.5)
    u = (x - np.float32(cx)) / np.float32(scale * plan.side)  # eye frame: +u nasal
    v = (y - np.float32(cy)) / np.float32(scale)
    u, v = np.broadcast_to(u, (h, w)), np.broadcast_to(v, (h, w))

    def to_pixels(points: np.ndarray) -> np.ndarray:
        return np.stack([cx + plan.side * scale * points[:, 0], cy + scale * points[:, 1]], axis=1)

    reflect = _reflectance(plan, u, v, rng, (h, w), to_pixels)

    arteries, veins, reflex = rasterize_tree(plan.vessels, to_pixels, (h, w), scale)
    depth = np.float32(plan.vessel_depth)
    absorb_vein = np.array([0.5, 1.7, 1.3], dtype=np.float32)[:, None, None] * depth
    absorb_artery = np.array([0.25, 1.0, 0.8], dtype=np.float32)[:, None, None] * depth
    reflect = reflect * np.exp(-(absorb_vein * veins[None] + absorb_artery * arteries[None]))
    reflect = reflect + np.float32(0.12) * reflex[None] * arteries[None].clip(0, 1)
    _lesions(plan, reflect, u, v, to_pixels)
    if plan.foveal_reflex > 0:
        spot = np.exp(-((u - plan.fovea[0]) ** 2 + (v - plan.fovea[1]) ** 2) / (2 * 0.008 ** 2))
        reflect = reflect + np.float32(plan.foveal_reflex) * spot.astype(np.float32)[None]

    light, extra = _illumination(rng, u, v, (h, w))
    linear = np.clip(reflect * light[None] + extra, 0.0, 1.0)
    picture = linear ** np.float32(1.0 / rng.uniform(1.0, 1.4))
    blur = rng.uniform(0.05, 0.22)
    picture = smooth_121(smooth_121(picture.astype(np.float32), 1, blur), 2, blur)
    picture = picture * 255.0 + rng.normal(0, rng.uniform(1.5, 5.0), picture.shape).astype(np.float32)
    radius = np.sqrt((x - np.float32(cx)) ** 2 + (y - np.float32(cy)) ** 2)
    stop = np.clip(np.float32(scale) - radius + 0.5, 0.0, 1.0)  # the black surround of the field stop
    picture = np.clip(np.rint(picture * stop[None]), 0, 255).astype(np.uint8)
    rgb = np.ascontiguousarray(picture.transpose(1, 2, 0))[None]

    layers = np.zeros((2, 1, h, w), dtype=np.uint8)
    rows, cols = _window(plan, plan.disc.centre, _disc_reach(plan), to_pixels)
    disc = plan.disc.signed_distance(u[rows, cols], v[rows, cols]) <= 0
    cup = (plan.cup.signed_distance(u[rows, cols], v[rows, cols]) <= 0) & disc
    layers[0, 0, rows, cols] = disc
    layers[1, 0, rows, cols] = cup * np.uint8(2)
    pixel_mm = 12.0 / (2 * scale)  # a 45° field is about 12 mm across at the retina
    geometry = Geometry(spacing=(pixel_mm, pixel_mm, 1.0), ndim=2)
    source = f"fundus-full phantom seed {seed} ({'right' if plan.side > 0 else 'left'} eye)"
    return (Image(array=rgb, geometry=geometry, source=source),
            Labels(layers=layers, geometry=geometry, segments=[replace(s) for s in FUNDUS_FULL_SEGMENTS],
                   source=source))
