"""Procedural phantoms with known ground truth, for tests, demos and CI without real data.

* :func:`make_kidney_phantom` — 3D contrast CT, segments ``artery``/``medulla``/``cortex`` (nested, adjacent);
* :func:`make_fundus_phantom` — 2D colour fundus crop, segments ``disc`` ⊃ ``cup`` (two layers).
"""

from .fundus import FUNDUS_SEGMENTS, make_fundus_phantom
from .kidney import KIDNEY_SEGMENTS, make_kidney_phantom

__all__ = ["make_kidney_phantom", "make_fundus_phantom", "KIDNEY_SEGMENTS", "FUNDUS_SEGMENTS"]
