"""The *unseen* phantom family: a second, independently written generator, for evaluation only.

Why it exists: the training and tuning data of the default model come from :mod:`..phantoms`. A model
can score well on held-out seeds of that generator and still have learnt the generator's habits. These
phantoms are written from scratch with different construction rules (implicit surfaces, spline tubes
and a tissue-class canvas for CT; a persistent branching walk and a reflectance/illumination model for
fundus photographs), so a score on them measures generalisation to data no training or tuning step
has seen. **Nothing under** ``KnowledgeSAMLib/train``, ``configs`` or ``bench/tune_engine.py`` may import
or name this package; ``Testing/test_unseen_phantoms.py`` checks that.

* :func:`make_kidney_full_phantom` — ``kidney-full``: whole abdominal contrast CT (512², HU, int16),
  segments ``artery`` = 1, ``medulla`` = 2, ``cortex`` = 3 on one layer;
* :func:`make_fundus_full_phantom` — ``fundus-full``: RGB fundus photograph with its circular field
  of view, segments ``disc`` (layer 0, value 1) ⊃ ``cup`` (layer 1, value 2).
"""

from .fundus_full import FUNDUS_FULL_SEGMENTS, make_fundus_full_phantom
from .kidney_full import KIDNEY_FULL_SEGMENTS, make_kidney_full_phantom

__all__ = ["make_kidney_full_phantom", "make_fundus_full_phantom", "KIDNEY_FULL_SEGMENTS", "FUNDUS_FULL_SEGMENTS"]
