"""The image encoder on ONNX Runtime: the second CPU runtime (:mod:`.cpu_runtime` prefers OpenVINO).

Why: the encoder is nearly all of the compute (LiteMedSAM's TinyViT: ~38 GFLOP per 256² slice against a few for
the heads), and eager PyTorch on a CPU runs it at about half the speed ONNX Runtime does (OpenVINO: a third).
PyTorch stays the reference and the training path; this only replaces ``model.image_encoder`` for inference on
the CPU. The graph comes from :func:`.onnx_export.export_encoder` (cached per encoder fingerprint).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .onnx_export import export_encoder, onnx_cache_dir

__all__ = ["OnnxEncoder", "onnx_cache_dir", "runtime_available"]


def runtime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OnnxEncoder:
    """Callable like the image encoder (B×3×S×S normalised images → B×C×G×G) on ONNX Runtime, CPU."""

    name = "onnxruntime"

    def __init__(self, encoder: torch.nn.Module, image_size: int, *, threads: int | None = None,
                 cache_dir: str | Path | None = None) -> None:
        """Arguments:
          encoder: the PyTorch image encoder (exported once per fingerprint, then loaded from the cache).
          image_size: S, the square input side the graph is exported for.
          threads: intra-op threads (default: torch's, i.e. the cores the user gave the process).
          cache_dir: where exported graphs live (default: the user cache's ``onnx`` folder).
        """
        import onnxruntime as ort

        self.path, self.exported = export_encoder(encoder, image_size, cache_dir)
        self.fingerprint = self.path.stem.split("_", 1)[1]
        self.threads = int(threads or torch.get_num_threads())
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        # ENABLE_ALL measured no faster than EXTENDED on the TinyViT and both give the same embedding (|Δ| 3e-6)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        out = self.session.run(["embedding"], {"image": array})[0]
        return torch.from_numpy(np.ascontiguousarray(out)).to(images.dtype)

