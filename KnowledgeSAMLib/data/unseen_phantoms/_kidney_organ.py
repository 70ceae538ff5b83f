"""One kidney of the unseen CT phantom as implicit surfaces in its own rotated frame.

Construction (why each piece, in anatomical terms):

* frame — axes ``u`` (long axis, upper pole), ``v`` (towards the hilum), ``w`` = ``u × v``; the kidney is
  tilted so its upper pole leans medially and posteriorly and turned so the hilum faces anteromedially;
* envelope — a *bent* ellipsoid (the poles curve towards the hilum side, giving the bean's concave medial
  border), tapered between the poles and lobulated by a few low-frequency ripples; its first-order
  distance ``(g − 1) / |∇g|`` gives millimetres to the capsule, used for the cortical rim;
* sinus — an ellipsoidal cavity displaced towards the hilum plus the channel through which it opens at
  the hilum; filled with sinus fat, with the renal pelvis, its infundibula and calyces inside;
* pyramids — tapered round cones from a papilla on the sinus surface to a base one cortical thickness
  below the capsule, arranged in an anterior and a posterior row along the lateral border, on the hilar
  lips and at the poles; where two cones meet, a band around their bisector (where the second-nearest
  cone is within a column gap of the nearest) stays cortex: the columns of Bertin;
* cortex — the parenchyma (envelope minus sinus) that is not medulla.

All random choices are drawn in :func:`draw_kidney` (millimetres, independent of the voxel grid);
:func:`paint_kidney` only rasterises them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._ct_canvas import Box, Canvas
from ._ct_tissues import CAVITY_FAT, SOFT, Tissue
from ._curves import axis_rotation

__all__ = ["Pyramid", "KidneyPlan", "draw_kidney", "paint_kidney"]


@dataclass(frozen=True)
class Pyramid:
    """A renal pyramid in kidney-frame millimetres: papilla (apex) and base centre with their radii."""

    apex: np.ndarray
    base: np.ndarray
    apex_radius: float
    base_radius: float


@dataclass(frozen=True)
class KidneyPlan:
    side: int  # +1: the patient's left kidney (x > 0), -1: the right one
    centre: np.ndarray  # x, y, z mm
    axes: np.ndarray  # rows: u, v, w unit vectors in the patient frame
    half_length: float
    half_width: float
    half_thickness: float
    bend: float  # medial curvature of the poles, fraction of the half width at the poles
    taper: float  # relative width change from the lower to the upper pole
    ripples: np.ndarray  # (k, 5): amplitude, frequency in u, v, w (per half axis), phase
    cortex_thickness: float
    sinus_offset: float  # sinus centre along v, mm
    sinus_axes: tuple[float, float, float]
    hilum_axes: tuple[float, float]  # half extents of the hilar opening along u and w, mm
    pyramids: tuple[Pyramid, ...]
    column_gap: float
    pelvis_axes: tuple[float, float, float]
    pelvis_offset: float
    calyx_radius: float
    fat_margin: float  # perirenal fat thickness around the capsule, mm
    medulla_gradient: float  # HU change from pyramid base to papilla (progressive enhancement)

    def to_patient(self, local: np.ndarray) -> np.ndarray:
        """Kidney-frame points (… × 3) to patient millimetres."""
        return self.centre + np.asarray(local) @ self.axes

    @property
    def anterior_sign(self) -> float:
        """+1 when +w points anteriorly (−y), else −1."""
        return 1.0 if self.axes[2, 1] < 0 else -1.0

    def half_extents(self) -> np.ndarray:
        """Half size of the kidney's axis-aligned bounding box in the patient frame (x, y, z), mm."""
        semi = np.array([self.half_length * 1.05, self.half_width * (1 + abs(self.taper)) + self.bend * self.half_width,
                         self.half_thickness])
        return np.sqrt(((self.axes * semi[:, None]) ** 2).sum(axis=0))

    def hilum_point(self, outside: float) -> np.ndarray:
        """Patient coordinates of a point on the hilum's axis, ``outside`` mm beyond the medial border."""
        return self.to_patient(np.array([0.0, self.half_width + outside, 0.0]))

    def sinus_point(self, u: float, v: float, w: float) -> np.ndarray:
        """Patient coordinates of a point given in sinus units (±1 reaches the sinus border)."""
        su, sv, sw = self.sinus_axes
        return self.to_patient(np.array([u * su, self.sinus_offset + v * sv, w * sw]))


