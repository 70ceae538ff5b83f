"""Retinal vessel trees for the unseen fundus phantom: persistent branching walks, stamped as chords.

Growth: every vessel tip advances in small steps (proportional to its radius) and turns by a random
amount plus a pull towards a *desired heading* that depends on its role: the temporal arcades
circle the fovea (the tangent of the circle through the tip, steered onto a drawn orbit, and fanning
outwards once they are temporal of the fovea), nasal trunks head away from the disc, side branches
keep the heading they were born with (bent slightly outwards), and macular twigs head for the fovea
and stop at the foveal avascular zone. At random intervals a
tip divides by Murray's law (r³ = r₁³ + r₂³) with a drawn asymmetry; the thinner daughter leaves at
the wider angle. Tips stop when they thin out, leave the field of view or reach the avascular zone.
All tips advance together, so the growth is a loop over steps, not over vessels.

Rasterisation: each centreline sample is stamped as the chord length of a cylinder,
``sqrt(r² − d²)``, relative to the widest vein (optical density ∝ path length through blood),
combined by maximum; the arteries also get a narrow central light reflex.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["VesselTree", "grow_tree", "rasterize_tree"]

ARCADE, RADIAL, MACULAR, FREE = 0, 1, 2, 3


@dataclass(frozen=True)
class VesselTree:
    """Centreline segments in field-of-view units (radius 1): start, end, radii, artery flag."""

    starts: np.ndarray  # (n, 2) u, v
    ends: np.ndarray  # (n, 2)
    radius_start: np.ndarray  # (n,)
    radius_end: np.ndarray  # (n,)
    artery: np.ndarray  # (n,) bool
    reference_radius: float  # the widest vein's radius


@dataclass
class _Tips:
    pos: np.ndarray  # (k, 2)
    heading: np.ndarray  # (k,)
    radius: np.ndarray
    artery: np.ndarray
    mode: np.ndarray
    sign: np.ndarray  # arcade direction around the fovea (±1)
    travelled: np.ndarray
    goal: np.ndarray  # FREE tips: the heading they were born with
    orbit: np.ndarray  # ARCADE tips: the distance from the fovea they settle at

    _FIELDS = ("pos", "heading", "radius", "artery", "mode", "sign", "travelled", "goal", "orbit")

    def take(self, keep: np.ndarray) -> "_Tips":
        return _Tips(*(getattr(self, f)[keep] for f in self._FIELDS))

    @staticmethod
    def concat(parts: list["_Tips"]) -> "_Tips":
        return _Tips(*(np.concatenate([getattr(p, f) for p in parts]) for f in _Tips._FIELDS))


def _wrap(angle: np.ndarray) -> np.ndarray:
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _initial_tips(rng: np.random.Generator, disc: np.ndarray, disc_radius: float, vein_radius: float,
                  artery_ratio: float, orbit: float) -> _Tips:
    """The main trunks leaving the disc: four arcade/nasal pairs (artery and vein) plus a few twigs.
    Angles are atan2(v, u) in the eye frame (+u nasal, +v inferior)."""
    u = rng.uniform
    rows = []
    for artery in (False, True):
        scale = artery_ratio if artery else 1.0
        jitter = u(-0.2, 0.2, 4)
        rows += [
            (-np.pi / 2 - u(0.1, 0.45) + jitter[0], scale, ARCADE, -1.0, artery),  # superotemporal
            (np.pi / 2 + u(0.1, 0.45) + jitter[1], scale, ARCADE, 1.0, artery),  # inferotemporal
            (-u(0.5, 1.1) + jitter[2], scale * u(0.6, 0.8), RADIAL, 1.0, artery),  # superonasal
            (u(0.5, 1.1) + jitter[3], scale * u(0.6, 0.8), RADIAL, 1.0, artery),  # inferonasal
        ]
        for _ in range(int(rng.integers(1, 4))):  # macular twigs towards the fovea (temporal)
            rows.append((np.pi + u(-0.5, 0.5), scale * u(0.25, 0.4), MACULAR, 1.0, artery))
        rows.append((u(-0.3, 0.3), scale * u(0.25, 0.4), RADIAL, 1.0, artery))  # a small nasal twig
    heading = np.array([r[0] for r in rows])
    radius = np.array([r[1] for r in rows]) * vein_radius
    k = len(rows)
    start = disc + rng.normal(0, 0.25 * disc_radius, (k, 2))
    return _Tips(pos=start, heading=heading, radius=radius, artery=np.array([r[4] for r in rows]),
                 mode=np.array([r[2] for r in rows]), sign=np.array([r[3] for r in rows]), travelled=np.zeros(k),
                 goal=heading.copy(), orbit=np.full(k, orbit))


def grow_tree(rng: np.random.Generator, *, disc: np.ndarray, disc_radius: float, fovea: np.ndarray,
              vein_radius: float, artery_ratio: float, branch_length: float, wiggle: float,
              max_steps: int = 900, max_tips: int = 700) -> VesselTree:
    """Grow all trees from the disc (eye frame, field-of-view radius 1)."""
    orbit = rng.uniform(0.55, 0.75) * float(np.hypot(*(fovea - disc)))
    tips = _initial_tips(rng, disc, disc_radius, vein_radius, artery_ratio, orbit)
    avascular = 0.35 * disc_radius
    min_radius = 0.2 * vein_radius
    seg_start, seg_end, r0, r1, art = [], [], [], [], []
    total = len(tips.heading)
    for _ in range(max_steps):
        if len(tips.heading) == 0:
            break
        step = np.maximum(1.4 * tips.radius, 0.006)
        # desired heading by role
        to_fovea = fovea - tips.pos
        dist_fovea = np.hypot(to_fovea[:, 0], to_fovea[:, 1]) + 1e-9
        radial_f = -to_fovea / dist_fovea[:, None]
        tangent = tips.sign[:, None] * np.stack([-radial_f[:, 1], radial_f[:, 0]], axis=1)
        # arcades close in on their orbit around the fovea, then fan out once past it (temporally)
        past = (tips.pos[:, 0] < fovea[0] - 0.05)[:, None]
        closing = ((dist_fovea - tips.orbit) / tips.orbit)[:, None]
        arcade = np.where(past, tangent + 0.6 * radial_f, tangent - 1.5 * closing * radial_f)
        away = tips.pos - disc
        away = away / (np.hypot(away[:, 0], away[:, 1])[:, None] + 1e-9)
        free = np.stack([np.cos(tips.goal), np.sin(tips.goal)], axis=1) + 0.4 * away
        mode = tips.mode[:, None]
        desired = np.where(mode == ARCADE, arcade, np.where(mode == MACULAR, to_fovea,
                                                             np.where(mode == FREE, free, away)))
        desired_angle = np.arctan2(desired[:, 1], desired[:, 0])
        near_disc = np.hypot(away[:, 0], away[:, 1]) < 1.3 * disc_radius  # let trunks leave the disc first
        pull = np.where(near_disc, 0.05, 0.22)
        tips.heading = tips.heading + pull * _wrap(desired_angle - tips.heading) \
            + wiggle * np.sqrt(step / 0.01) * rng.standard_normal(len(step))
        new_pos = tips.pos + step[:, None] * np.stack([np.cos(tips.heading), np.sin(tips.heading)], axis=1)
        new_radius = tips.radius * (1.0 - 0.25 * step)
        seg_start.append(tips.pos)
        seg_end.append(new_pos)
        r0.append(tips.radius)
        r1.append(new_radius)
        art.append(tips.artery)
        tips.pos, tips.radius, tips.travelled = new_pos, new_radius, tips.travelled + step

        # division (Murray's law); the thinner daughter takes the wider angle
        divide = rng.random(len(step)) < step / branch_length * (1.0 + 0.3 * (tips.radius < 0.5 * vein_radius))
        divide &= tips.travelled > 1.5 * disc_radius
        parts = [tips]
        if divide.any() and total < max_tips:
            parent = tips.take(divide)
            n = len(parent.heading)
            ratio = rng.uniform(0.35, 1.0, n)
            big = parent.radius / (1.0 + ratio ** 3) ** (1.0 / 3.0)
            side = rng.choice([-1.0, 1.0], n)
            tips.radius[divide] = big
            tips.heading[divide] += side * rng.uniform(0.15, 0.45, n) * ratio
            child = parent.take(np.ones(n, dtype=bool))
            child.radius = big * ratio
            child.heading = parent.heading - side * rng.uniform(0.6, 1.3, n)
            child.mode = np.where(parent.mode == MACULAR, MACULAR, FREE)
            child.goal = child.heading.copy()
            child.travelled = np.zeros(n)
            parts.append(child)
            total += n
        tips = _Tips.concat(parts) if len(parts) > 1 else tips
        radius_from_centre = np.hypot(tips.pos[:, 0], tips.pos[:, 1])
        to_fovea = np.hypot(*(fovea - tips.pos).T)
        alive = (tips.radius > min_radius) & (radius_from_centre < 1.02) & (to_fovea > avascular)
        tips = tips.take(alive)
    return VesselTree(starts=np.concatenate(seg_start), ends=np.concatenate(seg_end),
                      radius_start=np.concatenate(r0), radius_end=np.concatenate(r1),
                      artery=np.concatenate(art), reference_radius=vein_radius)


def rasterize_tree(tree: VesselTree, to_pixels, shape: tuple[int, int],
                   scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Artery density, vein density (chord length / widest vein diameter, max-combined) and the arterial
    central reflex on a ``shape`` image. ``to_pixels`` maps (n, 2) eye-frame points to (x, y) pixels and
    ``scale`` is pixels per field-of-view unit."""
    height, width = shape
    start, end = to_pixels(tree.starts), to_pixels(tree.ends)
    length = np.hypot(*(end - start).T)
    r_start, r_end = tree.radius_start * scale, tree.radius_end * scale
    count = np.maximum(1, np.ceil(length / np.clip(0.45 * np.minimum(r_start, r_end), 0.35, 1.0))).astype(np.int64)
    seg = np.repeat(np.arange(len(count)), count)
    frac = (np.arange(len(seg)) - np.repeat(np.cumsum(count) - count, count) + 0.5) / np.repeat(count, count)
    points = start[seg] + (end[seg] - start[seg]) * frac[:, None]
    radius = r_start[seg] + (r_end[seg] - r_start[seg]) * frac
    artery = tree.artery[seg]
    reference = tree.reference_radius * scale
    maps = np.zeros((3, height * width), dtype=np.float32)
    reach = np.ceil(radius + 1.0).astype(np.int64)
    for half in np.unique(reach):
        pick = reach == half
        offsets = np.arange(-half, half + 1)
        oy, ox = np.meshgrid(offsets, offsets, indexing="ij")
        base = np.floor(points[pick]).astype(np.int64)
        px = base[:, 0:1] + ox.ravel()[None, :]
        py = base[:, 1:2] + oy.ravel()[None, :]
        dx = px + 0.5 - points[pick, 0:1]
        dy = py + 0.5 - points[pick, 1:2]
        r = radius[pick][:, None]
        chord = np.sqrt(np.maximum(r * r - dx * dx - dy * dy, 0.0)) / reference
        inside = (chord > 0) & (px >= 0) & (px < width) & (py >= 0) & (py < height)
        flat = (py * width + px)[inside]
        is_artery = np.broadcast_to(artery[pick][:, None], inside.shape)[inside]
        values = chord[inside].astype(np.float32)
        np.maximum.at(maps[0], flat[is_artery], values[is_artery])
        np.maximum.at(maps[1], flat[~is_artery], values[~is_artery])
        wide = np.broadcast_to(r >= 1.8, inside.shape)[inside] & is_artery
        reflex = np.exp(-(dx * dx + dy * dy) / np.maximum(0.09 * r * r, 1e-6))[inside].astype(np.float32)
        np.maximum.at(maps[2], flat[wide], reflex[wide])
    return maps[0].reshape(shape), maps[1].reshape(shape), maps[2].reshape(shape)
