"""Whether bf16 autocast is worth it on a GPU, per model config: a measured setting, not a guess.

Why measured: on the H200 lease of 2026-11-29 bf16 made ``vit_b`` 1.47× faster but the launch-bound ``small`` and
``tiny`` models 0.77–0.85× *slower* (``bench/device/README.md``). ``EngineOptions(mixed_precision="measured")``
reads those results from ``gpu_precision.json`` beside this file, which ``bench/speed.py --device cuda
--record-precision`` (run by ``bench/device/lease.sh``) rewrites with the GPU, driver and date it measured on.
The engine's default stays ``mixed_precision=True`` (bf16 on CUDA for every model) until a lease says otherwise.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["PRECISION_FILE", "measured", "use_bf16"]

PRECISION_FILE = Path(__file__).with_name("gpu_precision.json")


@lru_cache(maxsize=1)
def measured() -> dict[str, Any]:
    """The recorded measurements (``{"bf16_faster": {config: bool}, ...}``; empty when the file is missing)."""
    try:
        return json.loads(PRECISION_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def use_bf16(mixed_precision: bool | str, model: Any) -> bool:
    """``True``/``False`` as given; ``"measured"``: bf16 where the record says it was faster for this config
    (configs never measured keep bf16, the engine's default)."""
    if mixed_precision != "measured":
        return bool(mixed_precision)
    name = getattr(getattr(model, "config", None), "name", None)
    return bool(measured().get("bf16_faster", {}).get(name, True))