def _frame(side: int, hilum_turn: float, coronal_tilt: float, sagittal_tilt: float) -> np.ndarray:
    e_u, e_v = np.array([0.0, 0.0, 1.0]), np.array([-float(side), 0.0, 0.0])
    e_w = np.cross(e_u, e_v)
    rotation = (axis_rotation(np.array([1.0, 0.0, 0.0]), -sagittal_tilt)
                @ axis_rotation(np.array([0.0, 1.0, 0.0]), -side * coronal_tilt)
                @ axis_rotation(np.array([0.0, 0.0, 1.0]), side * hilum_turn))
    return np.stack([rotation @ e_u, rotation @ e_v, rotation @ e_w])


def _pyramid_directions(rng: np.random.Generator) -> list[tuple[float, float]]:
    """(τ along the long axis, ψ around it; ψ = 0 faces the hilum) of each pyramid: an anterior and a
    posterior row along the lateral border (sometimes fused into one lateral pyramid), pyramids on the
    front and back lips beside the hilum, medial ones above and below it, and a compound pyramid at each pole."""
    u = rng.uniform
    rows = int(rng.integers(4, 7))
    directions = []
    for tau in np.linspace(-0.7, 0.7, rows) + u(-0.05, 0.05, rows):
        if rng.random() < 0.25:
            directions.append((tau, np.pi + u(-0.2, 0.2)))
        else:
            directions += [(tau, np.pi - u(0.5, 0.85)), (tau, -np.pi + u(0.5, 0.85))]
        if abs(tau) < 0.5 and rng.random() < 0.5:
            directions.append((tau, float(rng.choice([-1.0, 1.0])) * u(1.45, 1.85)))
        if abs(tau) >= 0.4 and rng.random() < 0.75:  # above and below the hilum, medially
            directions.append((tau, float(rng.choice([-1.0, 1.0])) * u(0.1, 0.9)))
    directions += [(u(0.82, 0.9), np.pi + u(-0.4, 0.4)), (-u(0.82, 0.9), np.pi + u(-0.4, 0.4))]
    return directions


def _place_pyramids(rng: np.random.Generator, length: float, width: float, thickness: float, bend: float,
                    cortex: float, sinus_offset: float, sinus_axes: tuple[float, float, float]) -> tuple[Pyramid, ...]:
    """Each pyramid runs from a papilla on the sinus surface to a base one cortical thickness below the capsule."""
    su, sv, sw = sinus_axes
    chosen: list[Pyramid] = []
    for tau, psi in _pyramid_directions(rng):
        ring = np.sqrt(1.0 - tau * tau)
        outer = np.array([tau * length, bend * width * tau * tau + width * ring * np.cos(psi),
                          thickness * ring * np.sin(psi)])
        inner = np.array([tau * su, sinus_offset + sv * ring * np.cos(psi), sw * ring * np.sin(psi)])
        span = outer - inner
        depth = float(np.linalg.norm(span))
        apex_shift, base_shift = rng.uniform(0.0, 1.5), rng.uniform(0.0, 2.0)
        base_radius = float(np.clip(rng.uniform(1.0, 1.4) * (depth - cortex), 8.0, 22.0))
        apex_radius = float(rng.uniform(2.0, 3.5))
        if depth < cortex + 5.0:
            continue
        axis = span / depth
        chosen.append(Pyramid(apex=inner + axis * apex_shift, base=inner + axis * (depth - cortex + base_shift),
                              apex_radius=apex_radius, base_radius=base_radius))
    return tuple(chosen)


