"""The musculoskeletal frame of the unseen CT phantom: torso outline and wall, CT table, lumbar spine,
ribs and the back and psoas muscles.

Construction: the torso is described in *polar* form around the body centre. Its outline is a
superellipse modulated by a few angular harmonics, an anterior bulge and a flat back where it lies on
the table; inward from it come skin, subcutaneous fat whose thickness depends on the angle (thin at
the back, thick at the front and flanks), and the muscular wall, which thickens behind into the
posterior band that holds the spine. The spine repeats along z with a drawn period: vertebral body
(cortical shell, cancellous core, dense endplates) or disc, canal, neural arch, spinous and transverse
processes, each appearing only in its part of the period. Ribs are cross-sections of oblique hoops:
a rib whose back end lies at height ``z_j`` crosses a slice at ``z`` at the angle where its descent
reaches ``z``, so more ribs show, further forward, in higher slices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._ct_canvas import Box, Canvas
from ._ct_tissues import CAVITY_FAT, Tissue

__all__ = ["BodyPlan", "SpinePlan", "RibPlan", "draw_body", "paint_torso", "paint_spine", "paint_ribs",
           "paint_back_muscles", "paint_psoas"]

_ANGLE_BINS = 1440


@dataclass(frozen=True)
class SpinePlan:
    x: float
    sway: float  # lateral (scoliotic) amplitude, mm
    sway_period: float
    sway_phase: float
    y: float  # vertebral body centre at z_ref, mm
    lordosis: float  # mm of forward bow per (100 mm)^2 from z_ref
    z_ref: float
    rx: float
    ry: float
    cortical: float
    period: float
    disc: float
    phase: float
    canal: float
    arch: float
    spinous: float
    spinous_half: float
    spinous_tilt: float
    transverse: float
    transverse_half: float

    def centre(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vertebral body centre (x, y) at heights ``z``."""
        dz = (z - self.z_ref) / 100.0
        x = self.x + self.sway * np.sin(2 * np.pi * z / self.sway_period + self.sway_phase)
        return x.astype(np.float32), (self.y - self.lordosis * dz * dz).astype(np.float32)

    @property
    def canal_offset(self) -> float:
        """Canal centre behind the vertebral body centre, mm."""
        return 0.72 * self.ry + self.canal + 0.5

    @property
    def lamina_offset(self) -> float:
        """Back surface of the neural arch behind the vertebral body centre, mm."""
        return self.canal_offset + self.canal + self.arch


@dataclass(frozen=True)
class RibPlan:
    z_lowest: float  # height of the back end of the lowest (12th) rib
    spacing: float
    slope: float  # descent in mm per radian travelled forward
    count: int
    start: float  # angle from the posterior midline where the ribs begin, rad
    reach: tuple[float, ...]  # angle where each rib ends, rad
    side_shift: float  # the left ribs are this much higher than the right, mm
    tangent: float
    radial: float
    cortical: float


