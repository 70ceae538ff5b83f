"""``kidney-full``: a whole-field-of-view contrast CT of the abdomen with labelled kidneys, from the
*unseen* generator family (for measuring generalisation only — never for training or tuning).

What a case is: 512 × 512 axial slices (pixel size drawn in 0.6–0.9 mm), 40–80 slices of 2.5–5 mm
covering both kidneys and the upper abdomen above them, int16 Hounsfield units. Labels (one layer):
``artery`` = 1 (renal arteries from the aortic wall to their segmental branches in the sinus),
``medulla`` = 2 (the renal pyramids), ``cortex`` = 3 (the rest of the parenchyma, columns included).

How it is built (independently of the training phantoms): every random choice is drawn first, in
millimetres, as *plans* (kidneys, torso, spine and ribs, vessels, viscera, contrast phase); the plans
are then rasterised as tissue classes into one canvas in anatomical order — each structure may only
displace the classes named for it — and the image is the class volume through a per-case Hounsfield
table, texture, blur and noise. Labels are read off the same class volume, so they agree with the
image exactly. Two random streams are spawned from the seed: one for the anatomy (grid-independent,
so the same seed at another ``matrix``/``slices`` gives the same patient), one for texture and noise.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..volume import Geometry, Image, Labels, Segment
from ._body import BodyPlan, draw_body, paint_back_muscles, paint_psoas, paint_ribs, paint_spine, paint_torso
from ._ct_canvas import Canvas
from ._ct_tissues import Tissue, draw_contrast, synthesize_ct
from ._kidney_organ import KidneyPlan, draw_kidney, paint_kidney
from ._vessels import draw_great_vessels, draw_renal_tubes, great_vessel_tubes, paint_calcifications, paint_tube
from ._viscera import Cavity, draw_viscera, paint_viscera

__all__ = ["make_kidney_full_phantom", "KIDNEY_FULL_SEGMENTS"]

KIDNEY_FULL_SEGMENTS: tuple[Segment, ...] = (
    Segment("artery", 1, layer=0, color=(0.86, 0.16, 0.18)),
    Segment("medulla", 2, layer=0, color=(0.96, 0.78, 0.26)),
    Segment("cortex", 3, layer=0, color=(0.25, 0.55, 0.88)),
)
_LABEL_OF = {Tissue.RENAL_ARTERY: 1, Tissue.MEDULLA: 2, Tissue.CORTEX: 3}


def _vertical_layout(rng: np.random.Generator, left: KidneyPlan, right: KidneyPlan) -> dict[str, float]:
    """Slice thickness and count, and the kidneys' heights: both kidneys fit with room above them."""
    u = rng.uniform
    extent_left, extent_right = float(left.half_extents()[2]), float(right.half_extents()[2])
    drop = u(-8, 30)  # how much lower the right kidney sits (negative: the left one is lower)
    below, above = u(8, 45), u(35, 95)
    # heights relative to the left kidney's centre
    lowest = min(-extent_left, -drop - extent_right)
    highest = max(extent_left, -drop + extent_right)
    coverage = min(highest - lowest + below + above, 395.0)
    thickness = u(max(2.5, coverage / 79), min(5.0, coverage / 39))
    count = int(np.clip(round(coverage / thickness) + 1, 40, 80))
    left_z = below - lowest
    return {"thickness": thickness, "count": count, "coverage": (count - 1) * thickness,
            "left_z": left_z, "right_z": left_z - drop}


def _cavity(body: BodyPlan, z_low: float, z_high: float) -> Cavity:
    half = float(min(body.cavity_radius(np.array([0.0, np.pi]), body.z_ref)))
    front = -float(body.cavity_radius(np.array([-np.pi / 2]), body.z_ref)[0])
    return Cavity(half_width=half, front=front, spine_front=body.spine.y - body.spine.ry, z_low=z_low, z_high=z_high)


