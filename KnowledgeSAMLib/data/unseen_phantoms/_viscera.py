"""Intraperitoneal organs of the unseen CT phantom: liver (with its veins), gallbladder, spleen, lung
bases, colon and small-bowel loops.

Construction: organs are placed *after* the kidneys and great vessels and may only displace fat, so
they wrap around what is already there instead of overlapping it. The liver is a union of three
ellipsoidal lobes whose boundary is displaced by a smooth B-spline lattice drawn in millimetres; the
spleen is an ellipsoid along the left posterior wall with its hilar side scooped out; the lungs fill
whatever lies above a diaphragm modelled as a dome that sags towards the back and sides, down to
the level of the upper renal poles. Bowel loops
are persistent random walks confined to the anterior cavity, drawn as walled tubes whose lumen holds
fluid, gas, positive oral contrast or stool, with a horizontal gas–fluid level (the patient is supine,
so gas rises towards −y).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._ct_canvas import Canvas
from ._ct_tissues import CAVITY_FAT, Tissue
from ._filters import upsample_linear
from ._noise import bspline_at
from ._vessels import Tube, paint_tube

__all__ = ["Cavity", "VisceraPlan", "draw_viscera", "paint_viscera", "BowelLoop"]


@dataclass(frozen=True)
class Cavity:
    """Where the abdominal cavity is, roughly: half width, front and spine-front y, height range."""

    half_width: float
    front: float  # y of the anterior wall's inner surface (negative)
    spine_front: float  # y of the front of the vertebral bodies
    z_low: float
    z_high: float


@dataclass(frozen=True)
class BowelLoop:
    waypoints: np.ndarray
    radius: float
    wall: float
    content: Tissue
    gas_level: float | None  # y below which (anteriorly) the lumen holds gas
    into: frozenset[int]


@dataclass(frozen=True)
class VisceraPlan:
    liver_lobes: np.ndarray  # (k, 6): centre x, y, z and half axes
    liver_warp: np.ndarray  # B-spline lattice
    liver_box: tuple[np.ndarray, np.ndarray]
    liver_warp_amplitude: float
    liver_veins: tuple[Tube, ...]
    gallbladder: np.ndarray | None  # centre and half axes
    spleen: np.ndarray  # centre x, y, z, half axes (radial, tangential, z), angle
    spleen_scoop: float
    lung_low: float  # height of the lowest (posterolateral) point of the lung bases
    dome: float  # height of the diaphragm's dome
    loops: tuple[BowelLoop, ...]


def _walk(rng: np.random.Generator, start: np.ndarray, steps: int, step: float, centre: np.ndarray,
          half: np.ndarray) -> np.ndarray:
    """A persistent random walk kept inside the box ``centre ± half``."""
    points = [start]
    heading = rng.normal(0, 1, 3) * np.array([1.0, 1.0, 0.6])
    heading /= np.linalg.norm(heading)
    for _ in range(steps):
        turn = rng.normal(0, 1, 3) * np.array([1.0, 1.0, 0.6])
        heading = 0.55 * heading + 0.45 * turn / np.linalg.norm(turn)
        heading /= np.linalg.norm(heading)
        nxt = points[-1] + step * heading
        outside = np.abs(nxt - centre) > half
        heading[outside] *= -1
        points.append(np.clip(nxt, centre - half, centre + half))
    return np.stack(points)


def _draw_loops(rng: np.random.Generator, cavity: Cavity, kidneys_z: tuple[float, float],
                oral: bool) -> list[BowelLoop]:
    u = rng.uniform
    a = cavity.half_width
    z_flexure = max(kidneys_z) + u(0, 35)
    y_mid = 0.5 * (cavity.front + cavity.spine_front - 15)
    colon_radius = u(14, 22)
    colon_into = frozenset({Tissue.VISCERAL_FAT, Tissue.RETRO_FAT})
    loops: list[BowelLoop] = []
    ascending = np.array([[-u(0.55, 0.7) * a, y_mid + u(-5, 15), cavity.z_low - 40],
                          [-u(0.55, 0.7) * a, y_mid + u(0, 20), 0.5 * (cavity.z_low + z_flexure)],
                          [-u(0.5, 0.65) * a, y_mid + u(-10, 10), z_flexure]])
    descending = np.array([[u(0.55, 0.72) * a, y_mid + u(0, 20), cavity.z_low - 40],
                           [u(0.58, 0.72) * a, y_mid + u(5, 25), 0.5 * (cavity.z_low + z_flexure)],
                           [u(0.5, 0.65) * a, y_mid + u(0, 20), z_flexure + u(10, 40)]])
    transverse = np.array([ascending[-1], [0.0, cavity.front + colon_radius + u(5, 25), z_flexure - u(10, 60)],
                           descending[-1]])
    for segment in (ascending, transverse, descending):
        level = float(segment[:, 1].mean()) - u(-0.2, 0.9) * colon_radius
        loops.append(BowelLoop(segment, colon_radius * u(0.85, 1.1), u(1.5, 3.0), Tissue.STOOL, level, colon_into))
    centre = np.array([0.0, y_mid, 0.5 * (cavity.z_low + z_flexure)])
    half = np.array([0.55 * a, 0.5 * (cavity.spine_front - 15 - cavity.front) - 8,
                     0.5 * (z_flexure - cavity.z_low) + 20])
    for _ in range(int(rng.integers(9, 17))):
        start = centre + half * u(-0.9, 0.9, 3)
        radius = u(9, 16)
        path = _walk(rng, start, int(rng.integers(6, 12)), u(22, 35), centre, half)
        roll = rng.random()
        if oral and roll < 0.35:
            content, level = Tissue.ORAL_CONTRAST, None
        elif roll < 0.55:
            content, level = Tissue.BOWEL_GAS, None
        else:
            content = Tissue.BOWEL_FLUID
            level = float(path[:, 1].min()) - radius + u(0, 1.2) * radius if rng.random() < 0.4 else None
        loops.append(BowelLoop(path, radius, u(1.5, 3.0), content, level, frozenset({Tissue.VISCERAL_FAT})))
    return loops


def draw_viscera(rng: np.random.Generator, cavity: Cavity, *, right_kidney_z: float, left_kidney_z: float,
                 porta: np.ndarray, cava_xy: tuple[float, float]) -> VisceraPlan:
    u = rng.uniform
    a, front, top = cavity.half_width, cavity.front, cavity.z_high
    tip = right_kidney_z + u(-25, 25)
    right_z = top - u(-10, 30)
    lobes = np.array([
        [-u(0.42, 0.56) * a, u(-0.2, 0.12) * abs(front), right_z, min(u(60, 88), 0.62 * a), u(60, 85),
         max(50.0, right_z - tip)],
        [u(0.0, 0.3) * a, front * u(0.35, 0.55), top - u(0, 35), u(45, 70), u(25, 40), u(45, 65)],
        [cava_xy[0] + 8, cava_xy[1] - 12, top - u(20, 40), u(15, 22), u(14, 20), u(30, 45)],
    ])
    low = lobes[:, :3].min(axis=0) - lobes[:, 3:].max(axis=0)
    high = lobes[:, :3].max(axis=0) + lobes[:, 3:].max(axis=0)
    warp = rng.standard_normal((7, 7, 7)).astype(np.float32)
    veins = []
    for _ in range(int(rng.integers(4, 7))):
        target = lobes[int(rng.integers(0, 2)), :3] + rng.normal(0, 25, 3)
        mid = 0.5 * (porta + target) + rng.normal(0, 8, 3)
        veins.append(Tube(np.stack([porta, mid, target]), (u(4, 6), u(1.5, 2.5)), Tissue.PORTAL_BLOOD,
                          frozenset({Tissue.LIVER})))
    for angle in u(-2.6, -0.4, 3):  # hepatic veins fan forwards from the cava near the dome
        start = np.array([cava_xy[0], cava_xy[1], top - u(5, 25)])
        end = start + np.array([70 * np.cos(angle), 70 * np.sin(angle), u(5, 25)])
        veins.append(Tube(np.stack([start, 0.5 * (start + end), end]), (u(4, 6), u(1.5, 2.5)), Tissue.CAVAL_BLOOD,
                          frozenset({Tissue.LIVER})))
    gallbladder = None
    if rng.random() < 0.75:
        gallbladder = np.array([-u(0.15, 0.35) * a, front * u(0.25, 0.5), tip + u(20, 50), u(11, 18), u(11, 18),
                                u(22, 38)])
    spleen_angle = u(0.35, 0.9)  # polar angle of its centre, posterolateral left
    radius = u(0.72, 0.88) * a
    spleen = np.array([radius * np.cos(spleen_angle), radius * np.sin(spleen_angle) * 0.8, top - u(10, 45),
                       u(18, 28), u(45, 65), u(40, 60), spleen_angle])
    oral = rng.random() < 0.55
    return VisceraPlan(
        liver_lobes=lobes, liver_warp=warp, liver_box=(low, high), liver_warp_amplitude=u(0.06, 0.14),
        liver_veins=tuple(veins), gallbladder=gallbladder, spleen=spleen, spleen_scoop=u(0.4, 0.8),
        lung_low=max(right_kidney_z, left_kidney_z) + u(25, 60), dome=top + u(0, 60),
        loops=tuple(_draw_loops(rng, cavity, (right_kidney_z, left_kidney_z), oral)))


def _paint_liver(canvas: Canvas, plan: VisceraPlan) -> None:
    low, high = plan.liver_box
    box = canvas.box(low, high)
    if box is None:
        return
    value = np.full(box.shape, np.inf, dtype=np.float32)
    for index, (cx, cy, cz, rx, ry, rz) in enumerate(plan.liver_lobes):
        reach = np.array([rx, ry, rz]) * (1.0 + 2.0 * plan.liver_warp_amplitude)
        sub = canvas.inner(box, np.array([cx, cy, cz]) - reach, np.array([cx, cy, cz]) + reach)
        if sub is None:
            continue
        local, part = sub
        # the right lobe narrows towards its inferior tip
        narrow = np.float32(1.0) if index else (0.3 + 0.7 * np.sqrt(np.clip((part.z - (cz - rz)) / rz, 0.02, 1.0)))
        lobe = (((part.x - np.float32(cx)) / (rx * narrow)) ** 2 + ((part.y - np.float32(cy)) / (ry * narrow)) ** 2
                + ((part.z - np.float32(cz)) / rz) ** 2)
        np.minimum(value[local], lobe, out=value[local])
    # the boundary displacement is very smooth: evaluated on every second voxel in-plane, then interpolated
    intervals = plan.liver_warp.shape[0] - 3
    positions = [(box.z.ravel() - low[2]) / (high[2] - low[2]) * intervals,
                 (box.y.ravel()[::2] - low[1]) / (high[1] - low[1]) * intervals,
                 (box.x.ravel()[::2] - low[0]) / (high[0] - low[0]) * intervals]
    warp = bspline_at(plan.liver_warp, positions)
    warp = upsample_linear(upsample_linear(warp, 1, box.shape[1]), 2, box.shape[2])
    canvas.paint(box, np.sqrt(value) + plan.liver_warp_amplitude * warp <= 1.0, Tissue.LIVER, into=CAVITY_FAT)
    for vein in plan.liver_veins:
        paint_tube(canvas, vein)


def _paint_ellipsoid(canvas: Canvas, centre: np.ndarray, axes: np.ndarray, tissue: Tissue, into) -> None:
    box = canvas.box(centre - axes, centre + axes)
    if box is not None:
        inside = sum(((c - np.float32(m)) / r) ** 2 for c, m, r in zip((box.x, box.y, box.z), centre, axes)) <= 1.0
        canvas.paint(box, inside, tissue, into=into)


def _paint_spleen(canvas: Canvas, plan: VisceraPlan) -> None:
    cx, cy, cz, radial, tangential, height, angle = plan.spleen
    reach = max(radial, tangential, height)
    box = canvas.box([cx - reach, cy - reach, cz - height], [cx + reach, cy + reach, cz + height])
    if box is None:
        return
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    along_r = (box.x - np.float32(cx)) * c + (box.y - np.float32(cy)) * s
    along_t = -(box.x - np.float32(cx)) * s + (box.y - np.float32(cy)) * c
    dz = box.z - np.float32(cz)
    body = (along_r / radial) ** 2 + (along_t / tangential) ** 2 + (dz / height) ** 2 <= 1.0
    scoop_r = plan.spleen_scoop * tangential
    scoop = (along_r + np.float32(radial * 0.4 + scoop_r)) ** 2 + (along_t / 1.6) ** 2 + (dz / 1.4) ** 2 <= scoop_r ** 2
    canvas.paint(box, body & ~scoop, Tissue.SPLEEN, into=CAVITY_FAT)


def _paint_lungs(canvas: Canvas, plan: VisceraPlan, cavity: Cavity) -> None:
    """Lung above the diaphragm: the dome is highest centrally and in front, lowest at the back and sides.
    Painted after the liver and spleen, into fat only, so the lung bases wrap around the organs under the dome."""
    back = cavity.spine_front + 40.0
    box = canvas.box([-cavity.half_width - 10, cavity.front - 5, plan.lung_low],
                     [cavity.half_width + 10, back + 40, np.inf])
    if box is None:
        return
    centre_y, half_y = 0.5 * (cavity.front + back), 0.5 * (back - cavity.front)
    rho2 = np.clip((box.x / cavity.half_width) ** 2 + ((box.y - np.float32(centre_y)) / half_y) ** 2, 0.0, 1.0)
    posterior = np.clip((box.y - np.float32(cavity.front)) / (back - cavity.front), 0.0, 1.0)
    depth = rho2 ** 0.7 * (0.45 + 0.55 * posterior)  # 1 at the posterolateral recess
    above = box.z > plan.lung_low + (plan.dome - plan.lung_low) * (1.0 - depth)
    canvas.paint(box, above, Tissue.LUNG, into=CAVITY_FAT)


def _paint_loop(canvas: Canvas, loop: BowelLoop) -> None:
    from ._curves import catmull_rom, resample_by_length

    points, _ = resample_by_length(catmull_rom(loop.waypoints, per_segment=10), 0.9 * loop.radius)
    result = canvas.tube_field(points, np.full(len(points), loop.radius), margin=1.0)
    if result is None:
        return
    box, field = result
    painted = canvas.paint(box, field < 0, Tissue.BOWEL_WALL, into=loop.into)
    lumen = painted & (field < -loop.wall)
    view = canvas.tissue[box.slices]
    view[lumen] = loop.content
    if loop.gas_level is not None:
        view[lumen & (box.y < loop.gas_level)] = Tissue.BOWEL_GAS


def paint_viscera(canvas: Canvas, plan: VisceraPlan, cavity: Cavity) -> None:
    """Liver, gallbladder, spleen, lung bases, colon and small bowel, in this order."""
    _paint_liver(canvas, plan)
    if plan.gallbladder is not None:
        _paint_ellipsoid(canvas, plan.gallbladder[:3], plan.gallbladder[3:], Tissue.GALLBLADDER,
                         CAVITY_FAT | {Tissue.LIVER})
    _paint_spleen(canvas, plan)
    _paint_lungs(canvas, plan, cavity)
    for loop in plan.loops:
        _paint_loop(canvas, loop)