@dataclass(frozen=True)
class BodyPlan:
    half_width: float
    half_depth: float
    exponent: float
    harmonics: np.ndarray  # (k, 3): order, amplitude, phase
    belly: float
    back: float  # y of the flat back at z_ref
    z_slope: float  # relative size change per 100 mm
    z_ref: float
    skin: float
    fat: float
    fat_front: float
    fat_side: float
    muscle: float
    band_width: float  # angular half width of the posterior muscle band, rad
    table_gap: float
    table_pad: float
    table_shell: float
    table_curve: float
    spine: SpinePlan
    ribs: RibPlan
    erector: tuple[float, float]
    psoas_top: float
    psoas_radius: float
    z_extent: tuple[float, float]  # heights of the first and last slice

    def scale(self, z: float) -> float:
        return 1.0 + self.z_slope * (z - self.z_ref) / 100.0

    def outline(self, theta: np.ndarray, z: float) -> np.ndarray:
        """Skin surface radius (mm) at polar angles ``theta`` (atan2(y, x)) and height ``z``."""
        c, s = np.cos(theta), np.sin(theta)
        p = self.exponent
        radius = (np.abs(c / self.half_width) ** p + np.abs(s / self.half_depth) ** p) ** (-1.0 / p)
        for order, amplitude, phase in self.harmonics:
            radius = radius * (1.0 + amplitude * np.cos(order * theta + phase))
        radius = radius * (1.0 + self.belly * np.maximum(0.0, -s) ** 2) * self.scale(z)
        return np.where(s > 1e-3, np.minimum(radius, self.back * self.scale(z) / np.maximum(s, 1e-3)), radius)

    def fat_thickness(self, theta: np.ndarray) -> np.ndarray:
        s, c = np.sin(theta), np.cos(theta)
        return self.fat * (0.45 + self.fat_front * np.maximum(0.0, -s) ** 1.5 + self.fat_side * c * c)

    def wall_thickness(self, theta: np.ndarray, z: float) -> np.ndarray:
        """Muscular wall thickness: obliques at the flanks, the paired recti in front with the thin linea
        alba between them, and the posterior band that reaches the vertebral bodies."""
        c, s = np.cos(theta), np.sin(theta)
        front = np.angle(np.exp(1j * (theta + np.pi / 2)))
        base = self.muscle * (0.5 + 0.6 * np.abs(c) + 0.35 * np.maximum(0.0, -s) ** 4)
        base = base * (1.0 - 0.75 * np.exp(-(front / 0.035) ** 2))
        back = float(self.outline(np.array([np.pi / 2]), z)[0]) - self.skin - float(
            self.fat_thickness(np.array([np.pi / 2]))[0]) - self.muscle
        _, spine_y = self.spine.centre(np.array([z], dtype=np.float32))
        extra = max(0.0, back - (float(spine_y[0]) + 0.3 * self.spine.ry))
        angle = np.angle(np.exp(1j * (theta - np.pi / 2)))
        return base + extra * np.exp(-(angle / self.band_width) ** 2)

    def cavity_radius(self, theta: np.ndarray, z: float) -> np.ndarray:
        return self.outline(theta, z) - self.skin - self.fat_thickness(theta) - self.wall_thickness(theta, z)


def _draw_spine(rng: np.random.Generator, back: float, posterior_fat: float, skin: float, z_ref: float) -> SpinePlan:
    u = rng.uniform
    rx, ry = u(19, 25), u(14, 18)
    canal, arch, spinous = u(7, 10), u(5, 7.5), u(18, 30)
    muscle_over_tip = u(5, 12)
    canal_offset = 0.72 * ry + canal + 0.5
    y = back - skin - posterior_fat - muscle_over_tip - spinous - arch - canal - canal_offset
    period = u(33, 40)
    return SpinePlan(x=u(-4, 4), sway=u(0, 5), sway_period=u(250, 500), sway_phase=u(0, 2 * np.pi), y=y,
                     lordosis=u(0, 6), z_ref=z_ref, rx=rx, ry=ry, cortical=u(1.2, 2.2), period=period,
                     disc=u(7, 11), phase=u(0, period), canal=canal, arch=arch, spinous=spinous,
                     spinous_half=u(2.5, 4.0), spinous_tilt=u(-3, 3), transverse=u(22, 34), transverse_half=u(3, 4.5))


def _draw_ribs(rng: np.random.Generator, z_lowest: float) -> RibPlan:
    u = rng.uniform
    count = 8
    reach = (u(1.1, 1.5), u(1.5, 2.0)) + tuple(u(2.2, 2.7) for _ in range(count - 2))
    return RibPlan(z_lowest=z_lowest, spacing=u(22, 30), slope=u(30, 50), count=count, start=u(0.42, 0.6),
                   reach=reach, side_shift=u(-6, 6), tangent=u(5.0, 7.5), radial=u(3.5, 5.0), cortical=u(1.2, 1.8))


