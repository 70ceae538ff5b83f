"""The image encoder on ONNX Runtime: the CPU engine for users without a GPU.

Why: the encoder is nearly all of the compute (LiteMedSAM's TinyViT: ~38 GFLOP per 256² slice against a few for
the heads), and eager PyTorch on a laptop CPU runs it at about half the speed ONNX Runtime does. PyTorch stays the
reference and the training path; this only replaces ``model.image_encoder`` for inference on the CPU.

The exported graph is cached in the user cache folder under the encoder's fingerprint (its weights and input
normalisation), so it is rebuilt exactly when the model changes, and written atomically. When ``onnxruntime`` is
not installed, or export fails, :func:`accelerate` says so in one line and the model keeps running in PyTorch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["OnnxEncoder", "accelerate", "onnx_cache_dir", "runtime_available"]

logger = logging.getLogger(__name__)
OPSET = 17
_FORMAT = 1  # bump when the export recipe changes: old cached graphs are then ignored


def runtime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def onnx_cache_dir() -> Path:
    from ..model.user_cache import default_cache_dir

    return default_cache_dir() / "onnx"


def _fingerprint(encoder: torch.nn.Module, image_size: int) -> str:
    digest = hashlib.sha256(f"format {_FORMAT} opset {OPSET} size {image_size} torch {torch.__version__}".encode())
    state = encoder.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:24]


def _export(encoder: torch.nn.Module, image_size: int, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    example = torch.zeros(1, 3, image_size, image_size)
    was_training = encoder.training
    encoder.eval()
    try:
        with warnings.catch_warnings():
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


class OnnxEncoder:
    """Callable like the image encoder (B×3×S×S normalised images → B×C×G×G) on ONNX Runtime, CPU."""

    def __init__(self, encoder: torch.nn.Module, image_size: int, *, threads: int | None = None,
                 cache_dir: str | Path | None = None) -> None:
        """Arguments:
          encoder: the PyTorch image encoder (exported once per fingerprint, then loaded from the cache).
          image_size: S, the square input side the graph is exported for.
          threads: intra-op threads (default: torch's, i.e. the cores the user gave the process).
          cache_dir: where exported graphs live (default: the user cache's ``onnx`` folder).
        """
        import onnxruntime as ort

        self.fingerprint = _fingerprint(encoder, image_size)
        self.path = Path(cache_dir or onnx_cache_dir()) / f"encoder_{self.fingerprint}.onnx"
        self.exported = False
        if not self.path.is_file():
            _export(encoder, image_size, self.path)
            self.exported = True
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        out = self.session.run(["embedding"], {"image": array})[0]
        return torch.from_numpy(np.ascontiguousarray(out)).to(images.dtype)


def accelerate(model: Any, device: torch.device | str = "cpu", *, threads: int | None = None,
               cache_dir: str | Path | None = None, quiet: bool = False) -> bool:
    """Run ``model``'s image encoder on ONNX Runtime for inference on the CPU; True when it now does.

    Nothing changes on other devices, without ``onnxruntime`` (one line says PyTorch is used), or when the
    export fails (one line with the reason). Training is unaffected: the runtime serves only calls without
    gradients, and ``deaccelerate``-free — setting ``model.encoder_runtime = None`` restores PyTorch.
    """
    if torch.device(device).type != "cpu":
        return False
    if getattr(model, "encoder_runtime", None) is not None:
        return True
    if not runtime_available():
        if not quiet:
            logger.warning("onnxruntime is not installed: the image encoder runs in PyTorch "
                           "(pip install onnxruntime for about twice the CPU speed)")
        return False
    try:
        runtime = OnnxEncoder(model.image_encoder, int(model.config.image_size), threads=threads, cache_dir=cache_dir)
    except Exception as error:  # export or session errors must never stop a segmentation
        if not quiet:
            logger.warning("the image encoder could not be exported to ONNX (%s): it runs in PyTorch",
                           str(error).splitlines()[0] if str(error) else type(error).__name__)
        return False
    model.encoder_runtime = runtime
    return True