def draw_kidney(rng: np.random.Generator, side: int, centre: np.ndarray, *, length: float | None = None) -> KidneyPlan:
    """A kidney's size, orientation, internal architecture and enhancement gradient (mm, radians)."""
    u = rng.uniform
    half_length = length / 2 if length is not None else u(48, 62)
    half_width = u(0.48, 0.58) * half_length
    half_thickness = u(0.33, 0.4) * half_length
    axes = _frame(side, hilum_turn=np.radians(u(20, 45)), coronal_tilt=np.radians(u(5, 22)),
                  sagittal_tilt=np.radians(u(5, 20)))
    bend = u(0.12, 0.32)
    cortex = u(4.5, 7.5)
    sinus_offset = u(0.25, 0.38) * half_width
    sinus_axes = (u(0.6, 0.72) * half_length, u(0.42, 0.52) * half_width, u(0.4, 0.5) * half_thickness)
    gap = u(3.0, 5.5)
    pyramids = _place_pyramids(rng, half_length, half_width, half_thickness, bend, cortex, sinus_offset, sinus_axes)
    ripples = np.column_stack([u(0.008, 0.025, 4), u(1.5, 4.0, 4), u(1.0, 3.0, 4), u(1.0, 3.0, 4),
                               u(0, 2 * np.pi, 4)])
    return KidneyPlan(
        side=side, centre=np.asarray(centre, dtype=float), axes=axes, half_length=half_length, half_width=half_width,
        half_thickness=half_thickness, bend=bend, taper=u(-0.08, 0.14), ripples=ripples, cortex_thickness=cortex,
        sinus_offset=sinus_offset, sinus_axes=sinus_axes,
        hilum_axes=(u(0.24, 0.34) * half_length, u(0.42, 0.55) * half_thickness), pyramids=pyramids,
        column_gap=gap, pelvis_axes=(u(0.18, 0.28) * half_length, u(0.22, 0.32) * half_width,
                                     u(0.2, 0.3) * half_thickness),
        pelvis_offset=sinus_offset + u(0.25, 0.45) * sinus_axes[1], calyx_radius=u(2.5, 4.0),
        fat_margin=u(5, 16), medulla_gradient=u(-12, 12))


