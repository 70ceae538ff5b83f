"""A procedural disc-centred colour fundus crop (like REFUGE / MedSA crops) with optic disc and cup.

Why: the KSAM paper's second task is optic disc + cup on REFUGE, which cannot be downloaded here. The
phantom keeps what makes the task a *knowledge* task: the cup is nested inside the disc, both are
bright, and the boundary between rim and cup is subtle, so the reference mask must say which one is
meant. It also carries distractors: vessels crossing the disc, a pale peripapillary halo outside the
disc, uneven illumination and colour casts.

Per seed: disc size, eccentricity, orientation and position (±15 % from the centre), cup-to-disc ratio
(0.3–0.8) and cup offset, vessel tree, background colour and texture, vignetting, halo, blur, noise and
colour jitter. Labels: ``disc`` (layer 0, value 1) ⊃ ``cup`` (layer 1, value 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..volume import Geometry, Image, Labels, Segment
from ._fields import gaussian_blur, smooth_noise

__all__ = ["make_fundus_phantom", "FUNDUS_SEGMENTS", "FundusPhantomConfig"]

FUNDUS_SEGMENTS: tuple[Segment, ...] = (
    Segment("disc", 1, 0, (0.13, 0.55, 0.95)),
    Segment("cup", 2, 1, (1.0, 0.85, 0.10)),
)


@dataclass(frozen=True)
class FundusPhantomConfig:
    size: int = 256
    disc_diameter: tuple[float, float] = (0.22, 0.36)  # fraction of the crop side
    centre_offset: float = 0.15  # max disc-centre offset, fraction of the side
    cup_to_disc: tuple[float, float] = (0.3, 0.8)
    supersample: int = 2  # vessels are drawn at this factor and averaged down (anti-aliasing)


def _u(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def _ellipse_value(yy: np.ndarray, xx: np.ndarray, centre, semi, angle: float) -> np.ndarray:
    """(normalised radius)² of an ellipse with semi-axes (vertical, horizontal) rotated by ``angle``."""
    c, s = np.cos(angle), np.sin(angle)
    dy, dx = yy - centre[0], xx - centre[1]
    along = c * dy - s * dx
    across = s * dy + c * dx
    return (along / semi[0]) ** 2 + (across / semi[1]) ** 2


def make_fundus_phantom(seed: int, size: int = FundusPhantomConfig.size,
                        config: FundusPhantomConfig = FundusPhantomConfig()) -> tuple[Image, Labels]:
    """One case: an RGB uint8 2D :class:`Image` ``(1, size, size, 3)`` and :class:`Labels` with
    ``disc`` (layer 0, value 1) and ``cup`` (layer 1, value 2). Deterministic for a given seed and size."""
    if size < 32:
        raise ValueError(f"fundus phantom size must be at least 32, got {size}")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)

    # Geometry of disc and cup (pixels).
    disc_d = _u(rng, *config.disc_diameter) * size
    disc_centre = size / 2 + rng.uniform(-config.centre_offset, config.centre_offset, 2) * size
    disc_semi = (disc_d / 2, disc_d / 2 * _u(rng, 0.8, 1.0))  # vertically oval, as real discs
    disc_angle = np.deg2rad(_u(rng, -25, 25))
    ratio = _u(rng, *config.cup_to_disc)
    cup_semi = (disc_semi[0] * ratio * _u(rng, 0.95, 1.05), disc_semi[1] * ratio * _u(rng, 0.85, 1.05))
    cup_angle = disc_angle + np.deg2rad(_u(rng, -12, 12))
    room = (1 - ratio) * 0.55 * disc_semi[1]
    offset = rng.uniform(-1, 1, 2) * room * np.array([0.5, 1.0])  # cups sit off-centre, mostly sideways
    cup_centre = disc_centre + offset
    disc_r = _ellipse_value(yy, xx, disc_centre, disc_semi, disc_angle)
    cup_r = _ellipse_value(yy, xx, cup_centre, cup_semi, cup_angle)
    disc = disc_r < 1.0
    cup = (cup_r < 1.0) & (_ellipse_value(yy, xx, disc_centre, (disc_semi[0] - 1.5, disc_semi[1] - 1.5),
                                          disc_angle) < 1.0)

    # Background: orange-red fundus with choroidal texture, illumination gradient and vignetting.
    base = np.array([_u(rng, 0.62, 0.88), _u(rng, 0.22, 0.40), _u(rng, 0.06, 0.17)], np.float32)
    texture = 0.05 * smooth_noise(rng, (size, size), size / 10) + 0.025 * smooth_noise(rng, (size, size), size / 60)
    light_dir = rng.normal(size=2)
    light_dir /= np.linalg.norm(light_dir)
    gradient = ((yy - size / 2) * light_dir[0] + (xx - size / 2) * light_dir[1]) / size
    vignette = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (size / 2) ** 2
    illumination = 1.0 + _u(rng, 0.1, 0.35) * gradient - _u(rng, 0.05, 0.2) * vignette
    image = base[None, None, :] * (1.0 + texture[..., None]) * illumination[..., None]
    macula = disc_centre + np.array([_u(rng, -0.3, 0.3), rng.choice([-1, 1]) * _u(rng, 2.2, 2.8)]) * disc_d
    macula_w = np.exp(-(((yy - macula[0]) ** 2 + (xx - macula[1]) ** 2) / (2 * (0.6 * disc_d) ** 2)))
    image *= (1.0 - 0.25 * macula_w)[..., None]

    # Peripapillary halo (pale, irregular, outside the disc: a distractor that is not labelled).
    if rng.random() < 0.5:
        ring = np.exp(-((np.sqrt(disc_r) - _u(rng, 1.08, 1.2)) / _u(rng, 0.06, 0.12)) ** 2)
        ring *= np.clip(0.6 + smooth_noise(rng, (size, size), size / 20), 0, 1.5) * (~disc)
        image = _blend(image, np.array([0.85, 0.62, 0.42], np.float32), _u(rng, 0.25, 0.5) * ring)

    # Disc (neuroretinal rim) and cup: bright, soft-edged, with a brighter side.
    rim = np.array([_u(rng, 0.88, 1.0), _u(rng, 0.5, 0.68), _u(rng, 0.32, 0.5)], np.float32)
    cup_colour = np.array([_u(rng, 0.97, 1.0), _u(rng, 0.88, 0.98), _u(rng, 0.7, 0.9)], np.float32)
    side = 1.0 + 0.12 * ((xx - disc_centre[1]) / disc_d) * rng.choice([-1, 1])
    disc_alpha = gaussian_blur(disc.astype(np.float32), (_u(rng, 0.8, 2.0) * size / 256,) * 2)
    image = _blend(image, rim[None, None, :] * side[..., None], 0.92 * disc_alpha)
    cup_alpha = gaussian_blur(cup.astype(np.float32), (_u(rng, 1.5, 4.0) * size / 256,) * 2)
    image = _blend(image, cup_colour, _u(rng, 0.7, 1.0) * cup_alpha)

    # Vessels radiating from inside the cup: major arcades up and down, smaller ones sideways.
    arteries, veins = _vessel_alphas(rng, size, cup_centre, disc_d, config.supersample)
    image = _blend(image, np.array([0.72, 0.16, 0.09], np.float32) * base[0] / 0.8, 0.75 * arteries)
    image = _blend(image, np.array([0.45, 0.07, 0.05], np.float32) * base[0] / 0.8, 0.85 * veins)

    # Camera: blur, colour jitter, gamma, noise; 8-bit.
    image = gaussian_blur(image, (_u(rng, 0.4, 1.2) * size / 256,) * 2 + (0.0,))
    image *= rng.uniform(0.9, 1.1, 3).astype(np.float32) * _u(rng, 0.85, 1.1)
    image = np.clip(image, 0, 1) ** _u(rng, 0.8, 1.25)
    image += rng.normal(0, _u(rng, 0.005, 0.025), image.shape).astype(np.float32)
    rgb = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)

    geometry = Geometry(ndim=2)
    layers = np.zeros((2, 1, size, size), np.uint8)
    layers[0, 0][disc] = 1
    layers[1, 0][cup] = 2
    source = f"fundus phantom seed {seed}"
    labels = Labels(layers=layers, geometry=geometry, source=source,
                    segments=[Segment(s.name, s.label_value, s.layer, s.color) for s in FUNDUS_SEGMENTS])
    return Image(array=rgb[None], geometry=geometry, source=source), labels


def _blend(image: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    alpha = np.clip(alpha, 0, 1)[..., None]
    return image * (1 - alpha) + np.asarray(colour, np.float32) * alpha


def _vessel_alphas(rng: np.random.Generator, size: int, start: np.ndarray, disc_d: float,
                   supersample: int) -> tuple[np.ndarray, np.ndarray]:
    """Coverage maps of arteries and veins, drawn as tapering random-walk polylines with PIL."""
    from PIL import Image as PILImage, ImageDraw

    big = size * supersample
    layers = {"artery": PILImage.new("L", (big, big), 0), "vein": PILImage.new("L", (big, big), 0)}
    draws = {name: ImageDraw.Draw(layer) for name, layer in layers.items()}
    scale = size / 256.0
    step = 0.035 * size
    trunks = [(-90.0, "vein"), (-80.0, "artery"), (90.0, "vein"), (80.0, "artery")]
    trunks += [(float(rng.uniform(-180, 180)), str(rng.choice(["artery", "vein"])))
               for _ in range(int(rng.integers(2, 6)))]
    queue = [(start + rng.normal(0, 0.04 * disc_d, 2), np.deg2rad(angle + rng.normal(0, 15)),
              _u(rng, 3.0, 5.0) * scale if i < 4 else _u(rng, 1.5, 3.0) * scale, kind, 0)
             for i, (angle, kind) in enumerate(trunks)]
    while queue:
        point, heading, width, kind, depth = queue.pop()
        points = [point.copy()]
        widths = []
        curvature = rng.normal(0, 0.035)  # smooth arcs with a little wiggle, as real vessels
        for _ in range(80):
            heading += curvature + rng.normal(0, 0.03)
            point = point + step * np.array([np.sin(heading), np.cos(heading)])
            points.append(point.copy())
            widths.append(width)
            width *= _u(rng, 0.95, 0.995)
            if depth < 2 and width > 1.4 * scale and rng.random() < 0.05:
                queue.append((point.copy(), heading + rng.choice([-1, 1]) * np.deg2rad(_u(rng, 30, 70)),
                              width * _u(rng, 0.5, 0.75), kind, depth + 1))
            if not (-0.1 * size < point[0] < 1.1 * size and -0.1 * size < point[1] < 1.1 * size) or width < 0.6 * scale:
                break
        for (p0, p1), w in zip(zip(points[:-1], points[1:]), widths):
            draws[kind].line([(p0[1] * supersample, p0[0] * supersample), (p1[1] * supersample, p1[0] * supersample)],
                             fill=255, width=max(1, int(round(w * supersample))), joint="curve")
    out = []
    for name in ("artery", "vein"):
        small = layers[name].resize((size, size), PILImage.Resampling.BOX)
        out.append(np.asarray(small, np.float32) / 255.0)
    return out[0], out[1]
