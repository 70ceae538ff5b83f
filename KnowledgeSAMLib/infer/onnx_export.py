"""The image encoder as an ONNX graph file, exported once per encoder fingerprint into the user cache.

Why a file: both CPU runtimes (OpenVINO and ONNX Runtime, :mod:`.cpu_runtime`) read the same ONNX graph, and
exporting costs a traced forward pass (seconds for LiteMedSAM's TinyViT) that a user should pay once per model,
not once per process. The file name is the fingerprint of the encoder's weights and the export recipe, so a
changed model gets a new graph and a stale one is never read; files are written atomically (temporary name,
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

__all__ = ["OPSET", "encoder_fingerprint", "export_encoder", "onnx_cache_dir", "exporter_available"]

OPSET = 17
_FORMAT = 2  # bump when the export recipe changes: old cached graphs are then ignored


def exporter_available() -> bool:
    """Whether torch can write ONNX files here (its exporter imports ``onnx``)."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        return False
    return True


def onnx_cache_dir() -> Path:
    from ..model.user_cache import default_cache_dir

    return default_cache_dir() / "onnx"


def encoder_fingerprint(encoder: torch.nn.Module, image_size: int) -> str:
    """SHA256 (24 hex digits) of the encoder's tensors, the input size, the recipe and torch's version."""
    digest = hashlib.sha256(f"format {_FORMAT} opset {OPSET} size {image_size} torch {torch.__version__}".encode())
    state = encoder.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:24]


def _write(encoder: torch.nn.Module, image_size: int, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    example = torch.zeros(1, 3, image_size, image_size)
    was_training = encoder.training
    encoder.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about Python control flow on fixed shapes
            torch.onnx.export(encoder, (example,), tmp, input_names=["image"], output_names=["embedding"],
                              dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}}, opset_version=OPSET,
                              dynamo=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        encoder.train(was_training)


def export_encoder(encoder: torch.nn.Module, image_size: int,
                   cache_dir: str | Path | None = None) -> tuple[Path, bool]:
    """The cached graph of ``encoder`` (B×3×S×S normalised images → embeddings, batch dimension free):
    ``(path, exported_now)``. Raises when the export fails (e.g. ``onnx`` missing)."""
    fingerprint = encoder_fingerprint(encoder, image_size)
    path = Path(cache_dir or onnx_cache_dir()) / f"encoder_{fingerprint}.onnx"
    if path.is_file():
        return path, False
    _write(encoder, image_size, path)
    return path, True