def _local(plan: KidneyPlan, box: Box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kidney-frame coordinates (u, v, w) of a box's voxels."""
    cx, cy, cz = (np.float32(c) for c in plan.centre)
    dx, dy, dz = box.x - cx, box.y - cy, box.z - cz
    a = plan.axes.astype(np.float32)
    return tuple(a[k, 0] * dx + a[k, 1] * dy + a[k, 2] * dz for k in range(3))  # type: ignore[return-value]


def _envelope(plan: KidneyPlan, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Implicit envelope value ``g`` (1 on the capsule) and the approximate signed distance (mm)."""
    L, T = plan.half_length, plan.half_thickness
    un = u * (1.0 / L)
    width = plan.half_width * (1.0 + plan.taper * np.clip(un, -1, 1))
    vb = v - plan.bend * plan.half_width * un * un
    vn = vb / width
    wn = w * (1.0 / T)
    g = np.sqrt(un * un + vn * vn + wn * wn)
    ripple = 0.0
    for amp, fu, fv, fw, phase in plan.ripples:
        ripple = ripple + amp * np.sin(fu * un + fv * vn + fw * wn + phase)
    g = g * (1.0 + ripple)
    gradient = np.sqrt((un / L) ** 2 + (vn / width) ** 2 + (wn / T) ** 2) / np.maximum(g, 1e-3)
    return g, (g - 1.0) / np.maximum(gradient, 1e-4)


def _sinus(plan: KidneyPlan, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
    su, sv, sw = plan.sinus_axes
    hu, hw = plan.hilum_axes
    cavity = (u / su) ** 2 + ((v - plan.sinus_offset) / sv) ** 2 + (w / sw) ** 2 <= 1.0
    channel = (v > plan.sinus_offset) & ((u / hu) ** 2 + (w / hw) ** 2 <= 1.0)
    return cavity | channel


def _cone_distance(p: Pyramid, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Approximate distance (mm) to a tapered round cone and the position along its axis (0 papilla, 1 base)."""
    axis = (p.base - p.apex).astype(np.float32)
    length2 = float(np.sum(axis.astype(np.float64) ** 2))
    du, dv, dw = u - np.float32(p.apex[0]), v - np.float32(p.apex[1]), w - np.float32(p.apex[2])
    t = np.clip((du * axis[0] + dv * axis[1] + dw * axis[2]) * (1.0 / length2), 0.0, 1.0)
    ru, rv, rw = du - t * axis[0], dv - t * axis[1], dw - t * axis[2]
    radius = p.apex_radius + t * (p.base_radius - p.apex_radius)
    return np.sqrt(ru * ru + rv * rv + rw * rw) - radius, t


def paint_kidney(canvas: Canvas, plan: KidneyPlan) -> None:
    """Paint perirenal fat, cortex, medulla, sinus fat and the collecting system of one kidney."""
    reach = plan.half_extents() + plan.fat_margin + 2.0
    box = canvas.box(plan.centre - reach, plan.centre + reach)
    if box is None:
        return
    u, v, w = _local(plan, box)
    g, distance = _envelope(plan, u, v, w)
    canvas.paint(box, (distance < plan.fat_margin) & (g > 1.0), Tissue.PERIRENAL_FAT, into=CAVITY_FAT)
    inside = g <= 1.0
    sinus = inside & _sinus(plan, u, v, w)
    parenchyma = inside & ~sinus
    nearest = np.full(box.shape, 1e6, dtype=np.float32)
    second = np.full(box.shape, 1e6, dtype=np.float32)
    position = np.zeros(box.shape, dtype=np.float32)
    for pyramid in plan.pyramids:
        ends = np.stack([pyramid.apex, pyramid.base])
        corners = plan.to_patient(ends)
        margin = pyramid.base_radius + plan.column_gap + 1.0
        sub = canvas.inner(box, corners.min(axis=0) - margin, corners.max(axis=0) + margin)
        if sub is None:
            continue
        local, _ = sub
        d, t = _cone_distance(pyramid, u[local], v[local], w[local])
        best, runner_up, where = nearest[local], second[local], position[local]
        closer = d < best
        runner_up[...] = np.where(closer, best, np.minimum(runner_up, d))
        where[...] = np.where(closer, t, where)
        best[...] = np.minimum(best, d)
    deep = distance < -plan.cortex_thickness
    medulla = parenchyma & (nearest < 0) & (second - nearest > plan.column_gap) & deep
    into = SOFT | {Tissue.CORTEX, Tissue.MEDULLA, Tissue.SINUS_FAT}
    canvas.paint(box, sinus, Tissue.SINUS_FAT, into=into)
    canvas.paint(box, parenchyma & ~medulla, Tissue.CORTEX, into=into)
    painted = canvas.paint(box, medulla, Tissue.MEDULLA, into=into)
    # progressive enhancement along each pyramid, from papilla (position 0) to base (1)
    canvas.adjust(box, np.where(painted, (1.0 - position) * np.float32(plan.medulla_gradient), 0.0))
    _paint_collecting_system(canvas, plan, box, u, v, w, sinus)


def _paint_collecting_system(canvas: Canvas, plan: KidneyPlan, box: Box, u: np.ndarray, v: np.ndarray,
                             w: np.ndarray, sinus: np.ndarray) -> None:
    """Renal pelvis, infundibula and calyces (urine), only inside the sinus."""
    pu, pv, pw = plan.pelvis_axes
    pelvis = (u / pu) ** 2 + ((v - plan.pelvis_offset) / pv) ** 2 + (w / pw) ** 2 <= 1.0
    canvas.paint(box, sinus & pelvis, Tissue.URINE, into={Tissue.SINUS_FAT})
    centre = plan.to_patient(np.array([0.0, plan.pelvis_offset, 0.0]))
    for pyramid in plan.pyramids:
        papilla = plan.to_patient(pyramid.apex)
        tube = canvas.tube_field(np.stack([centre, papilla]), np.array([1.6, plan.calyx_radius]), margin=1.0)
        if tube is None:
            continue
        tube_box, field = tube
        canvas.paint(tube_box, field < 0, Tissue.URINE, into={Tissue.SINUS_FAT})
