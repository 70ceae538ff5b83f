"""Great vessels and the renal vascular tree of the unseen CT phantom, as tubes around spline paths.

Construction: the aorta rides in front of the (lordotic, swaying) spine, slightly left of it, tapering
downwards and dividing into the common iliac arteries at a drawn height; the cava lies to the right
and takes the iliac veins. Each renal artery leaves the aorta above its hilum, runs (on the right,
behind the cava) to a point outside the hilum — a few millimetres out (hilar division) or further
(prehilar division) — and splits there into two to four segmental branches that cross the sinus and end at
its wall, against the parenchyma. A lower-pole accessory artery is drawn now and then. Renal veins run from the
sinus to the cava, the left one in front of the aorta; ureters leave the pelvis downwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._body import SpinePlan
from ._ct_canvas import Canvas
from ._ct_tissues import CAVITY_FAT, Tissue
from ._curves import catmull_rom, resample_by_length
from ._kidney_organ import KidneyPlan

__all__ = ["Tube", "GreatVessels", "draw_great_vessels", "great_vessel_tubes", "draw_renal_tubes", "paint_tube",
           "paint_calcifications"]


@dataclass(frozen=True)
class Tube:
    """A tube of linearly varying radius around a Catmull-Rom curve through ``waypoints`` (x, y, z mm)."""

    waypoints: np.ndarray
    radius: tuple[float, float]  # at the start and the end
    tissue: Tissue
    into: frozenset[int] | None = None  # classes it may displace; None: any


@dataclass(frozen=True)
class GreatVessels:
    spine: SpinePlan
    aorta_offset: float  # left of the spine centre, mm
    aorta_gap: float  # between the vertebral body and the aortic wall, mm
    aorta_radius: float
    aorta_taper: float  # relative radius loss per 100 mm downwards
    z_top: float
    bifurcation: float
    iliac_spread: float
    calcifications: np.ndarray  # (k, 3): z, angle, radius
    cava_offset: float  # right of the spine centre, mm
    cava_axes: tuple[float, float]
    sma_origin: float
    sma_radius: float
    smv_radius: float
    portal_radius: float

    def aorta_at(self, z: float) -> tuple[float, float, float]:
        """Aortic centre (x, y) and radius at height ``z``."""
        sx, sy = self.spine.centre(np.array([z], dtype=np.float32))
        radius = self.aorta_radius * (1 - self.aorta_taper * max(0.0, self.z_top - z) / 100.0)
        return float(sx[0]) + self.aorta_offset, float(sy[0]) - self.spine.ry - self.aorta_gap - radius, radius

    def cava_at(self, z: float) -> tuple[float, float]:
        sx, sy = self.spine.centre(np.array([z], dtype=np.float32))
        return float(sx[0]) - self.cava_offset, float(sy[0]) - self.spine.ry - 3.0 - self.cava_axes[1]


def draw_great_vessels(rng: np.random.Generator, spine: SpinePlan, *, z_top: float, kidneys_low: float,
                       renal_origin: float) -> GreatVessels:
    u = rng.uniform
    n_calc = int(rng.integers(0, 6))
    calcifications = np.column_stack([u(kidneys_low - 60, z_top, n_calc), u(0, 2 * np.pi, n_calc), u(1.2, 3.0, n_calc)])
    return GreatVessels(
        spine=spine, aorta_offset=u(4, 14), aorta_gap=u(1, 5), aorta_radius=u(9, 13), aorta_taper=u(0.02, 0.08),
        z_top=z_top, bifurcation=kidneys_low - u(50, 95), iliac_spread=u(35, 55), calcifications=calcifications,
        cava_offset=u(18, 30), cava_axes=(u(11, 16), u(7, 11)), sma_origin=renal_origin + u(8, 22),
        sma_radius=u(2.8, 4.0), smv_radius=u(4.5, 6.0), portal_radius=u(5.5, 7.5))


def great_vessel_tubes(v: GreatVessels, z_low: float) -> list[Tube]:
    """Aorta (+ iliac arteries), cava (+ iliac veins), SMA, SMV and portal vein as tubes."""
    no_kidney = frozenset(set(range(256)) - {Tissue.CORTEX, Tissue.MEDULLA, Tissue.CORTICAL_BONE,
                                             Tissue.CANCELLOUS_BONE, Tissue.CSF, Tissue.DISC})
    tubes: list[Tube] = []
    top = v.z_top + 20
    start = max(v.bifurcation, z_low - 40)
    heights = np.linspace(start, top, max(3, int((top - start) / 30) + 1))
    aorta = np.array([[*v.aorta_at(z)[:2], z] for z in heights])
    r_top, r_low = v.aorta_at(top)[2], v.aorta_at(start)[2]
    tubes.append(Tube(aorta, (r_low, r_top), Tissue.ARTERIAL_BLOOD, no_kidney))
    cava_heights = np.linspace(max(v.bifurcation - 8, z_low - 40), top, len(heights))
    cava_radius = float(np.sqrt(v.cava_axes[0] * v.cava_axes[1]))
    no_artery = frozenset(no_kidney - {Tissue.RENAL_ARTERY, Tissue.ARTERIAL_BLOOD})
    if v.bifurcation > z_low - 40:
        ax, ay, r = v.aorta_at(v.bifurcation)
        cx, cy = v.cava_at(v.bifurcation - 8)
        for side in (-1.0, 1.0):
            artery = np.array([[ax, ay, v.bifurcation + 4], [ax + side * 12, ay + 3, v.bifurcation - 25],
                               [ax + side * v.iliac_spread, ay + 14, v.bifurcation - 110]])
            tubes.append(Tube(artery, (0.7 * r, 0.6 * r), Tissue.ARTERIAL_BLOOD, no_kidney))
            vein = np.array([[cx, cy, v.bifurcation - 4], [cx + side * 14 + 8, cy + 8, v.bifurcation - 30],
                             [ax + side * (v.iliac_spread - 6), ay + 24, v.bifurcation - 110]])
            tubes.append(Tube(vein, (0.75 * cava_radius, 0.6 * cava_radius), Tissue.CAVAL_BLOOD, no_artery))
    cava = np.array([[*v.cava_at(z), z] for z in cava_heights])
    tubes.append(Tube(cava, (cava_radius, cava_radius), Tissue.CAVAL_BLOOD, no_artery))
    o = v.sma_origin
    ax, ay, r = v.aorta_at(o)
    sma = np.array([[ax, ay, o], [ax + 0.5, ay - r - 9, o - 6], [ax - 2, ay - r - 16, o - 35],
                    [ax - 6, ay - r - 22, o - 140]])
    tubes.append(Tube(sma, (v.sma_radius, 0.7 * v.sma_radius), Tissue.ARTERIAL_BLOOD, frozenset(CAVITY_FAT)))
    smv = np.array([[ax - 16, ay - r - 24, o - 140], [ax - 13, ay - r - 20, o - 35], [ax - 12, ay - r - 18, o + 2]])
    tubes.append(Tube(smv, (0.8 * v.smv_radius, v.smv_radius), Tissue.PORTAL_BLOOD, frozenset(CAVITY_FAT)))
    cx, cy = v.cava_at(o + 25)
    portal = np.array([[ax - 12, ay - r - 18, o + 2], [cx + 4, cy - 22, o + 22], [cx - 25, cy - 30, o + 45]])
    tubes.append(Tube(portal, (v.smv_radius, v.portal_radius), Tissue.PORTAL_BLOOD, frozenset(CAVITY_FAT)))
    return tubes


def draw_renal_tubes(rng: np.random.Generator, kidney: KidneyPlan, v: GreatVessels, *, z_low: float) -> list[Tube]:
    """Renal artery with its branches (and maybe an accessory artery), renal vein and ureter of one kidney."""
    u = rng.uniform
    side = kidney.side
    arterial_into = frozenset(set(range(256)) - {Tissue.CORTEX, Tissue.MEDULLA, Tissue.CORTICAL_BONE,
                                                 Tissue.CANCELLOUS_BONE, Tissue.CSF, Tissue.DISC})
    hilum_z = float(kidney.hilum_point(0.0)[2])
    origin_z = hilum_z + u(3, 22)
    ax, ay, ar = v.aorta_at(origin_z)
    hilum_out = kidney.hilum_point(u(4, 8))
    direction = hilum_out[:2] - np.array([ax, ay])
    direction /= np.linalg.norm(direction)
    leave = np.array([ax, ay]) + direction * (ar + u(5, 9)) + np.array([0.0, u(0, 5)])
    trunk_radius = u(2.3, 3.4)
    path = [np.array([ax, ay, origin_z]), np.array([*leave, origin_z - u(0, 3)])]
    if side < 0:  # behind the cava
        cx, cy = v.cava_at(origin_z)
        path.append(np.array([cx, cy + v.cava_axes[1] + trunk_radius + u(3, 6), 0.5 * (origin_z + hilum_z)]))
    prehilar = rng.random() < 0.35
    split = kidney.hilum_point(u(10, 18) if prehilar else u(1, 3))
    path += [split] if prehilar else [hilum_out, split]
    tubes = [Tube(np.stack(path), (trunk_radius, 0.9 * trunk_radius), Tissue.RENAL_ARTERY, arterial_into)]
    for _ in range(int(rng.integers(2, 5))):
        # segmental branches end just beyond the sinus wall, against the parenchyma (painting stops there)
        direction = np.array([u(-0.85, 0.85), u(-0.6, 0.35), 0.0])
        direction[2] = rng.choice([-1.0, 1.0]) * np.sqrt(max(0.05, 1.0 - direction[0] ** 2 - direction[1] ** 2))
        target = kidney.sinus_point(*(1.08 * direction / np.linalg.norm(direction)))
        middle = 0.5 * (split + target) + rng.normal(0, 2.0, 3)
        if prehilar:
            middle = 0.5 * (middle + kidney.hilum_point(u(0, 3)))
        branch_radius = trunk_radius * u(0.55, 0.72)
        tubes.append(Tube(np.stack([split, middle, target]), (branch_radius, 0.75 * branch_radius),
                          Tissue.RENAL_ARTERY, arterial_into))
    if rng.random() < 0.25:  # lower-pole accessory artery
        z0 = origin_z - u(15, 40)
        bx, by, br = v.aorta_at(z0)
        pole = kidney.to_patient(np.array([-0.78 * kidney.half_length, 0.45 * kidney.half_width, 0.0]))
        step = pole[:2] - np.array([bx, by])
        leave = np.array([bx, by]) + step / np.linalg.norm(step) * (br + 6)
        points = np.stack([np.array([bx, by, z0]), np.array([*leave, z0 - 2]), 0.5 * (np.array([*leave, z0]) + pole)
                           + np.array([0.0, u(-4, 4), 0.0]), pole])
        tubes.append(Tube(points, (u(1.4, 2.1), 1.2), Tissue.RENAL_ARTERY, arterial_into))

    # renal vein: from the anterior sinus to the cava (the left one in front of the aorta)
    front = kidney.anterior_sign
    vein_radius = u(3.8, 5.5)
    vein_z = hilum_z + u(-6, 6)
    cx, cy = v.cava_at(vein_z)
    start = kidney.sinus_point(0.0, 0.2, 0.45 * front)
    out = kidney.to_patient(np.array([0.0, kidney.half_width + 7.0, 0.4 * front * kidney.half_thickness]))
    vein = [start, out]
    vx, vy, vr = v.aorta_at(vein_z)
    if side > 0:
        vein += [np.array([vx + vr + 8, vy - vr - vein_radius - 1, vein_z]),
                 np.array([vx, vy - vr - vein_radius - 1.5, vein_z])]
    vein.append(np.array([cx, cy, vein_z]))
    vein_into = frozenset(CAVITY_FAT | {Tissue.PERIRENAL_FAT, Tissue.SINUS_FAT, Tissue.URINE, Tissue.MUSCLE})
    tubes.insert(0, Tube(np.stack(vein), (0.8 * vein_radius, vein_radius), Tissue.RENAL_VEIN_BLOOD, vein_into))

    # ureter: out of the hilum below the vessels, down along the front of the psoas
    sx, sy = v.spine.centre(np.array([z_low], dtype=np.float32))
    pelvis = kidney.to_patient(np.array([-0.1 * kidney.half_length, kidney.pelvis_offset, 0.0]))
    exit_point = kidney.to_patient(np.array([-0.25 * kidney.half_length, kidney.half_width + 6.0, 0.0]))
    low = np.array([float(sx[0]) + side * u(30, 42), float(sy[0]) - v.spine.ry - u(0, 8), z_low - 30])
    middle = 0.5 * (exit_point + low) + np.array([side * 6.0, 0.0, 0.0])
    ureter_into = frozenset(CAVITY_FAT | {Tissue.PERIRENAL_FAT, Tissue.SINUS_FAT})
    tubes.insert(1, Tube(np.stack([pelvis, exit_point, middle, low]), (u(2.2, 3.2), u(1.6, 2.4)), Tissue.URINE,
                         ureter_into))
    return tubes


def paint_tube(canvas: Canvas, tube: Tube, *, step: float | None = None) -> None:
    """Rasterise a tube: the curve resampled every ``step`` mm (default: the smaller radius)."""
    curve = catmull_rom(tube.waypoints, per_segment=12)
    points, fraction = resample_by_length(curve, step or max(0.8, min(tube.radius)))
    radii = tube.radius[0] + fraction * (tube.radius[1] - tube.radius[0])
    result = canvas.tube_field(points, radii, margin=1.0)
    if result is None:
        return
    box, field = result
    canvas.paint(box, field < 0, tube.tissue, into=tube.into)


def paint_calcifications(canvas: Canvas, v: GreatVessels) -> None:
    """Small dense plaques on the aortic wall."""
    for z, angle, radius in v.calcifications:
        ax, ay, ar = v.aorta_at(float(z))
        centre = np.array([ax + ar * np.cos(angle), ay + ar * np.sin(angle), z])
        box = canvas.box(centre - radius, centre + radius)
        if box is None:
            continue
        inside = (box.x - centre[0]) ** 2 + (box.y - centre[1]) ** 2 + (box.z - centre[2]) ** 2 <= radius * radius
        canvas.paint(box, inside, Tissue.CALCIFICATION, into=CAVITY_FAT | {Tissue.ARTERIAL_BLOOD})