def draw_body(rng: np.random.Generator, *, fov: float, z_ref: float, z_extent: tuple[float, float], rib_z: float,
              psoas_top: float) -> BodyPlan:
    """Torso size and layers, spine, ribs and muscles; the body fits the field of view ``fov`` (mm)."""
    u = rng.uniform
    half_width = min(u(135, 205), fov / 2 - 14)
    half_depth = half_width * u(0.64, 0.8)
    fat = float(np.clip((half_width - 135) * 0.35 + u(3, 12), 4, 40))
    skin = u(1.5, 3.0)
    back = half_depth * u(0.9, 0.97)
    fat_front, fat_side = u(0.7, 1.4), u(0.3, 0.9)
    harmonics = np.column_stack([np.arange(1, 6), rng.normal(0, 0.012, 5), u(0, 2 * np.pi, 5)])
    spine = _draw_spine(rng, back, fat * 0.45, skin, z_ref)
    return BodyPlan(
        half_width=half_width, half_depth=half_depth, exponent=u(1.9, 2.5), harmonics=harmonics, belly=u(0, 0.14),
        back=back, z_slope=u(-0.04, 0.06), z_ref=z_ref, skin=skin, fat=fat, fat_front=fat_front, fat_side=fat_side,
        muscle=u(8, 14), band_width=u(0.35, 0.5), table_gap=u(0, 2), table_pad=u(12, 30), table_shell=u(3, 5),
        table_curve=u(0.0, 0.0008), spine=spine, ribs=_draw_ribs(rng, rib_z),
        erector=(u(18, 27), u(17, 25)), psoas_top=psoas_top, psoas_radius=u(16, 26), z_extent=z_extent)


# ------------------------------------------------------------------------------------------ torso

def paint_torso(canvas: Canvas, plan: BodyPlan) -> None:
    """Air, table, skin, subcutaneous fat, muscular wall and the fat-filled cavity, slice by slice.

    The cavity is retroperitoneal fat behind the front of the vertebral bodies and visceral fat before it."""
    x = canvas.axis_coordinates("x")[None, :]
    y = canvas.axis_coordinates("y")[:, None]
    radius = np.hypot(x, y)
    theta = np.arctan2(y, x)
    bins = np.round((theta + np.pi) / (2 * np.pi) * _ANGLE_BINS).astype(np.int64) % _ANGLE_BINS
    angles = np.arange(_ANGLE_BINS) * (2 * np.pi / _ANGLE_BINS) - np.pi
    table = _table(plan, x, y)
    zs = canvas.axis_coordinates("z")
    spine_x, spine_y = plan.spine.centre(zs)
    fat = plan.fat_thickness(angles)
    for k, z in enumerate(zs):
        outer = plan.outline(angles, float(z))
        skin = outer - plan.skin
        subcut = skin - fat
        cavity = subcut - plan.wall_thickness(angles, float(z))
        layer = ((radius > cavity[bins]).astype(np.uint8) + (radius > subcut[bins]) + (radius > skin[bins])
                 + (radius > outer[bins]))
        retro = y > spine_y[k] - plan.spine.ry - 12.0
        classes = np.array([Tissue.VISCERAL_FAT, Tissue.WALL_MUSCLE, Tissue.SUBCUT_FAT, Tissue.SKIN, Tissue.AIR],
                           dtype=np.uint8)[layer]
        classes = np.where((layer == 0) & retro, np.uint8(Tissue.RETRO_FAT), classes)
        canvas.tissue[k] = np.where(classes == Tissue.AIR, table, classes)


