"""The whole-abdomen kidney phantom's other organs as labels, and contrast phases other than corticomedullary.

Why: a model trained only on artery, medulla and cortex learns three fixed answers, not to follow the reference:
shown a real CT it marks the bright vertebral body, whatever the reference mask says. With the organs every
abdominal slice also shows (whole kidneys, liver, spleen, aorta, IVC, vertebra, bowel) as tasks of the same slices,
a model that ignores the reference mask cannot fit a batch. Real scans come in other phases too: in a
non-contrast or portal-venous scan cortex and medulla look alike (those labels are then left out), while the organs
stay tellable apart.

The labels are opt-in (``make_kidney_phantom(..., anatomy=True)``) and the phase comes from its own random stream,
so the default phantoms (and every cache, test and number built on them) are unchanged.
"""

from __future__ import annotations

import numpy as np

from ..volume import Segment

__all__ = ["ANATOMY_SEGMENTS", "ANATOMY", "PHASES", "phase_of", "apply_phase"]

# label values of the anatomy layer (the painter's names: kidney.py writes them)
ANATOMY = {"kidney_right": 1, "kidney_left": 2, "liver": 3, "spleen": 4, "aorta": 5, "inferior_vena_cava": 6,
           "vertebra": 7, "bowel": 8}
_COLOURS = {"kidney_right": (0.85, 0.55, 0.35), "kidney_left": (0.75, 0.45, 0.30), "liver": (0.60, 0.30, 0.20),
            "spleen": (0.55, 0.25, 0.55), "aorta": (0.90, 0.20, 0.20), "inferior_vena_cava": (0.25, 0.35, 0.85),
            "vertebra": (0.95, 0.95, 0.80), "bowel": (0.55, 0.75, 0.45)}
ANATOMY_SEGMENTS: tuple[Segment, ...] = tuple(Segment(name, value, 1, _COLOURS[name])
                                               for name, value in ANATOMY.items())

# "corticomedullary" is the generator's own (artery > cortex > medulla); "random" draws one of the three per seed
PHASES = ("corticomedullary", "non-contrast", "portal", "random")


def phase_of(seed: int, phase: str) -> str:
    """The phase a case is drawn in: ``phase`` itself, or for "random" one of the three, from its own stream."""
    if phase not in PHASES:
        raise ValueError(f"kidney phantom phase must be one of {', '.join(PHASES)}; got {phase!r}")
    if phase != "random":
        return phase
    return str(np.random.default_rng([seed, 0x9A5E]).choice(PHASES[:3]))


def apply_phase(tissues, seed: int, phase: str) -> bool:
    """Set ``tissues``' enhancing HU values for ``phase`` (in place); True when cortex and medulla can still be
    told apart (only the corticomedullary phase: the other phases' kidney labels would be guesses)."""
    if phase == "corticomedullary":
        return True
    rng = np.random.default_rng([seed, 0x9A5F])

    def u(low: float, high: float) -> float:
        return float(rng.uniform(low, high))

    if phase == "non-contrast":  # blood ~40 HU, kidney a little below liver, spleen a little below liver
        tissues.artery = tissues.vein = u(35.0, 50.0)
        tissues.cortex = u(25.0, 40.0)
        tissues.medulla = tissues.cortex - u(0.0, 6.0)
        tissues.liver, tissues.spleen, tissues.bowel_wall = u(50.0, 70.0), u(40.0, 55.0), u(30.0, 45.0)
    else:  # portal venous / nephrographic: the kidney enhances evenly, the veins as bright as the aorta
        tissues.artery = u(140.0, 220.0)
        tissues.vein = tissues.artery - u(0.0, 40.0)
        tissues.cortex = u(150.0, 210.0)
        tissues.medulla = tissues.cortex - u(0.0, 15.0)
        tissues.liver, tissues.spleen, tissues.bowel_wall = u(95.0, 135.0), u(105.0, 140.0), u(80.0, 120.0)
    return False
