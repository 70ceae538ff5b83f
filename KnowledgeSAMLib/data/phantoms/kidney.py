"""A procedural contrast-enhanced CT of the abdomen at kidney level, with renal artery, medulla and cortex.

Why: no public CT dataset labels renal cortex and medulla (the KSAM paper's KAS data is private), yet
the engine, training and evaluation need a 3D task where *nested and adjacent* structures must be told
apart by a reference mask: the cortex wraps the medullary pyramids and reaches between them (columns of
Bertin), and the renal artery runs from the aorta (not labelled) through the hilum into the sinus and on
into the columns. A point prompt cannot say which of the three is meant; a reference mask can.

What varies per seed (so that a model cannot memorise cases): body size, fat, pose of the whole body,
each kidney's size, position and 3D orientation, the number/size/layout of pyramids, cortex thickness,
sinus size, the artery path, the contrast phase (artery, cortex, medulla and vein HU), organ HUs and
textures, bowel loops with fluid and gas, noise level, blur and a smooth bias field; in about a third of
the cases one kidney is damaged (a cyst, a tumour, or atrophy) as in the KAS data. The HU ordering that
makes the task solvable is kept: artery > cortex > medulla (corticomedullary phase).

Coordinates: array ``(z, y, x)``, LPS millimetres: +x = patient left, +y = posterior, +z = superior;
the grid is centred on the origin with identity direction. Anatomy is sized relative to the in-plane field
of view, so any ``shape``/``spacing`` gives a complete (if scaled) abdomen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..volume import Geometry, Image, Labels, Segment
from ._fields import bezier, gaussian_blur, smooth_noise, tube_mask
from .kidney_anatomy import ANATOMY, ANATOMY_SEGMENTS, apply_phase, phase_of

__all__ = ["make_kidney_phantom", "kidney_phantom_case", "KidneyCase", "KIDNEY_SEGMENTS", "KidneyPhantomConfig"]

ARTERY, MEDULLA, CORTEX = 1, 2, 3
KIDNEY_SEGMENTS: tuple[Segment, ...] = (
    Segment("artery", ARTERY, 0, (0.86, 0.16, 0.16)),
    Segment("medulla", MEDULLA, 0, (0.98, 0.78, 0.30)),
    Segment("cortex", CORTEX, 0, (0.55, 0.35, 0.80)),
)


@dataclass(frozen=True)
class KidneyPhantomConfig:
    """Defaults of the generator (ranges are sampled per case)."""

    shape: tuple[int, int, int] = (40, 128, 128)  # (z, y, x)
    spacing: tuple[float, float, float] = (1.5, 1.5, 3.0)  # (x, y, z) mm
    damage_probability: float = 0.35


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


@dataclass
class _Tissues:
    """HU values of one case (the contrast phase sets the vessel/kidney ones)."""

    air: float
    fat: float
    muscle: float
    bone_cortex: float
    bone_marrow: float
    disc: float
    csf: float
    liver: float
    spleen: float
    bowel_wall: float
    artery: float
    vein: float
    cortex: float
    medulla: float
    sinus_fat: float
    urine: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "_Tissues":
        phase = _uniform(rng, 0.0, 1.0)  # 0 = early arterial, 1 = late corticomedullary
        cortex = _uniform(rng, 140.0, 210.0) + 20 * phase
        medulla = cortex - _uniform(rng, 70.0, 130.0) * (1.0 - 0.2 * phase)
        return cls(
            air=-1000.0,
            fat=_uniform(rng, -120.0, -80.0),
            muscle=_uniform(rng, 40.0, 65.0),
            bone_cortex=_uniform(rng, 550.0, 950.0),
            bone_marrow=_uniform(rng, 150.0, 300.0),
            disc=_uniform(rng, 70.0, 100.0),
            csf=_uniform(rng, 0.0, 15.0),
            liver=_uniform(rng, 55.0, 110.0) + 20 * phase,
            spleen=_uniform(rng, 95.0, 160.0),
            bowel_wall=_uniform(rng, 70.0, 130.0),
            artery=cortex + _uniform(rng, 120.0, 260.0) * (1.0 - 0.3 * phase),
            vein=_uniform(rng, 50.0, 110.0) + 60 * phase,
            cortex=cortex,
            medulla=max(medulla, 25.0),
            sinus_fat=_uniform(rng, -110.0, -60.0),
            urine=_uniform(rng, 0.0, 20.0),
        )


class _Canvas:
    """The HU volume and labels being painted, with world coordinates (mm, image frame)."""

    def __init__(self, shape: tuple[int, int, int], spacing_xyz: tuple[float, float, float]) -> None:
        self.shape = shape
        self.spacing = np.asarray(spacing_xyz, dtype=float)
        nz, ny, nx = shape
        sx, sy, sz = self.spacing
        self.x = ((np.arange(nx) - (nx - 1) / 2) * sx).astype(np.float32)
        self.y = ((np.arange(ny) - (ny - 1) / 2) * sy).astype(np.float32)
        self.z = ((np.arange(nz) - (nz - 1) / 2) * sz).astype(np.float32)
        self.hu = np.zeros(shape, dtype=np.float32)
        self.labels = np.zeros(shape, dtype=np.uint8)
        self.anatomy = np.zeros(shape, dtype=np.uint8)  # the organ each voxel shows (kidney_anatomy.ANATOMY)

    @property
    def coords(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.z[:, None, None], self.y[None, :, None], self.x[None, None, :]

    def index_box(self, centre: np.ndarray, radius: float) -> tuple[slice, slice, slice]:
        """Index slices ``(z, y, x)`` of the voxels within ``radius`` mm (per axis) of ``centre`` (x, y, z)."""
        out = []
        for axis, coords in ((2, self.z), (1, self.y), (0, self.x)):
            step = self.spacing[axis]
            lo = int(np.floor((centre[axis] - radius - coords[0]) / step))
            hi = int(np.ceil((centre[axis] + radius - coords[0]) / step)) + 1
            out.append(slice(max(lo, 0), max(min(hi, coords.size), 0)))
        return tuple(out)  # type: ignore[return-value]


@dataclass(frozen=True)
class KidneyCase:
    """A phantom with what was drawn: ``damage`` is None or (side, kind) with side -1 = right kidney."""

    image: Image
    labels: Labels
    damage: tuple[int, str] | None
    tissue_hu: dict[str, float]


def make_kidney_phantom(seed: int, shape: tuple[int, int, int] = KidneyPhantomConfig.shape,
                        spacing: tuple[float, float, float] = KidneyPhantomConfig.spacing,
                        damage_probability: float = KidneyPhantomConfig.damage_probability,
                        anatomy: bool = False, phase: str = "corticomedullary") -> tuple[Image, Labels]:
    """One phantom case: an int16 HU :class:`Image` and :class:`Labels` with segments ``artery`` = 1,
    ``medulla`` = 2, ``cortex`` = 3 on one layer. Deterministic for a given seed, shape and spacing.

    ``anatomy``: a second layer with the other organs (:data:`.kidney_anatomy.ANATOMY_SEGMENTS`); ``phase``: the
    contrast phase (:data:`.kidney_anatomy.PHASES`; outside the corticomedullary phase the artery, medulla and
    cortex segments are left out, the layer stays)."""
    case = kidney_phantom_case(seed, shape, spacing, damage_probability, anatomy, phase)
    return case.image, case.labels


def kidney_phantom_case(seed: int, shape: tuple[int, int, int] = KidneyPhantomConfig.shape,
                        spacing: tuple[float, float, float] = KidneyPhantomConfig.spacing,
                        damage_probability: float = KidneyPhantomConfig.damage_probability,
                        anatomy: bool = False, phase: str = "corticomedullary") -> KidneyCase:
    """:func:`make_kidney_phantom` plus the drawn damage and tissue HU values (for tests and demos)."""
    drawn_phase = phase_of(seed, phase)
    if phase != "corticomedullary" and not anatomy:  # "random" too: some of its cases would have no labels
        raise ValueError(f"a kidney phantom in phase {phase!r} needs anatomy=True: outside the corticomedullary "
                         "phase artery, medulla and cortex are not labelled, and nothing else would be")
    shape = tuple(int(s) for s in shape)  # type: ignore[assignment]
    if len(shape) != 3 or min(shape) < 1 or min(shape[1:]) < 16:
        raise ValueError(f"kidney phantom shape must be (z, y, x) with y, x >= 16; got {shape}")
    rng = np.random.default_rng(seed)
    canvas = _Canvas(shape, spacing)
    tissues = _Tissues.sample(rng)
    kidney_labels_kept = apply_phase(tissues, seed, drawn_phase)  # its own random stream: rng is untouched
    scale = 0.5 * min(shape[2] * canvas.spacing[0], shape[1] * canvas.spacing[1])  # mm per anatomy unit

    body = _Body.sample(rng, scale)
    body.paint(canvas, tissues, rng)
    damaged = int(rng.integers(0, 2)) if rng.random() < damage_probability else -1
    damage = str(rng.choice(["cyst", "tumour", "atrophy"]))
    for index, side in enumerate((-1, 1)):  # right (patient right = -x), then left kidney
        kidney = _Kidney.sample(rng, side, body, scale, canvas, damage if index == damaged else None)
        kidney.paint(canvas, tissues, body, rng)
    drawn_damage = ((-1, 1)[damaged], damage) if damaged >= 0 else None

    hu = _acquire(canvas.hu, rng, canvas)
    geometry = Geometry(spacing=tuple(canvas.spacing),
                        origin=(float(canvas.x[0]), float(canvas.y[0]), float(canvas.z[0])))
    image = Image(array=hu, geometry=geometry, source=f"kidney phantom seed {seed}")
    segments = [Segment(s.name, s.label_value, s.layer, s.color) for s in KIDNEY_SEGMENTS] if kidney_labels_kept else []
    layers = canvas.labels[None].copy() if kidney_labels_kept else np.zeros_like(canvas.labels)[None]
    if anatomy:
        layers = np.concatenate([layers, canvas.anatomy[None]])
        segments += [Segment(s.name, s.label_value, s.layer, s.color) for s in ANATOMY_SEGMENTS]
    labels = Labels(layers=layers, geometry=geometry, segments=segments, source=f"kidney phantom seed {seed}")
    return KidneyCase(image, labels, drawn_damage, dict(vars(tissues)))


def _acquire(hu: np.ndarray, rng: np.random.Generator, canvas: _Canvas) -> np.ndarray:
    """Scanner effects: point-spread blur (partial volume), smooth bias, correlated noise; int16 HU."""
    sx, sy, sz = canvas.spacing
    psf_mm = _uniform(rng, 0.6, 1.2)
    blurred = gaussian_blur(hu, (psf_mm * 0.9 / sz, psf_mm / sy, psf_mm / sx))
    bias = smooth_noise(rng, hu.shape, (hu.shape[0] / 2, hu.shape[1] / 3, hu.shape[2] / 3))
    blurred += _uniform(rng, 0.0, 18.0) * bias * (blurred > -500)
    noise = gaussian_blur(rng.standard_normal(hu.shape).astype(np.float32), (0.0, 0.6, 0.6))
    noise *= _uniform(rng, 6.0, 20.0) / max(float(noise.std()), 1e-6)
    return np.clip(np.rint(blurred + noise), -1024, 3071).astype(np.int16)


def _kidney_side(anatomy: np.ndarray, side: int) -> np.ndarray:
    return anatomy == ANATOMY["kidney_right" if side < 0 else "kidney_left"]


def _ellipse(a: np.ndarray, b: np.ndarray, ra: float, rb: float) -> np.ndarray:
    return (a / ra) ** 2 + (b / rb) ** 2


@dataclass
class _Body:
    """The body cross-section in its own frame (rotated by ``angle`` and shifted by ``shift`` in-plane)."""

    scale: float
    angle: float
    shift: np.ndarray
    semi: tuple[float, float]
    fat: float
    wall: float
    spine_y: float
    vertebra_r: float
    aorta: np.ndarray  # (x, y) in the body frame, mm
    aorta_r: float
    ivc: np.ndarray
    ivc_semi: tuple[float, float]

    @classmethod
    def sample(cls, rng: np.random.Generator, scale: float) -> "_Body":
        semi = (_uniform(rng, 0.80, 0.95) * scale, _uniform(rng, 0.62, 0.76) * scale)
        spine_y = semi[1] * _uniform(rng, 0.42, 0.52)
        vertebra_r = _uniform(rng, 0.12, 0.15) * scale
        aorta_r = _uniform(rng, 0.065, 0.09) * scale
        aorta = np.array([_uniform(rng, 0.02, 0.08) * scale, spine_y - vertebra_r - aorta_r - 0.03 * scale])
        ivc = np.array([-_uniform(rng, 0.13, 0.19) * scale, spine_y - vertebra_r - 0.07 * scale])
        return cls(scale=scale, angle=np.deg2rad(_uniform(rng, -8, 8)),
                   shift=rng.uniform(-0.05, 0.05, 2) * scale, semi=semi,
                   fat=_uniform(rng, 0.04, 0.13) * scale, wall=_uniform(rng, 0.025, 0.045) * scale,
                   spine_y=spine_y, vertebra_r=vertebra_r, aorta=aorta, aorta_r=aorta_r, ivc=ivc,
                   ivc_semi=(_uniform(rng, 0.07, 0.1) * scale, _uniform(rng, 0.045, 0.065) * scale))

    def to_image(self, point: np.ndarray) -> np.ndarray:
        """(x, y, z) in the body frame -> image frame (mm)."""
        c, s = np.cos(self.angle), np.sin(self.angle)
        x, y = point[..., 0], point[..., 1]
        return np.stack([c * x - s * y + self.shift[0], s * x + c * y + self.shift[1], point[..., 2]], axis=-1)

    def rotate(self, vector: np.ndarray) -> np.ndarray:
        c, s = np.cos(self.angle), np.sin(self.angle)
        return np.array([c * vector[0] - s * vector[1], s * vector[0] + c * vector[1], vector[2]])

    def frame(self, canvas: _Canvas) -> tuple[np.ndarray, np.ndarray]:
        """Body-frame in-plane coordinates (y, x) 2D arrays of the image grid."""
        c, s = np.cos(self.angle), np.sin(self.angle)
        dx = canvas.x[None, :] - self.shift[0]
        dy = canvas.y[:, None] - self.shift[1]
        return c * dx + s * dy, -s * dx + c * dy

    def paint(self, canvas: _Canvas, t: _Tissues, rng: np.random.Generator) -> None:
        k = self.scale
        bx, by = self.frame(canvas)
        z = canvas.z[:, None, None]
        hu = canvas.hu
        hu[:] = t.air
        outline = _ellipse(bx, by, *self.semi)
        inner = _ellipse(bx, by, self.semi[0] - self.fat, self.semi[1] - self.fat)
        cavity = _ellipse(bx, by, self.semi[0] - self.fat - self.wall, self.semi[1] - self.fat - self.wall)
        texture = smooth_noise(rng, canvas.shape, (2.0, 6.0, 6.0))
        hu[:, outline < 1] = t.fat
        hu[:, inner < 1] = t.muscle
        hu[:, cavity < 1] = t.fat + 8.0  # visceral fat
        hu += (outline < 1) * texture * 6.0

        def put(mask: np.ndarray, value: float, jitter: float = 0.0, organ: str | None = None) -> None:
            mask = np.broadcast_to(mask, canvas.shape)
            hu[mask] = value + (texture[mask] * jitter if jitter else 0.0)
            canvas.anatomy[mask] = ANATOMY[organ] if organ else 0  # what is painted over is no longer that organ

        # Liver (right, upper) and spleen (left, posterior, upper), textured.
        top = float(canvas.z[-1]) if canvas.z.size > 1 else 0.0
        liver_z = top * _uniform(rng, 0.6, 1.3) + 0.2 * k
        liver = (_ellipse(bx + _uniform(rng, 0.35, 0.5) * k, by + _uniform(rng, 0.0, 0.15) * k,
                          _uniform(rng, 0.42, 0.55) * k, _uniform(rng, 0.45, 0.6) * k)
                 + ((z - liver_z) / (_uniform(rng, 0.55, 0.8) * k)) ** 2) < 1
        put(liver & (cavity < 1), t.liver, 8.0, "liver")
        spleen = (_ellipse(bx - _uniform(rng, 0.55, 0.68) * k, by - _uniform(rng, 0.1, 0.3) * k,
                           _uniform(rng, 0.12, 0.17) * k, _uniform(rng, 0.2, 0.28) * k)
                  + ((z - top * _uniform(rng, 0.5, 1.2) - 0.1 * k) / (_uniform(rng, 0.3, 0.45) * k)) ** 2) < 1
        put(spleen & (cavity < 1), t.spleen, 12.0, "spleen")

        # Bowel loops in front of the spine: enhancing wall, fluid content, sometimes gas on top.
        for _ in range(int(rng.integers(5, 10))):
            centre = np.array([_uniform(rng, -0.55, 0.55) * k, _uniform(rng, -0.55, 0.1) * k,
                               _uniform(rng, -1.0, 1.0) * max(top, 1.0)])
            semi = rng.uniform(0.06, 0.15, 3) * k
            r = (((bx - centre[0]) / semi[0]) ** 2 + ((by - centre[1]) / semi[1]) ** 2
                 + ((z - centre[2]) / semi[2]) ** 2)
            inside = (r < 1) & (cavity < 1)
            put(inside, t.bowel_wall, 6.0, "bowel")
            put(inside & (r < 0.7), _uniform(rng, -30.0, 40.0), 5.0, "bowel")
            if rng.random() < 0.35:
                put(inside & (r < 0.7) & (by < centre[1] - 0.2 * semi[1]), _uniform(rng, -950.0, -700.0), organ="bowel")

        # Spine: vertebral bodies with discs, canal, posterior elements; psoas and back muscles.
        vr = self.vertebra_r
        period = _uniform(rng, 0.28, 0.36) * k
        is_disc = ((z - _uniform(rng, 0, period)) % period) < 0.18 * period
        body_r = _ellipse(bx, by - self.spine_y, vr, vr * 0.9)
        psoas_grow = 1.0 + 0.25 * np.clip(-z / max(top, 1.0), -1, 1)
        for sign in (-1, 1):
            put(_ellipse(bx - sign * (vr + 0.08 * k), by - self.spine_y + 0.02 * k,
                         0.08 * k * psoas_grow, 0.09 * k * psoas_grow) < 1, t.muscle, 5.0)
            put(_ellipse(bx - sign * 0.17 * k, by - self.spine_y - vr - 0.2 * k, 0.11 * k, 0.1 * k) < 1,
                t.muscle, 5.0)
            put((_ellipse(bx - sign * 0.15 * k, by - self.spine_y - vr - 0.04 * k, 0.1 * k, 0.03 * k) < 1)
                & ~is_disc, t.bone_cortex * 0.8, organ="vertebra")
        put(body_r < 1, t.bone_cortex, organ="vertebra")
        put((body_r < (1 - 0.18) ** 2) & ~is_disc, t.bone_marrow, 15.0, "vertebra")
        put((body_r < 1) & is_disc, t.disc)  # intervertebral disc: not bone
        put(_ellipse(bx, by - self.spine_y - vr - 0.2 * k, 0.05 * k, 0.1 * k) < 1, t.bone_cortex * 0.85,
            organ="vertebra")
        put(_ellipse(bx, by - self.spine_y - vr - 0.07 * k, 0.055 * k, 0.05 * k) < 1, t.csf)

        # Great vessels: aorta (same HU as the renal arteries; no kidney label, an anatomy one) and IVC.
        put(_ellipse(bx - self.aorta[0], by - self.aorta[1], self.aorta_r, self.aorta_r) < 1, t.artery, 4.0, "aorta")
        put(_ellipse(bx - self.ivc[0], by - self.ivc[1], *self.ivc_semi) < 1, t.vein, 4.0, "inferior_vena_cava")


@dataclass
class _Kidney:
    centre: np.ndarray  # image frame, mm (x, y, z)
    axes: np.ndarray  # rows: u (long axis), v (towards the hilum), w (u × v), image frame
    semi: np.ndarray  # (a, b, c) mm along u, v, w
    side: int
    cortex_mm: float
    sinus_centre_v: float
    sinus_semi: np.ndarray
    pyramids: list[tuple[float, float, float, float]]  # (theta, psi, half theta, half psi)
    damage: str | None
    damage_centre: np.ndarray | None
    damage_radius: float

    @classmethod
    def sample(cls, rng: np.random.Generator, side: int, body: _Body, k: float, canvas: _Canvas,
               damage: str | None) -> "_Kidney":
        top = float(canvas.z[-1]) if canvas.z.size > 1 else 0.0
        size = _uniform(rng, 0.85, 1.15) * (rng.uniform(0.65, 0.8) if damage == "atrophy" else 1.0)
        semi = np.array([_uniform(rng, 0.27, 0.34), _uniform(rng, 0.14, 0.17), _uniform(rng, 0.11, 0.14)]) * k * size
        z = _uniform(rng, -0.3, 0.3) * top + (0.06 * k if side > 0 else -0.02 * k)
        centre_body = np.array([side * _uniform(rng, 0.40, 0.52) * k,
                                body.spine_y + _uniform(rng, -0.08, 0.04) * k, z])
        medial = np.array([-side, 0.0, 0.0])
        anterior = np.array([0.0, -1.0, 0.0])
        phi = np.deg2rad(_uniform(rng, 15, 45))
        v0 = np.cos(phi) * medial + np.sin(phi) * anterior
        tilt_medial, tilt_posterior = np.deg2rad(_uniform(rng, 5, 20)), np.deg2rad(_uniform(rng, 5, 20))
        u = np.array([0.0, 0.0, 1.0]) + np.tan(tilt_medial) * medial + np.tan(tilt_posterior) * np.array([0, 1.0, 0])
        u /= np.linalg.norm(u)
        v = v0 - (v0 @ u) * u
        v /= np.linalg.norm(v)
        w = np.cross(u, v)
        jitter = _rotation(rng.normal(size=3), np.deg2rad(_uniform(rng, 0, 10)))
        axes = np.stack([body.rotate(jitter @ a) for a in (u, v, w)])
        centre = body.to_image(centre_body)

        rows = 2 if rng.random() < 0.85 else 1
        per_row = int(rng.integers(3, 6))
        theta_max = np.deg2rad(_uniform(rng, 95, 115))
        psi0 = np.deg2rad(_uniform(rng, 24, 34)) if rows == 2 else 0.0
        pyramids = []
        for row in range(rows):
            thetas = np.linspace(-theta_max, theta_max, per_row)
            spacing = thetas[1] - thetas[0]
            if row == 1:
                thetas = thetas + spacing * _uniform(rng, -0.5, 0.5)
            for theta in thetas:
                psi = (psi0 if row == 0 else -psi0) + np.deg2rad(_uniform(rng, -5, 5))
                pyramids.append((theta + np.deg2rad(_uniform(rng, -6, 6)), psi,
                                 spacing * _uniform(rng, 0.4, 0.47),
                                 (psi0 * _uniform(rng, 0.85, 1.0)) if rows == 2 else np.deg2rad(_uniform(rng, 40, 55))))
        damage_centre, damage_radius = None, 0.0
        if damage in ("cyst", "tumour"):
            direction = rng.normal(size=3) * np.array([1.0, 0.4, 1.0]) - np.array([0, 0.6, 0])
            direction /= np.linalg.norm(direction)
            depth = _uniform(rng, 0.6, 1.05)
            damage_centre = direction * depth  # in units of the semi-axes (local frame)
            damage_radius = _uniform(rng, 0.35, 0.6) * semi[1] * (1.3 if damage == "tumour" else 1.0)
        return cls(centre=centre, axes=axes, semi=semi, side=side,
                   cortex_mm=_uniform(rng, 0.17, 0.26) * semi[2] * (0.75 if damage == "atrophy" else 1.0),
                   sinus_centre_v=_uniform(rng, 0.6, 0.72),
                   sinus_semi=np.array([_uniform(rng, 0.33, 0.5), _uniform(rng, 0.4, 0.5), _uniform(rng, 0.33, 0.48)]),
                   pyramids=pyramids, damage=damage, damage_centre=damage_centre, damage_radius=damage_radius)

    def point(self, xi: np.ndarray) -> np.ndarray:
        """Local normalised coordinates (u/a, v/b, w/c) -> image frame mm."""
        return self.centre + (np.asarray(xi) * self.semi) @ self.axes

    def paint(self, canvas: _Canvas, t: _Tissues, body: _Body, rng: np.random.Generator) -> None:
        cortex_hu, medulla_hu = t.cortex, t.medulla
        if self.damage == "atrophy":  # poorer enhancement, but still corticomedullary differentiation
            cortex_hu, medulla_hu = cortex_hu - 25.0, medulla_hu - 10.0
        self._paint_vein(canvas, t, body, rng)

        box = canvas.index_box(self.centre, float(self.semi.max()) * 1.05)
        zc, yc, xc = canvas.coords
        d = (xc[..., box[2]] - self.centre[0], yc[:, box[1]] - self.centre[1], zc[box[0]] - self.centre[2])
        local = [(d[0] * ax[0] + d[1] * ax[1] + d[2] * ax[2]) / s for ax, s in zip(self.axes, self.semi)]
        xi_u, xi_v, xi_w = local
        r2 = xi_u ** 2 + xi_v ** 2 + xi_w ** 2
        grad = np.sqrt((xi_u / self.semi[0]) ** 2 + (xi_v / self.semi[1]) ** 2 + (xi_w / self.semi[2]) ** 2)
        depth = (1.0 - r2) / (2.0 * np.maximum(grad, 1e-6))  # ≈ mm below the surface, near the surface
        kidney = r2 < 1.0
        sinus = (((xi_u / self.sinus_semi[0]) ** 2 + ((xi_v - self.sinus_centre_v) / self.sinus_semi[1]) ** 2
                  + (xi_w / self.sinus_semi[2]) ** 2) < 1.0)
        parenchyma = kidney & ~sinus

        # Medullary pyramids: angular sectors around a point towards the hilum, below the cortex shell.
        e_u, e_v, e_w = xi_u, xi_v - 0.25, xi_w
        radius = np.sqrt(e_u ** 2 + e_v ** 2 + e_w ** 2) + 1e-6
        theta = np.arctan2(e_u, -e_v)
        psi = np.arcsin(np.clip(e_w / radius, -1, 1))
        medulla = np.zeros_like(parenchyma)
        for theta_k, psi_k, half_theta, half_psi in self.pyramids:
            d_theta = (theta - theta_k + np.pi) % (2 * np.pi) - np.pi
            medulla |= (d_theta / half_theta) ** 2 + ((psi - psi_k) / half_psi) ** 2 < 1.0
        medulla &= parenchyma & (depth > self.cortex_mm) & (radius > 0.2)
        cortex = parenchyma & ~medulla

        lesion = np.zeros_like(parenchyma)
        if self.damage_centre is not None:
            centre = self.point(self.damage_centre)
            dd = ((xc[..., box[2]] - centre[0]) ** 2 + (yc[:, box[1]] - centre[1]) ** 2
                  + (zc[box[0]] - centre[2]) ** 2)
            lesion = dd < self.damage_radius ** 2
            cortex &= ~lesion
            medulla &= ~lesion

        hu = canvas.hu[box]
        labels = canvas.labels[box]
        texture = smooth_noise(rng, hu.shape, (1.5, 3.0, 3.0))
        pelvis = ((xi_u / 0.22) ** 2 + ((xi_v - 0.8) / 0.3) ** 2 + (xi_w / 0.22) ** 2) < 1.0
        hu[sinus & kidney] = t.sinus_fat
        hu[pelvis & sinus & kidney] = t.urine
        hu[cortex] = cortex_hu + 6.0 * texture[cortex]
        hu[medulla] = medulla_hu + 5.0 * texture[medulla]
        labels[cortex] = CORTEX
        labels[medulla] = MEDULLA
        canvas.anatomy[box][kidney] = ANATOMY["kidney_right" if self.side < 0 else "kidney_left"]  # sinus included
        if self.damage == "cyst":
            hu[lesion] = t.urine + 3.0 * texture[lesion]
            labels[lesion] = 0
        elif self.damage == "tumour":
            tumour_hu = 0.5 * (medulla_hu + cortex_hu) - _uniform(rng, 20.0, 60.0)
            hu[lesion] = tumour_hu + 20.0 * texture[lesion]
            labels[lesion] = 0
        self._paint_artery(canvas, t, body, rng)

    def _paint_vein(self, canvas: _Canvas, t: _Tissues, body: _Body, rng: np.random.Generator) -> None:
        """Renal vein from the hilum to the IVC (not labelled: a vessel-shaped distractor)."""
        k = body.scale
        start = self.point([0.05, 1.05, 0.0]) + body.rotate(np.array([0.0, -0.04 * k, 0.0]))
        ivc = body.to_image(np.array([body.ivc[0], body.ivc[1], start[2] - 0.03 * k]))
        if self.side > 0:  # the left renal vein crosses in front of the aorta
            front = body.to_image(np.array([body.aorta[0], body.aorta[1] - body.aorta_r - 0.05 * k,
                                            start[2] - 0.02 * k]))
            path = np.vstack([bezier(start, 0.5 * (start + front), front, 6)[:-1],
                              bezier(front, 0.5 * (front + ivc), ivc, 4)])
        else:
            path = bezier(start, 0.5 * (start + ivc), ivc, 6)
        mask = tube_mask(canvas.coords, canvas.spacing, path, _uniform(rng, 0.035, 0.05) * k)
        canvas.hu[mask] = t.vein
        canvas.anatomy[mask] = 0  # the renal vein is not labelled (the kidney painted next claims its own part)

    def _paint_artery(self, canvas: _Canvas, t: _Tissues, body: _Body, rng: np.random.Generator) -> None:
        """Renal artery from the aorta wall (the aorta itself is not labelled) through the hilum into the
        sinus, with segmental branches running on into the cortical columns between pyramids."""
        k = body.scale
        hilum = self.point([0.0, 1.05, 0.0])
        aorta_centre = body.to_image(np.array([body.aorta[0], body.aorta[1], hilum[2]]))
        towards = hilum[:2] - aorta_centre[:2]
        towards /= np.linalg.norm(towards) + 1e-9
        origin = np.array([*(aorta_centre[:2] + towards * body.aorta_r * 0.6),
                           hilum[2] + _uniform(rng, 0.0, 0.1) * k])
        # The right renal artery passes behind the IVC: bend it further back.
        bend = body.rotate(np.array([0.0, _uniform(rng, 0.0, 0.12) * k * (1.5 if self.side < 0 else 1.0),
                                     _uniform(rng, -0.06, 0.06) * k]))
        path = bezier(origin, 0.5 * (origin + hilum) + bend, hilum, 8)
        branch_point = self.point([0.0, self.sinus_centre_v - 0.1, 0.0])
        radius = _uniform(rng, 0.025, 0.04) * k
        mask = tube_mask(canvas.coords, canvas.spacing, np.vstack([path, branch_point]), radius)
        columns = sorted(p[0] for p in self.pyramids)
        gaps = [0.5 * (a + b) for a, b in zip(columns[:-1], columns[1:]) if b - a > 0.2]
        if gaps:
            for theta in rng.choice(gaps, size=min(len(gaps), int(rng.integers(2, 5))), replace=False):
                end = self.point([np.sin(theta) * 0.8, 0.25 - np.cos(theta) * 0.8, _uniform(rng, -0.15, 0.15)])
                mask |= tube_mask(canvas.coords, canvas.spacing, np.vstack([branch_point, end]),
                                  [radius * 0.75, radius * 0.45])
        bx, by = body.frame(canvas)
        aorta = ((bx - body.aorta[0]) ** 2 + (by - body.aorta[1]) ** 2) < body.aorta_r ** 2
        mask &= ~np.broadcast_to(aorta, canvas.shape)
        canvas.hu[mask] = t.artery
        canvas.labels[mask] = ARTERY
        canvas.anatomy[mask & ~_kidney_side(canvas.anatomy, self.side)] = 0  # outside the kidney: the renal artery
