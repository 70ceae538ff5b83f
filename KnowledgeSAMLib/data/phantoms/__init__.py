"""Procedural phantoms with known ground truth, for tests, demos and CI without real data.

* :func:`make_kidney_phantom` — 3D contrast CT, segments ``artery``/``medulla``/``cortex`` (nested, adjacent);
* :func:`make_kidney_roi_phantom` — the same CT cropped around one kidney (as kidney-parsing data is);
* :func:`make_fundus_phantom` — 2D colour fundus crop, segments ``disc`` ⊃ ``cup`` (two layers).
"""

from .fundus import FUNDUS_SEGMENTS, make_fundus_phantom
from .kidney import KIDNEY_SEGMENTS, make_kidney_phantom
from .kidney_roi import make_kidney_roi_phantom

__all__ = ["make_kidney_phantom", "make_kidney_roi_phantom", "make_fundus_phantom", "KIDNEY_SEGMENTS", "FUNDUS_SEGMENTS"]
