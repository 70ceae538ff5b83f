"""The image encoder and the heads as ONNX graph files, exported once per fingerprint into the user cache.

Why a file: both CPU runtimes (OpenVINO and ONNX Runtime, :mod:`.cpu_runtime`) read the same ONNX graph, and
exporting costs a traced forward pass (seconds for LiteMedSAM's TinyViT) that a user should pay once per model,
not once per process. The file name is the fingerprint of the weights (the encoder's, or every other tensor for the
heads), the model's config and the export recipe, so a changed model gets a new graph and a stale one is never read; files are written atomically (temporary name,
then rename), so two processes exporting at once both end with a whole file.

Exporting needs the ``onnx`` package (torch's exporter serialises through it); running needs only a runtime.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import torch

__all__ = ["OPSET", "encoder_fingerprint", "export_encoder", "export_heads", "fingerprint", "heads_state",
           "onnx_cache_dir", "exporter_available", "installed"]

OPSET = 17
_FORMAT = 2  # bump when the export recipe changes: old cached graphs are then ignored


def installed(module: str) -> bool:
    """Whether ``module`` can be imported here, without importing it (importing onnx alone takes 0.8 s, every
    process: a cold start should not pay for it when the exported graph is already cached). A module blocked in
    ``sys.modules`` (None) counts as missing; a broken install shows up where it is used, and falls back there."""
    import importlib.util
    import sys

    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def exporter_available() -> bool:
    """Whether torch can write ONNX files here (its exporter imports ``onnx``)."""
    return installed("onnx")


def onnx_cache_dir() -> Path:
    from ..model.user_cache import default_cache_dir

    return default_cache_dir() / "onnx"


def fingerprint(tensors: dict[str, torch.Tensor], salt: str) -> str:
    """SHA256 (24 hex digits) of named tensors, the recipe, torch's version and ``salt`` (sizes, the config)."""
    digest = hashlib.sha256(f"format {_FORMAT} opset {OPSET} torch {torch.__version__} {salt}".encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:24]


def encoder_fingerprint(encoder: torch.nn.Module, image_size: int, salt: str = "") -> str:
    """The fingerprint of an image encoder's graph: its tensors, the input size and ``salt`` (e.g. the config)."""
    return fingerprint(encoder.state_dict(), f"encoder size {image_size} {salt}")


def _write(module: torch.nn.Module, example: tuple[torch.Tensor, ...], names: tuple[list[str], list[str]],
           path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    inputs, outputs = names
    was_training = module.training
    module.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about Python control flow on fixed shapes
            torch.onnx.export(module, example, tmp, input_names=inputs, output_names=outputs,
                              dynamic_axes={name: {0: "batch"} for name in inputs + outputs}, opset_version=OPSET,
                              dynamo=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        module.train(was_training)


def _cached(kind: str, key: str, cache_dir: str | Path | None, write) -> tuple[Path, bool]:
    path = Path(cache_dir or onnx_cache_dir()) / f"{kind}_{key}.onnx"
    if path.is_file():
        return path, False
    write(path)
    return path, True


def export_encoder(encoder: torch.nn.Module, image_size: int, cache_dir: str | Path | None = None,
                   salt: str = "") -> tuple[Path, bool]:
    """The cached graph of ``encoder`` (B×3×S×S normalised images → embeddings, batch dimension free):
    ``(path, exported_now)``. Raises when the export fails (e.g. ``onnx`` missing)."""
    example = (torch.zeros(1, 3, image_size, image_size),)
    return _cached("encoder", encoder_fingerprint(encoder, image_size, salt), cache_dir,
                   lambda path: _write(encoder, example, (["image"], ["embedding"]), path))


HEAD_INPUTS = ("ie", "se", "de0", "de1", "box")  # the heads graph's inputs (box only for box-prompted models)


def head_input_names(model: torch.nn.Module) -> tuple[str, ...]:
    return HEAD_INPUTS if getattr(model.config, "box_prompt", "none") == "reference" else HEAD_INPUTS[:4]


class _Heads(torch.nn.Module):
    """``KSAM.decode`` with the reference prompt as tensors: (IE, SE, DE_0, DE_1[, box]) → (logits, IoU)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ie, se, de0, de1, box=None):
        from ..model.ksam import ReferencePrompt

        if box is None:
            box = ie.new_zeros(ie.shape[0], 4)
        return self.model.decode_in_torch(ie, ReferencePrompt(se, de0, de1, box))


def heads_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of ``model`` the heads read: all but the image encoder's."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith("image_encoder.")}


def export_heads(model: torch.nn.Module, cache_dir: str | Path | None = None) -> tuple[Path, bool]:
    """The cached graph of a KSAM's heads (``decode`` on B target embeddings and B reference prompts, each
    B×C×G×G) → (B×1×S×S logits, B×k IoU scores): ``(path, exported_now)``."""
    config = model.config
    c, g = int(config.prompt_dim), int(config.grid_size)
    names = head_input_names(model)
    example = tuple(torch.zeros(1, c, g, g) for _ in range(4))
    if len(names) == 5:
        s = float(config.image_size)
        example = example + (torch.tensor([[s * 0.25, s * 0.25, s * 0.75, s * 0.75]]),)
    key = fingerprint(heads_state(model), f"heads {config!r}")
    return _cached("heads", key, cache_dir,
                   lambda path: _write(_Heads(model), example, (list(names), ["logits", "iou"]), path))