def make_kidney_full_phantom(seed: int, *, matrix: int = 512, slices: int | None = None) -> tuple[Image, Labels]:
    """One abdominal CT case of the unseen family and its ``artery``/``medulla``/``cortex`` labels.

    ``matrix`` is the in-plane size (the field of view stays as drawn, so the pixels grow when it
    shrinks) and ``slices`` overrides the drawn slice count (the coverage stays as drawn) — both only
    to make small, fast cases for tests; the anatomy of a seed does not depend on them."""
    if matrix < 32:
        raise ValueError(f"matrix must be at least 32, got {matrix}")
    if slices is not None and slices < 4:
        raise ValueError(f"slices must be at least 4, got {slices}")
    anatomy_seed, scanner_seed = np.random.SeedSequence(int(seed)).spawn(2)
    rng = np.random.default_rng(anatomy_seed)
    u = rng.uniform

    fov = 512 * u(0.6, 0.9)
    left = draw_kidney(rng, +1, np.zeros(3))
    right = draw_kidney(rng, -1, np.zeros(3))
    layout = _vertical_layout(rng, left, right)
    coverage = layout["coverage"]
    z_ref = 0.5 * (layout["left_z"] + layout["right_z"])
    body = draw_body(rng, fov=fov, z_ref=z_ref, z_extent=(0.0, coverage), rib_z=layout["left_z"] + u(-15, 25),
                     psoas_top=max(layout["left_z"], layout["right_z"]) + u(0, 30))
    kidneys = []
    for plan, z in ((left, layout["left_z"]), (right, layout["right_z"])):
        theta = 0.0 if plan.side > 0 else np.pi
        room = float(body.cavity_radius(np.array([theta]), z)[0]) - plan.half_width - 6.0
        x = plan.side * min(u(55, 72), room)
        _, spine_y = body.spine.centre(np.array([z], dtype=np.float32))
        kidneys.append(replace(plan, centre=np.array([x, float(spine_y[0]) + u(-6, 14), z])))
    hila = [float(k.hilum_point(0.0)[2]) for k in kidneys]
    vessels = draw_great_vessels(rng, body.spine, z_top=coverage, kidneys_low=min(hila) - 40,
                                 renal_origin=float(np.mean(hila)) + 10)
    renal = [tube for k in kidneys for tube in draw_renal_tubes(rng, k, vessels, z_low=0.0)]
    main_tubes = great_vessel_tubes(vessels, 0.0)
    cavity = _cavity(body, 0.0, coverage)
    viscera = draw_viscera(rng, cavity, right_kidney_z=layout["right_z"], left_kidney_z=layout["left_z"],
                           porta=main_tubes[-1].waypoints[-1], cava_xy=vessels.cava_at(coverage - 20))
    contrast = draw_contrast(rng)
    noise_sd = u(10, 25)
    blur_xy = u(0.05, 0.18) if rng.random() < 0.6 else 0.0  # an optional, slight partial-volume blur
    blur_z = u(0.03, 0.12) if blur_xy and rng.random() < 0.5 else 0.0
    shift = (u(-0.5, 0.5) * max(0.0, fov / 2 - body.half_width - 8),
             u(-0.2, 0.5) * max(0.0, fov / 2 - body.half_depth - 8))

    count = int(slices) if slices is not None else layout["count"]
    thickness = coverage / (count - 1)
    pixel = fov / matrix
    origin = (-fov / 2 + pixel / 2 + shift[0], -fov / 2 + pixel / 2 + shift[1], 0.0)
    canvas = Canvas((count, matrix, matrix), (pixel, pixel, thickness), origin)

    paint_torso(canvas, body)
    paint_spine(canvas, body.spine)
    paint_ribs(canvas, body)
    paint_back_muscles(canvas, body)
    for kidney in kidneys:
        paint_kidney(canvas, kidney)
    for tube in sorted(renal, key=lambda t: t.tissue == Tissue.RENAL_ARTERY):  # veins and ureters first
        paint_tube(canvas, tube)
    for tube in main_tubes:
        paint_tube(canvas, tube, step=4.0)
    paint_calcifications(canvas, vessels)
    paint_psoas(canvas, body)
    paint_viscera(canvas, viscera, cavity)

    image = synthesize_ct(canvas, contrast, np.random.default_rng(scanner_seed), noise_sd=noise_sd,
                          blur_xy=blur_xy, blur_z=blur_z)
    label_of = np.zeros(256, dtype=np.uint8)
    for tissue, value in _LABEL_OF.items():
        label_of[int(tissue)] = value
    labelmap = np.take(label_of, canvas.tissue)
    table_z = -u(150, 450)  # where the scanner puts slice 0 (only the origin changes)
    geometry = Geometry(spacing=(pixel, pixel, thickness), origin=(origin[0], origin[1], origin[2] + table_z))
    source = f"kidney-full phantom seed {seed} ({contrast.phase})"
    return (Image(array=image, geometry=geometry, source=source),
            Labels(layers=labelmap[None], geometry=geometry, segments=[replace(s) for s in KIDNEY_FULL_SEGMENTS],
                   source=source))