def _table(plan: BodyPlan, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The CT table under the back: a foam pad on a curved carbon shell (2D, the same in every slice)."""
    top = plan.back * max(plan.scale(z) for z in plan.z_extent) + plan.table_gap
    surface = top - plan.table_curve * x * x  # the pad is curved like the shell under it
    wide = np.abs(x) < plan.half_width * 1.1
    pad = (y >= surface) & (y < surface + plan.table_pad) & wide
    shell = (y >= surface + plan.table_pad) & (y < surface + plan.table_pad + plan.table_shell) & wide
    return np.where(shell, np.uint8(Tissue.TABLE_SHELL),
                    np.where(pad, np.uint8(Tissue.TABLE_FOAM), np.uint8(Tissue.AIR))).astype(np.uint8)


# ------------------------------------------------------------------------------------------ spine

Point = tuple[np.ndarray, np.ndarray]


def _capsule_2d(x: np.ndarray, y: np.ndarray, a: Point, b: Point) -> np.ndarray:
    """In-plane distance to the segment a–b (end points may vary with z)."""
    ax, ay = a
    bx, by = b
    dx, dy = bx - ax, by - ay
    t = np.clip(((x - ax) * dx + (y - ay) * dy) / np.maximum(dx * dx + dy * dy, 1e-6), 0.0, 1.0)
    return np.hypot(x - (ax + t * dx), y - (ay + t * dy))


def _paint_bone(canvas: Canvas, box: Box, bone: np.ndarray, core: np.ndarray) -> None:
    canvas.paint(box, bone & ~core, Tissue.CORTICAL_BONE)
    canvas.paint(box, bone & core, Tissue.CANCELLOUS_BONE)


def paint_spine(canvas: Canvas, plan: SpinePlan) -> None:
    """Vertebral bodies or discs, canal, neural arch, spinous and transverse processes along z."""
    reach = plan.canal + plan.arch + plan.transverse + 6
    zs = canvas.axis_coordinates("z")
    cx, cy = plan.centre(zs)
    box = canvas.box([float(cx.min()) - reach, float(cy.min()) - plan.ry - 3, -np.inf],
                     [float(cx.max()) + reach, float(cy.max()) + plan.lamina_offset + plan.spinous + 6, np.inf])
    if box is None:
        return
    x, y = box.x, box.y
    cx, cy = plan.centre(box.z)
    level = np.mod(box.z - plan.phase, plan.period) / plan.period
    disc_end = plan.disc / plan.period
    endplate = 1.5 / plan.period
    is_disc = level < disc_end
    is_endplate = ((level >= disc_end) & (level < disc_end + endplate)) | (level > 1 - endplate)

    # vertebral body (flattened behind) or disc
    dx, dy = x - cx, y - cy
    body = ((dx / plan.rx) ** 2 + (dy / plan.ry) ** 2 <= 1.0) & (dy <= 0.72 * plan.ry)
    c = plan.cortical
    core = ((dx / (plan.rx - c)) ** 2 + (dy / (plan.ry - c)) ** 2 <= 1.0) & (dy <= 0.72 * plan.ry - c) & ~is_endplate
    canvas.paint(box, body & is_disc, Tissue.DISC)
    _paint_bone(canvas, box, body & ~is_disc, core)

    # canal and neural arch
    canal_y = cy + np.float32(plan.canal_offset)
    distance = np.hypot(x - cx, y - canal_y)
    arch_present = (level >= disc_end + 0.12) & (level <= 0.85)
    middle = plan.canal + plan.arch / 2
    arch = (distance >= plan.canal) & (distance <= plan.canal + plan.arch) & (y - canal_y > -0.5 * plan.canal)
    _paint_bone(canvas, box, arch & arch_present, np.abs(distance - middle) < plan.arch / 2 - 1.2)

    # spinous process (slanting down: present from mid-vertebra to the disc below) and transverse processes
    root_y = canal_y + np.float32(plan.canal + plan.arch - 1.0)
    tip = (cx + np.float32(plan.spinous_tilt), root_y + np.float32(plan.spinous))
    spinous = _capsule_2d(x, y, (cx, root_y), tip)
    spinous_present = (level >= 0.3) | is_disc
    _paint_bone(canvas, box, (spinous <= plan.spinous_half) & spinous_present,
                spinous <= plan.spinous_half - 1.2)
    transverse_present = (level >= 0.4) & (level <= 0.68)
    for side in (-1.0, 1.0):
        root = (cx + np.float32(side * (plan.canal + 0.5 * plan.arch)), canal_y - np.float32(0.2 * plan.canal))
        end = (cx + np.float32(side * (plan.canal + plan.arch + plan.transverse)), canal_y + np.float32(6.0))
        process = _capsule_2d(x, y, root, end)
        _paint_bone(canvas, box, (process <= plan.transverse_half) & transverse_present,
                    process <= plan.transverse_half - 1.2)
    canvas.paint(box, distance < plan.canal, Tissue.CSF)


# ------------------------------------------------------------------------------------------ ribs

def paint_ribs(canvas: Canvas, plan: BodyPlan) -> None:
    """Each slice cuts every rib whose oblique course passes its height: small bony ovals in the wall."""
    ribs = plan.ribs
    dz = canvas.spacing[2]
    soft = CAVITY_FAT | {Tissue.WALL_MUSCLE, Tissue.MUSCLE}
    for z in canvas.axis_coordinates("z"):
        z = float(z)
        for side in (-1.0, 1.0):
            for j in range(ribs.count):
                back_end = ribs.z_lowest + j * ribs.spacing + (ribs.side_shift if side > 0 else 0.0)
                alpha = ribs.start + (back_end - z) / ribs.slope
                if z > back_end or alpha > ribs.reach[j]:
                    continue
                theta = np.pi / 2 - side * alpha
                wall = float(plan.wall_thickness(np.array([theta]), z)[0])
                r = float(plan.cavity_radius(np.array([theta]), z)[0]) + min(0.5 * wall, 8.0)
                cx, cy = r * np.cos(theta), r * np.sin(theta)
                half = ribs.tangent + 2
                box = canvas.box([cx - half, cy - half, z - dz / 2], [cx + half, cy + half, z + dz / 2])
                if box is None:
                    continue
                along = (box.x - cx) * -np.sin(theta) + (box.y - cy) * np.cos(theta)
                across = (box.x - cx) * np.cos(theta) + (box.y - cy) * np.sin(theta)
                c = ribs.cortical
                bone = (along / ribs.tangent) ** 2 + (across / ribs.radial) ** 2 <= 1.0
                core = (along / (ribs.tangent - c)) ** 2 + (across / (ribs.radial - c)) ** 2 <= 1.0
                canvas.paint(box, bone & ~core, Tissue.CORTICAL_BONE, into=soft)
                canvas.paint(box, bone & core, Tissue.CANCELLOUS_BONE, into=soft)


# ------------------------------------------------------------------------------------------ muscles

def paint_back_muscles(canvas: Canvas, plan: BodyPlan) -> None:
    """Erector spinae on both sides of the spinous processes, within the posterior band."""
    spine = plan.spine
    rx, ry = plan.erector
    zs = canvas.axis_coordinates("z")
    cx, cy = spine.centre(zs)
    for side in (-1.0, 1.0):
        mx = side * (spine.spinous_half + 2.0 + rx)
        box = canvas.box([float(cx.min()) + mx - rx - 1, float(cy.min()) + spine.lamina_offset - 2, -np.inf],
                         [float(cx.max()) + mx + rx + 1, float(cy.max()) + spine.lamina_offset + 2 * ry + 2, np.inf])
        if box is None:
            continue
        bx, by = spine.centre(box.z)
        ex, ey = bx + np.float32(mx), by + np.float32(spine.lamina_offset + 0.9 * ry)
        inside = ((box.x - ex) / rx) ** 2 + ((box.y - ey) / ry) ** 2 <= 1.0
        canvas.paint(box, inside, Tissue.MUSCLE, into=CAVITY_FAT | {Tissue.WALL_MUSCLE})


def paint_psoas(canvas: Canvas, plan: BodyPlan) -> None:
    """Psoas muscles beside the vertebral bodies, growing from nothing at ``psoas_top`` downwards."""
    spine = plan.spine
    top, largest = plan.psoas_top, plan.psoas_radius
    zs = canvas.axis_coordinates("z")
    cx, cy = spine.centre(zs)
    for side in (-1.0, 1.0):
        box = canvas.box([float(cx.min()) + (spine.rx - 4 if side > 0 else -spine.rx - 2.2 * largest - 4),
                          float(cy.min()) - largest - 4, -np.inf],
                         [float(cx.max()) + (spine.rx + 2.2 * largest + 4 if side > 0 else -spine.rx + 4),
                          float(cy.max()) + largest + 4, top])
        if box is None:
            continue
        bx, by = spine.centre(box.z)
        radius = largest * np.sqrt(np.clip((top - box.z) / 110.0, 0.0, 1.0)).astype(np.float32) + np.float32(1e-3)
        px = bx + np.float32(side) * (np.float32(spine.rx) + 0.85 * radius)
        py = by - np.float32(0.1 * spine.ry)
        inside = ((box.x - px) / radius) ** 2 + ((box.y - py) / (0.85 * radius)) ** 2 <= 1.0
        canvas.paint(box, inside, Tissue.MUSCLE, into=CAVITY_FAT)
