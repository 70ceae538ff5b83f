"""Is a model folder's ``config.json`` believable? Checked before any part of the model is built.

Why: a config read from a file is input like any other. A string where a size belongs used to end in
"not all arguments converted during string formatting"; a width of 100,000 asked for 51 GB before
failing; a depth of a million would build blocks for minutes. :func:`check_config_fields` checks every
field's type and range against :class:`~.config.KSAMConfig`'s annotations (one line naming the field), and
:func:`check_model_size` counts the parameters on PyTorch's ``meta`` device (no memory) and refuses a model
larger than half the memory available.
"""

from __future__ import annotations

import math
import typing
from dataclasses import fields
from typing import Any

from ..data.limits import available_memory, format_bytes
from ..errors import WeightsError
from .config import KSAMConfig

__all__ = ["check_config_fields", "check_model_size", "check_parameter_count", "meta_model", "INT_RANGES", "MODEL_MEMORY_SHARE"]

MODEL_MEMORY_SHARE = 2  # a model's parameters may take at most 1/2 of the available memory
DEFAULT_INT_RANGE = (0, 65536)
# Fields whose sensible range is narrower than DEFAULT_INT_RANGE (counts of blocks build one module each).
INT_RANGES: dict[str, tuple[int, int]] = {
    "image_size": (16, 8192), "patch_size": (1, 1024), "encoder_depth": (1, 128), "encoder_num_heads": (1, 1024),
    "encoder_window_size": (0, 1024), "pm_depth": (0, 128), "pm_num_heads": (1, 1024), "decoder_depth": (1, 128),
    "decoder_num_heads": (1, 1024), "decoder_multimask_outputs": (1, 64), "lora_rank": (0, 4096),
    "pm_attention_downsample": (1, 1024), "km_stride": (1, 1024), "km_norm_groups": (1, 65536),
    "prompt_dim": (1, 65536), "encoder_embed_dim": (1, 65536),
}
MAX_TUPLE_LENGTH = 64


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_value(name: str, value: Any, annotation: Any) -> str | None:
    """What is wrong with ``value`` for a field annotated ``annotation`` (None: nothing)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        problems = [_check_value(name, value, a) for a in options]
        return None if any(p is None for p in problems) else problems[0]
    if origin is typing.Literal:
        return None if value in args else f"must be one of {', '.join(map(repr, args))}, not {value!r}"
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) > MAX_TUPLE_LENGTH:
            return f"must be a list of at most {MAX_TUPLE_LENGTH} numbers, not {_type_name(value)}"
        element = args[0] if args else Any
        for item in value:
            problem = _check_value(name, item, element)
            if problem:
                return f"holds {item!r}, which {problem.removeprefix('must be ')}"
        if args and args[-1] is not Ellipsis and len(value) != len(args):
            return f"must have {len(args)} entries, not {len(value)}"
        return None
    if annotation is bool:
        return None if isinstance(value, bool) else f"must be true or false, not {_type_name(value)}"
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be a whole number, not {_type_name(value)} {value!r}"
        low, high = INT_RANGES.get(name, DEFAULT_INT_RANGE)
        return None if low <= value <= high else f"must be within {low}..{high}, not {value}"
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"must be a finite number, not {_type_name(value)} {value!r}"
        return None
    if annotation is str:
        return None if isinstance(value, str) else f"must be text, not {_type_name(value)}"
    if origin is dict or annotation is dict:
        return None if isinstance(value, dict) else f"must be an object, not {_type_name(value)}"
    return None


def check_config_fields(data: Any, where: str) -> None:
    """Refuse (WeightsError, one line) a config document whose fields have the wrong type or range."""
    if not isinstance(data, dict):
        raise WeightsError(f"{where}: a model config is a JSON object of fields, not a {_type_name(data)}")
    hints = typing.get_type_hints(KSAMConfig, include_extras=False)
    known = {f.name for f in fields(KSAMConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise WeightsError(f"{where}: unknown model config field(s) {', '.join(unknown)}")
    for name, value in data.items():
        problem = _check_value(name, value, hints[name])
        if problem:
            raise WeightsError(f"{where}: field {name!r} {problem}")


def meta_model(config: KSAMConfig, where: str):
    """The model ``config`` describes, built on PyTorch's ``meta`` device (shapes only, no memory)."""
    import torch

    from .build import build_model

    try:
        with torch.device("meta"):
            return build_model(config, pretrained=False)
    except Exception as error:  # noqa: BLE001 - any part may object to an odd but in-range value
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise WeightsError(f"{where}: the model it describes cannot be built ({first})") from None


def check_model_size(model, where: str, available: int | None = None) -> int:
    """Refuse a (meta) model whose parameters alone would take more than half the available memory; returns
    its number of parameters."""
    count = sum(t.numel() for t in model.state_dict().values())
    check_parameter_count(count, where, available)
    return count


def check_parameter_count(count: int, where: str, available: int | None = None) -> None:
    """Refuse ``count`` float32 parameters when they would take more than half the available memory."""
    size = count * 4  # float32
    available = available_memory() if available is None else available
    if size > available // MODEL_MEMORY_SHARE:
        raise WeightsError(f"{where}: describes a model of {count:,} parameters ({format_bytes(size)}), more than "
                           f"1/{MODEL_MEMORY_SHARE} of the {format_bytes(available)} of memory available; the config "
                           "is damaged or meant for another machine")
